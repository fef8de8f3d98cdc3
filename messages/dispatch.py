"""Hands messages to Celery: when they enter the horizon, and again when their task was lost.

Only messages due within SCHEDULER_HORIZON_SECONDS travel as Celery tasks with an exact eta;
the database holds the rest. A task may be lost (Redis emptied, worker killed) or duplicated
(two beats, a redelivered task): losing is repaired here, duplicating is made harmless by the
claim in `messages.delivery`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from messages import message_states, redis_keys
from messages.clock import database_clock_skew_seconds
from messages.delivery import recover_stale_claims
from messages.models import WAITING_STATUSES, Message
from messages.queueing import Row, enqueue_in_groups, horizon_end

logger = logging.getLogger(__name__)

CLOCK_SKEW_WARNING_SECONDS = 0.5


def dispatch_due_messages(*, now: datetime | None = None) -> int:
    """One beat tick: moves due-soon messages into the broker, re-sends lost ones.

    Returns how many messages were enqueued.
    """
    skew = database_clock_skew_seconds()
    if abs(skew) > CLOCK_SKEW_WARNING_SECONDS:
        # Etas run on this worker's clock: a worker that is ahead delivers early.
        logger.warning("this worker's clock is %.3f s off the database's: fix NTP on this host", skew)
    with redis_keys.dispatch_lock(ttl_seconds=dispatch_lock_ttl_seconds()) as acquired:
        if not acquired:
            return 0  # the holder's run writes the heartbeat
        if redis_keys.broker_lost_its_data():
            forgotten = forget_enqueued_tasks()
            if forgotten:
                logger.warning("broker lost its data: %d queued messages will be enqueued again", forgotten)
        recover_stale_claims(now=now or timezone.now())
        enqueued = enqueue_horizon(now=now or timezone.now())
    # Only after a run that went through: /health's "running" means messages are moving.
    redis_keys.record_heartbeat(clock_skew_seconds=skew)
    return enqueued


def dispatch_lock_ttl_seconds() -> float:
    """Long enough for a tick's run; short, because a worker killed mid-run keeps the lock
    until it expires, and every recovery waits that long (it was 30 s; the fault suite caught
    a worker killed inside a dispatch holding up the next ones for half a minute). A run that
    outlasts it only lets a second one overlap, which the claims make harmless."""
    return max(settings.SCHEDULER_POLL_SECONDS * 5, 5.0)


def forget_enqueued_tasks() -> int:
    return message_states.forget_enqueued()


def enqueue_horizon(*, now: datetime) -> int:
    """Queues the messages due within the horizon, nearest first, while fewer than
    SCHEDULER_MAX_QUEUED wait in the broker; and, whatever that count, the ones whose task was lost."""
    recovery_cutoff = now - timedelta(seconds=settings.SCHEDULER_RECOVERY_SECONDS)
    lost = _waiting_rows(Q(due_at__lte=recovery_cutoff, enqueued_at__lte=recovery_cutoff), limit=settings.SCHEDULER_DISPATCH_BATCH)
    room = settings.SCHEDULER_MAX_QUEUED - Message.objects.queued().count()
    new = _waiting_rows(
        Q(enqueued_at__isnull=True, due_at__lte=horizon_end(now)), limit=min(settings.SCHEDULER_DISPATCH_BATCH, room)
    )
    rows = lost + new
    if not rows:
        return 0
    # Marked before sending: a crash in between leaves them to the recovery rule, not lost.
    message_states.mark_enqueued([row[0] for row in rows], now=now)
    enqueued = enqueue_in_groups(rows, now=now)
    for row in lost:
        logger.warning("message %s enqueued again: its task was lost", row[1])
    return len(enqueued)


def _waiting_rows(condition: Q, *, limit: int) -> list[Row]:
    if limit <= 0:
        return []
    rows = (
        Message.objects.filter(status__in=WAITING_STATUSES)
        .filter(condition)
        .order_by("due_at")
        .values_list("pk", "message_id", "due_at", "payload_bytes")[:limit]
    )
    # due_at is never None on a waiting message (models.STATE_INVARIANTS).
    return cast(list[Row], list(rows))
