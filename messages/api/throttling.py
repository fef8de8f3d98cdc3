"""A per-client request limit (API_RATE_LIMIT): a fixed window counted in Redis, shared by every
web process on every host. Over the limit: 429 with Retry-After. Redis down: 503 or no limit,
as RATE_LIMIT_ON_REDIS_ERROR says."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from messages import rate_windows
from messages.api.authentication import request_client

if TYPE_CHECKING:  # DRF imports this module while building APIView itself
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class RateLimitUnavailable(APIException):
    """RATE_LIMIT_ON_REDIS_ERROR=refuse and Redis does not answer; DRF sends `wait` as Retry-After."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The rate limit cannot be checked right now (Redis does not answer); retry shortly."
    default_code = "rate_limit_unavailable"
    wait = rate_windows.REDIS_ERROR_RETRY_AFTER_SECONDS


class PerClientRateThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        limit = settings.API_RATE_LIMIT
        client = request_client(request)
        if limit is None or client is None or not client.is_authenticated:
            return True
        try:
            counted = rate_windows.count_request(client.identity, limit)
        except rate_windows.CountUnavailable as error:
            if rate_windows.refuses_on_redis_error():
                logger.warning("request refused: the rate limit cannot be counted: %s", error)
                raise RateLimitUnavailable from None
            # RATE_LIMIT_ON_REDIS_ERROR=allow: serving beats refusing; the database holds every message.
            logger.warning("rate limit not applied: %s", error)
            return True
        self._wait = counted.seconds_left
        return counted.count <= limit[0]

    def wait(self) -> float | None:
        return self._wait
