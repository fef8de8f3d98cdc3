"""Puts delivery tasks on the broker: one per imminent message, or per group due together."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from uuid import uuid4

from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

from messages import message_states, redis_keys
from messages.models import Message
from messages.task_names import DELIVER_TASK
from scheduler_project.celery import app as celery_app

logger = logging.getLogger(__name__)


def horizon_end(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.SCHEDULER_HORIZON_SECONDS)


def is_imminent(due_at: datetime, *, now: datetime) -> bool:
    """Due before beat's next tick or two: queued at once, alone, rather than left to beat."""
    return due_at <= now + timedelta(seconds=2 * settings.SCHEDULER_POLL_SECONDS)


def enqueue_group(message_pks: Sequence[int], *, eta: datetime | None, payload_bytes: int) -> None:
    """Sends one task for messages due together, to start DELIVERY_CLAIM_LEAD_MS before the
    first one's eta; raises when the broker is down. `payload_bytes` lets the worker reserve
    room for the payloads before it claims them."""
    task_id = uuid4().hex
    if eta is not None:
        eta -= timedelta(milliseconds=settings.DELIVERY_CLAIM_LEAD_MS)
    celery_app.send_task(
        DELIVER_TASK,
        args=[list(message_pks)],
        kwargs={"payload_bytes": payload_bytes},
        eta=eta,
        task_id=task_id,  # its queue is celeryconfig's route for DELIVER_TASK
    )
    if len(message_pks) == 1:
        # Revoking a shared task would stop its other messages: only lone tasks are revocable.
        ttl = int(settings.SCHEDULER_HORIZON_SECONDS + settings.SCHEDULER_RECOVERY_SECONDS) + 60
        redis_keys.remember_task_id(message_pks[0], task_id, ttl_seconds=ttl)


Row = tuple[int, str, datetime, int]  # pk, message id, due at, payload bytes


def enqueue_in_groups(rows: Sequence[Row], *, now: datetime, enqueued_at: datetime | None = None) -> list[int]:
    """Sends the tasks for these messages, marked enqueued (at `enqueued_at`), grouped as they
    are due; returns the pks sent. When the broker fails, the rest are marked not enqueued (if
    still marked at `enqueued_at`), for the next dispatch run."""
    enqueued: list[int] = []
    try:
        for eta, group in groups_due_together(rows, now=now):
            enqueue_group([row[0] for row in group], eta=eta, payload_bytes=sum(row[3] for row in group))
            enqueued.extend(row[0] for row in group)
    except (BrokerError, *redis_keys.REDIS_ERRORS) as error:
        logger.warning("enqueueing stopped after %d messages, broker unavailable: %s", len(enqueued), error)
        message_states.forget_enqueued({row[0] for row in rows} - set(enqueued), enqueued_at=enqueued_at)
    return enqueued


def groups_due_together(rows: Sequence[Row], *, now: datetime) -> Iterable[tuple[datetime | None, list[Row]]]:
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


def enqueue_many_after_commit(rows: Sequence[Row], *, enqueued_at: datetime) -> None:
    """For messages just saved marked enqueued at `enqueued_at`: their tasks, grouped as the
    dispatcher groups them, once the transaction commits."""
    in_order = sorted(rows, key=lambda row: row[2])
    transaction.on_commit(lambda: enqueue_in_groups(in_order, now=enqueued_at, enqueued_at=enqueued_at), robust=True)


def enqueue_after_commit(message: Message, *, due_at: datetime | None = None, enqueued_at: datetime | None = None) -> None:
    """For a message just marked enqueued inside the current transaction, due at `due_at` and
    marked at `enqueued_at` (by default, what the instance says)."""
    due_at = due_at or message.due_at
    enqueued_at = enqueued_at or message.enqueued_at

    def enqueue() -> None:
        try:
            enqueue_group([message.pk], eta=due_at, payload_bytes=message.payload_bytes)
        except (BrokerError, *redis_keys.REDIS_ERRORS) as error:
            # kombu wraps redis-py's errors in its own (tests/test_redis_faults_after_commit.py);
            # redis-py's are named too, should one get through. The row says "enqueued": clear
            # that so the next dispatch run sends it.
            message_states.forget_enqueued([message.pk], enqueued_at=enqueued_at)
            logger.warning("message %s left for the dispatcher, broker unavailable: %s", message.message_id, error)

    # Robust: the message is committed, so whatever fails here must neither fail its request
    # (a 500, and a 409 for the client's retry) nor skip the enqueues of the others committed with
    # it (a worker recording a group); a row left marked enqueued is re-sent by the recovery rule.
    transaction.on_commit(enqueue, robust=True)
