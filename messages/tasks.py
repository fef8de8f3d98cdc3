"""Celery tasks: thin wrappers that take ids and call the plain functions.

Acks, results and queues are celeryconfig's, the same for every task; only the names are here."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from messages import delivery_engine, dispatch, history, idempotency
from messages.task_names import DELIVER_TASK, DISPATCH_TASK, PRUNE_TASK


@shared_task(name=DELIVER_TASK)
def deliver_messages(message_pks: list[int], payload_bytes: int | None = None) -> None:
    """Claims and hands over: the calls go on in this process's delivery engine."""
    try:
        delivery_engine.engine().accept(message_pks, payload_bytes=payload_bytes)
    except delivery_engine.EngineStopping:
        delivery_engine.give_back_unclaimed(message_pks)


@shared_task(name=DISPATCH_TASK)
def dispatch_due_messages() -> int:
    return dispatch.dispatch_due_messages()


@shared_task(name=PRUNE_TASK)
def prune_delivery_history() -> int:
    now = timezone.now()
    idempotency.forget_expired(now=now, ttl_seconds=settings.IDEMPOTENCY_KEY_TTL)
    return history.prune_delivery_history(now=now, keep_days=settings.DELIVERY_HISTORY_DAYS)
