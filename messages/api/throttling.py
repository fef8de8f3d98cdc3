"""A per-client request limit (API_RATE_LIMIT): a fixed window counted in Redis, shared by every
web process on every host. Over the limit: 429 with Retry-After."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from messages import broker

if TYPE_CHECKING:  # DRF imports this module while building APIView itself
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

COUNTER_KEY = broker.KEY_PREFIX + "rate:{identity}:{window}"


class PerClientRateThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        limit = settings.API_RATE_LIMIT
        user = request.user
        if limit is None or not getattr(user, "is_authenticated", False):
            return True
        requests_allowed, window_seconds = limit
        now = time.time()
        window = int(now // window_seconds)
        self._wait = (window + 1) * window_seconds - now
        key = COUNTER_KEY.format(identity=user.identity, window=window)
        try:
            pipe = broker.redis_client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, int(window_seconds) + 1)
            count = pipe.execute()[0]
        except (redis.RedisError, OSError) as error:
            # Redis down: serving beats refusing; the database still holds every message.
            logger.warning("rate limit not applied: %s", error)
            return True
        return count <= requests_allowed

    def wait(self) -> float | None:
        return self._wait
