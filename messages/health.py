"""GET /health: the database, Redis and the worker + beat pair, each checked for real, the
report shared for HEALTH_CACHE_SECONDS by every web process; GET /readyz: the database and Redis."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from messages import redis_keys
from messages.delivery import stuck_claims
from messages.listing import EXACT_COUNT_UP_TO
from messages.models import Message
from messages.row_counts import count_rows

logger = logging.getLogger(__name__)

REPORT_KEY = redis_keys.KEY_PREFIX + "health-report"
# Held by the one process that checks while the others wait for its report.
REPORT_LOCK_KEY = redis_keys.KEY_PREFIX + "health-report-lock"
# A check takes milliseconds; one that takes longer (a database or Redis slow to answer) lets
# each waiting request check by itself after this, as every request did before the cache.
REPORT_WAIT_SECONDS = 1.0
REPORT_POLL_SECONDS = 0.02
# A report that is not healthy is kept this long at most: a service just started, or whose
# Redis or database is back, reads healthy a moment later, not HEALTH_CACHE_SECONDS later.
NOT_HEALTHY_MAX_AGE_SECONDS = 0.25


@dataclass
class HealthReport:
    database: str = "connected"
    redis: str = "connected"
    scheduler: str = "stopped"
    scheduled_jobs: int | None = None
    worker_clock_skew_ms: float | None = None
    stuck_messages: int | None = None
    failing: list[str] = field(default_factory=list)

    @property
    def is_healthy(self) -> bool:
        return not {"database", "redis"} & set(self.failing)

    @property
    def status(self) -> str:
        if not self.is_healthy:
            return "unhealthy"
        return "healthy" if self.scheduler == "running" and not self.stuck_messages else "degraded"


def scheduler_is_alive(seconds_since_heartbeat: float | None) -> bool:
    """Beat asks for a dispatch every poll interval and a worker runs it, refreshing the heartbeat."""
    if seconds_since_heartbeat is None:
        return False
    return seconds_since_heartbeat <= 3 * settings.SCHEDULER_POLL_SECONDS + 5


def check_health() -> HealthReport:
    report = HealthReport()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        # Exact up to GET /messages' bound (SQLite always, through the due_at index, once per
        # HEALTH_CACHE_SECONDS); past it PostgreSQL's planner estimate.
        report.scheduled_jobs = count_rows(Message.objects.pending(), exact_up_to=EXACT_COUNT_UP_TO).value
        # Few rows (messages in flight), read through the status index.
        report.stuck_messages = len(stuck_claims())
        if report.stuck_messages:
            report.failing.append("stuck_messages")
    except DatabaseError as error:
        _database_down(report, error, checking="health")
    try:
        redis_keys.redis_client().ping()
        if scheduler_is_alive(redis_keys.seconds_since_heartbeat()):
            report.scheduler = "running"
            skew = redis_keys.last_worker_clock_skew()
            report.worker_clock_skew_ms = None if skew is None else round(skew * 1000, 1)
        else:
            report.failing.append("scheduler")
    except (redis.RedisError, OSError) as error:
        _redis_down(report, error, checking="health")
    return report


def current_health() -> HealthReport:
    """A report at most HEALTH_CACHE_SECONDS old: this process's copy, else the one in Redis,
    else checked now (by one process at a time, the others waiting for its report)."""
    max_age = settings.HEALTH_CACHE_SECONDS
    if max_age <= 0:
        return check_health()
    report = _this_process.fresh()
    if report is not None:
        return report
    try:
        report, seconds_left = _shared_report(max_age)
    except (redis.RedisError, OSError) as error:
        # Redis down: each process checks for itself, once per window; its report says so.
        logger.warning("health: no shared report: %s", error)
        started = time.monotonic()
        report = check_health()
        seconds_left = _seconds_to_keep(report, max_age, checked_in=time.monotonic() - started)
    _this_process.keep(report, seconds_left)
    return report


def _seconds_to_keep(report: HealthReport, max_age: float, *, checked_in: float) -> float:
    """A healthy report is as old as its check's start; one that is not is kept a moment from
    the check's end, so that a slow check (a database or Redis slow to answer) is still shared
    rather than repeated by every waiting request."""
    if report.status == "healthy":
        return max_age - checked_in
    return min(max_age, NOT_HEALTHY_MAX_AGE_SECONDS)


def forget_reports() -> None:
    """The next /health checks afresh (tests; an operator who wants to see a change at once)."""
    _this_process.keep(None, 0.0)
    redis_keys.redis_client().delete(REPORT_KEY)


class _ProcessCopy:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: HealthReport | None = None
        self._expires_at = 0.0  # time.monotonic()

    def fresh(self) -> HealthReport | None:
        with self._lock:
            return self._report if time.monotonic() < self._expires_at else None

    def keep(self, report: HealthReport | None, seconds_left: float) -> None:
        with self._lock:
            self._report, self._expires_at = report, time.monotonic() + seconds_left


_this_process = _ProcessCopy()


def _shared_report(max_age: float) -> tuple[HealthReport, float]:
    """The report in Redis and its seconds left, checked and stored when there is none."""
    client = redis_keys.redis_client()
    shared = _read_shared(client)
    if shared is not None:
        return shared
    token = repr(time.time())
    # The lock outlives any check that the waiters wait for; released as soon as it is stored.
    is_checker = bool(client.set(REPORT_LOCK_KEY, token, nx=True, px=int(REPORT_WAIT_SECONDS * 2000)))
    if not is_checker:
        deadline = time.monotonic() + REPORT_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(REPORT_POLL_SECONDS)
            shared = _read_shared(client)
            if shared is not None:
                return shared
    started = time.monotonic()
    report = check_health()
    seconds_left = _seconds_to_keep(report, max_age, checked_in=time.monotonic() - started)
    try:
        if seconds_left > 0.001:
            client.set(REPORT_KEY, json.dumps(asdict(report)), px=int(seconds_left * 1000))
        if is_checker and client.get(REPORT_LOCK_KEY) == token.encode():
            client.delete(REPORT_LOCK_KEY)
    except (redis.RedisError, OSError) as error:
        logger.warning("health: report not shared: %s", error)
    return report, seconds_left


def _read_shared(client: redis.Redis) -> tuple[HealthReport, float] | None:
    pipe = client.pipeline(transaction=False)
    pipe.get(REPORT_KEY)
    pipe.pttl(REPORT_KEY)
    raw, milliseconds_left = pipe.execute()
    if raw is None or milliseconds_left <= 0:
        return None
    try:
        return HealthReport(**json.loads(raw)), milliseconds_left / 1000
    except (TypeError, ValueError):
        return None  # written by another version of this code during a deploy: check anew


@dataclass
class ReadinessReport:
    database: str = "connected"
    redis: str = "connected"
    failing: list[str] = field(default_factory=list)

    @property
    def is_ready(self) -> bool:
        return not self.failing

    @property
    def status(self) -> str:
        return "ready" if self.is_ready else "unready"


def check_readiness() -> ReadinessReport:
    """What a load balancer needs before sending requests here: the database and Redis answer."""
    report = ReadinessReport()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        _database_down(report, error, checking="readiness")
    try:
        redis_keys.redis_client().ping()
    except (redis.RedisError, OSError) as error:
        _redis_down(report, error, checking="readiness")
    return report


def _database_down(report: HealthReport | ReadinessReport, error: Exception, *, checking: str) -> None:
    logger.warning("%s: database unavailable: %s", checking, error)
    report.database = "disconnected"
    report.failing.append("database")


def _redis_down(report: HealthReport | ReadinessReport, error: Exception, *, checking: str) -> None:
    logger.warning("%s: redis unavailable: %s", checking, error)
    report.redis = "disconnected"
    report.failing.append("redis")
