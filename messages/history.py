"""Delivered messages stay as history for DELIVERY_HISTORY_DAYS, then go."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from messages.models import Message, MessageStatus

logger = logging.getLogger(__name__)

PRUNE_BATCH = 1000


def prune_delivery_history(*, now: datetime, keep_days: float) -> int:
    """Deletes in batches, so a large backlog never holds a long lock or fills memory."""
    cutoff = now - timedelta(days=keep_days)
    expired = Message.objects.filter(status=MessageStatus.DELIVERED, finished_at__lt=cutoff)
    pruned = 0
    while batch := list(expired.values_list("pk", flat=True)[:PRUNE_BATCH]):
        Message.objects.filter(pk__in=batch).delete()
        pruned += len(batch)
    if pruned:
        logger.info("pruned %d delivered messages older than %s", pruned, cutoff.isoformat())
    return pruned
