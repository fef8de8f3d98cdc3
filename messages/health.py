"""GET /health: the database, Redis and the worker + beat pair, each checked for real."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from messages import broker
from messages.delivery import stuck_claims
from messages.models import Message

logger = logging.getLogger(__name__)


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

    def as_dict(self) -> dict[str, object]:
        if not self.is_healthy:
            status = "unhealthy"
        else:
            status = "healthy" if self.scheduler == "running" and not self.stuck_messages else "degraded"
        return {
            "status": status,
            "redis": self.redis,
            "database": self.database,
            "scheduler": self.scheduler,
            "scheduled_jobs": self.scheduled_jobs,
            "worker_clock_skew_ms": self.worker_clock_skew_ms,
            "stuck_messages": self.stuck_messages,
            "failing": self.failing,
        }


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
        report.scheduled_jobs = Message.objects.pending().count()
        # Few rows (messages in flight), read through the status index.
        report.stuck_messages = len(stuck_claims())
        if report.stuck_messages:
            report.failing.append("stuck_messages")
    except DatabaseError as error:
        logger.warning("health: database unavailable: %s", error)
        report.database = "disconnected"
        report.failing.append("database")
    try:
        broker.redis_client().ping()
        if scheduler_is_alive(broker.seconds_since_heartbeat()):
            report.scheduler = "running"
            skew = broker.last_worker_clock_skew()
            report.worker_clock_skew_ms = None if skew is None else round(skew * 1000, 1)
        else:
            report.failing.append("scheduler")
    except (redis.RedisError, OSError) as error:
        logger.warning("health: redis unavailable: %s", error)
        report.redis = "disconnected"
        report.failing.append("redis")
    return report
