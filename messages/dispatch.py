"""Hands messages to Celery: when they enter the horizon, and again when their task was lost.

Only messages due within SCHEDULER_HORIZON_SECONDS travel as Celery tasks with an exact eta;
the database holds the rest. A task may be lost (Redis emptied, worker killed) or duplicated
(two beats, a redelivered task): losing is repaired here, duplicating is made harmless by the
claim in `messages.delivery`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from messages import message_states, redis_keys
from messages.clock import database_clock_skew_seconds
from messages.delivery import recover_stale_claims
from messages.models import WAITING_STATUSES, Message
from messages.queueing import enqueue_group, horizon_end

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
    enqueued: list[int] = []
    try:
        for eta, group in _groups_due_together(rows, now=now):
            enqueue_group([row[0] for row in group], eta=eta, payload_bytes=sum(row[3] for row in group))
            enqueued.extend(row[0] for row in group)
    except BrokerError as error:
        logger.warning("dispatch stopped after %d messages, broker unavailable: %s", len(enqueued), error)
        message_states.forget_enqueued({row[0] for row in rows} - set(enqueued))
    for row in lost:
        logger.warning("message %s enqueued again: its task was lost", row[1])
    return len(enqueued)


Row = tuple[int, str, datetime, int]  # pk, message id, due at, payload bytes


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


def _groups_due_together(rows: Sequence[Row], *, now: datetime) -> Iterable[tuple[datetime | None, list[Row]]]:
    """Messages already due travel in chunks without eta; the others in groups due within one
    DELIVERY_GROUP_WINDOW_MS, with the eta of the group's first. A task per message would cost
    more than the message itself; inside the task each one still waits for its own moment.
    No task carries more than DELIVERY_GROUP_CONCURRENCY messages or DELIVERY_TASK_MAX_BYTES
    of payloads: what one task claims is what one worker must hold at once."""
    window = timedelta(milliseconds=settings.DELIVERY_GROUP_WINDOW_MS)
    yield from ((None, chunk) for chunk in _tasks([row for row in rows if row[2] <= now], window=None))
    yield from ((group[0][2], group) for group in _tasks([row for row in rows if row[2] > now], window=window))


def _tasks(rows: Sequence[Row], *, window: timedelta | None) -> Iterable[list[Row]]:
    """Consecutive rows in tasks within the count and byte caps and, with a window, due within
    it of the task's first."""
    most = max(settings.DELIVERY_GROUP_CONCURRENCY, 1)
    task: list[Row] = []
    task_bytes = 0
    for row in rows:
        is_full = len(task) >= most or task_bytes + row[3] > settings.DELIVERY_TASK_MAX_BYTES
        if task and (is_full or (window is not None and row[2] - task[0][2] > window)):
            yield task
            task, task_bytes = [], 0
        task.append(row)
        task_bytes += row[3]
    if task:
        yield task
