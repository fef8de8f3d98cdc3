"""Delivered and expired messages stay as history for DELIVERY_HISTORY_DAYS, then go."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction

from messages.models import HISTORY_STATUSES, DeliveryAttempt, Message

logger = logging.getLogger(__name__)

PRUNE_BATCH = 1000


def prune_delivery_history(*, now: datetime, keep_days: float) -> int:
    """Deletes in batches, so a large backlog never holds a long lock or fills memory.

    By primary key, attempts first (they have nothing below them, so Django deletes them with one
    statement), then the messages with one more, which then have nothing left to cascade."""
    cutoff = now - timedelta(days=keep_days)
    past = Message.objects.filter(status__in=HISTORY_STATUSES, finished_at__lt=cutoff)
    pruned = 0
    while batch := list(past.values_list("pk", flat=True)[:PRUNE_BATCH]):
        with transaction.atomic():
            DeliveryAttempt.objects.filter(message_id__in=batch).delete()
            Message.objects.filter(pk__in=batch).delete_rows()
        pruned += len(batch)
    if pruned:
        logger.info("pruned %d delivered messages older than %s", pruned, cutoff.isoformat())
    return pruned
