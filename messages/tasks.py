"""Celery tasks: thin wrappers that take ids and call the plain functions."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from messages import delivery_engine, dispatch, history


@shared_task(name="messages.tasks.deliver_messages", acks_late=True, ignore_result=True)
def deliver_messages(message_pks: list[int], payload_bytes: int | None = None) -> None:
    """Claims and hands over: the calls go on in this process's delivery engine."""
    try:
        delivery_engine.engine().accept(message_pks, payload_bytes=payload_bytes)
    except delivery_engine.EngineStopping:
        delivery_engine.give_back_unclaimed(message_pks)


@shared_task(name="messages.tasks.dispatch_due_messages", ignore_result=True)
def dispatch_due_messages() -> int:
    return dispatch.dispatch_due_messages()


@shared_task(name="messages.tasks.prune_delivery_history", ignore_result=True)
def prune_delivery_history() -> int:
    return history.prune_delivery_history(now=timezone.now(), keep_days=settings.DELIVERY_HISTORY_DAYS)
