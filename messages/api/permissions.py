"""Who may read /metrics: holders of the API token, or scrapers on an allowed network."""

from __future__ import annotations

from ipaddress import ip_address

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView


class IsAuthenticatedOrFromAllowedNetwork(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.user and request.user.is_authenticated:
            return True
        try:
            client = ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(client in network for network in settings.METRICS_ALLOWED_NETWORKS)
