"""Fixed-window request counts: in Redis, shared by every web process on every host, or in this
process alone where a count must not depend on Redis. Both limiters count with these: the
per-key throttle (messages/api/throttling.py) and the per-address limits (address_limits.py).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from messages import redis_keys

# (requests, window seconds), as settings._rate_limit_from_env reads "600/min" or "10/15min".
Rate = tuple[int, float]

COUNTER_KEY = redis_keys.KEY_PREFIX + "rate:{identity}:{window}"
# Retry-After of a refusal because Redis does not answer: a Redis restart takes about this long.
REDIS_ERROR_RETRY_AFTER_SECONDS = 5
# After a Redis error this process counts nothing in Redis for a while: even the limiters' own
# client (no retries, a quarter-second timeout) would make every request wait that long on a hung
# Redis. The pause doubles while Redis keeps failing, up to the maximum, and a success ends it.
REDIS_ERROR_PAUSE_SECONDS = 2.0
REDIS_ERROR_PAUSE_MAX_SECONDS = 30.0
# An in-process count forgets every address past this many: its memory stays bounded when
# addresses rotate (an IPv6 /64 holds plenty), at the price of a fresh window for all.
IN_PROCESS_ADDRESSES_MAX = 10_000


class CountUnavailable(Exception):
    """Redis did not answer: how many requests came is unknown."""


@dataclass(frozen=True)
class WindowCount:
    count: int
    seconds_left: float  # until the window ends and the count starts again from zero

    @property
    def retry_after(self) -> int:
        """Whole seconds for a Retry-After header, never 0."""
        return max(1, math.ceil(self.seconds_left))


def refuses_on_redis_error() -> bool:
    """RATE_LIMIT_ON_REDIS_ERROR: refuse (503) a request the per-key limit could not count, or let it through."""
    return settings.RATE_LIMIT_ON_REDIS_ERROR == "refuse"


def _window(rate: Rate, now: float | None) -> tuple[int, float]:
    window_seconds = rate[1]
    now = time.time() if now is None else now
    window = int(now // window_seconds)
    return window, (window + 1) * window_seconds - now


class RedisPause:
    """When this process may ask Redis again; `now` is time.monotonic()'s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.until = 0.0  # read without the lock: one float, assigned whole
        self.seconds = 0.0  # the last pause's length; 0 after a success

    def check(self, *, now: float | None = None) -> None:
        if (time.monotonic() if now is None else now) < self.until:
            raise CountUnavailable(f"Redis failed less than {self.seconds:g} s ago")

    def start(self, error: Exception, *, now: float | None = None) -> CountUnavailable:
        now = time.monotonic() if now is None else now
        with self._lock:
            # A request that was already waiting when another's error started the pause fails
            # with it: one outage seen by many requests at once is one failure, not many.
            if now >= self.until:
                self.seconds = min(REDIS_ERROR_PAUSE_MAX_SECONDS, 2 * self.seconds or REDIS_ERROR_PAUSE_SECONDS)
                self.until = now + self.seconds
        return CountUnavailable(str(error))

    def succeeded(self) -> None:
        if self.seconds:  # no lock taken while Redis answers
            with self._lock:
                self.seconds = 0.0

    def clear(self) -> None:
        with self._lock:
            self.until = self.seconds = 0.0


_redis_pause = RedisPause()


def count_request(identity: str, rate: Rate, *, now: float | None = None) -> WindowCount:
    """Adds one request to identity's count in Redis; raises CountUnavailable when Redis fails."""
    window, seconds_left = _window(rate, now)
    key = COUNTER_KEY.format(identity=identity, window=window)
    _redis_pause.check()
    try:
        pipe = redis_keys.limiter_redis_client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, int(rate[1]) + 1)
        count = pipe.execute()[0]
    except (redis.RedisError, OSError) as error:
        raise _redis_pause.start(error) from error
    _redis_pause.succeeded()
    return WindowCount(int(count), seconds_left)


def current_count(identity: str, rate: Rate, *, now: float | None = None) -> WindowCount:
    """identity's count in Redis, read without adding to it: one GET."""
    window, seconds_left = _window(rate, now)
    _redis_pause.check()
    try:
        value = redis_keys.limiter_redis_client().get(COUNTER_KEY.format(identity=identity, window=window))
    except (redis.RedisError, OSError) as error:
        raise _redis_pause.start(error) from error
    _redis_pause.succeeded()
    return WindowCount(int(value or 0), seconds_left)


def forget_counts() -> None:
    """This process's own counts and Redis pause (for tests: every one starts afresh)."""
    in_process_counts.clear()
    _redis_pause.clear()


class InProcessCounts:
    """The same fixed windows, counted by this process alone (each process has its own budget)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # identity -> (window, count)

    def count_request(self, identity: str, rate: Rate, *, now: float | None = None) -> WindowCount:
        window, seconds_left = _window(rate, now)
        with self._lock:
            if identity not in self._counts and len(self._counts) >= IN_PROCESS_ADDRESSES_MAX:
                self._counts.clear()
            counted_window, count = self._counts.get(identity, (window, 0))
            count = count + 1 if counted_window == window else 1
            self._counts[identity] = (window, count)
        return WindowCount(count, seconds_left)

    def current_count(self, identity: str, rate: Rate, *, now: float | None = None) -> WindowCount:
        window, seconds_left = _window(rate, now)
        with self._lock:
            counted_window, count = self._counts.get(identity, (window, 0))
        return WindowCount(count if counted_window == window else 0, seconds_left)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


in_process_counts = InProcessCounts()
