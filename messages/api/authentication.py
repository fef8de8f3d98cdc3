"""Bearer-token authentication: API_TOKEN (compared in constant time) or an active API key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from django.conf import settings
from django.utils.crypto import constant_time_compare
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from messages.api_keys import find_active_key
from messages.models import API_TOKEN_KEY_ID


@dataclass(frozen=True)
class ApiClient:
    """Whoever holds a token: the key that owns what it creates (API_TOKEN is key 0).

    `identity` names it for rate limits ("api-token" or "key:<id>").
    """

    key_id: int
    identity: str
    read_only: bool = False
    is_authenticated: bool = True


def request_client(request: Request) -> ApiClient | None:
    """Who sent the request: the ApiClient authenticate() returned, or None (UNAUTHENTICATED_USER).

    DRF's stubs type `request.user` as Django's User or AnonymousUser, which this API never has."""
    return cast("ApiClient | None", request.user)


def authenticated_client(request: Request) -> ApiClient:
    """For the views behind IsAuthenticatedAndMayWrite: their requests always carry a client."""
    return cast(ApiClient, request.user)


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiClient, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # answered with 401 by IsAuthenticated
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed("Send the API token as 'Authorization: Bearer <token>'.")
        if settings.API_TOKEN and constant_time_compare(token, settings.API_TOKEN):
            return ApiClient(key_id=API_TOKEN_KEY_ID, identity="api-token"), token
        key = find_active_key(token)
        if key is None:
            raise AuthenticationFailed("Invalid API token.")
        return ApiClient(key_id=key.pk, identity=f"key:{key.pk}", read_only=key.read_only), token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with this challenge) rather than 403.
        return 'Bearer realm="api"'
