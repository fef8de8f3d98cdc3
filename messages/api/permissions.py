"""Who may do what: any key reads, read-only keys write nothing; /metrics is the operator's."""

from __future__ import annotations

from ipaddress import ip_address
from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from messages.api.authentication import request_client
from messages.models import API_TOKEN_KEY_ID

if TYPE_CHECKING:  # DRF imports this module (DEFAULT_PERMISSION_CLASSES) while building APIView
    from rest_framework.views import APIView


class IsOperatorOrFromAllowedNetwork(BasePermission):
    """/metrics counts every key's messages: the operator's API_TOKEN reads it, or a scraper on
    METRICS_ALLOWED_NETWORKS; the other keys, each a tenant, do not."""

    message = "Metrics are for the operator: use API_TOKEN, or scrape from METRICS_ALLOWED_NETWORKS."

    def has_permission(self, request: Request, view: APIView) -> bool:
        caller = request_client(request)
        if caller and caller.is_authenticated and caller.key_id == API_TOKEN_KEY_ID:
            return True
        try:
            client = ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(client in network for network in settings.METRICS_ALLOWED_NETWORKS)


class IsAuthenticatedAndMayWrite(BasePermission):
    """Any key may read; a read-only key may do nothing else (403)."""

    message = "This API key is read-only: it may list and read messages, nothing else."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or not getattr(user, "read_only", False)
