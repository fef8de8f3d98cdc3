"""Bearer-token authentication against API_TOKEN, compared in constant time."""

from __future__ import annotations

from django.conf import settings
from django.utils.crypto import constant_time_compare
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request


class ApiClient:
    """Whoever holds the token; there are no per-user permissions on the API."""

    is_authenticated = True


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiClient, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # answered with 401 by IsAuthenticated
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("Send the API token as 'Authorization: Bearer <token>'.")
        if not settings.API_TOKEN or not constant_time_compare(token.strip(), settings.API_TOKEN):
            raise AuthenticationFailed("Invalid API token.")
        return ApiClient(), token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with this challenge) rather than 403.
        return 'Bearer realm="api"'
