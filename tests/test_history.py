"""Delivered history is pruned after DELIVERY_HISTORY_DAYS, without reading payloads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messages.history import prune_delivery_history
from messages.models import DeliveryAttempt, Message, MessageStatus
from tests.factories import make_message

pytestmark = pytest.mark.django_db


def delivered(message_id: str, *, days_ago: float) -> Message:
    finished = timezone.now() - timedelta(days=days_ago)
    message = make_message(
        message_id=message_id, status=MessageStatus.DELIVERED, due_at=None, finished_at=finished, payload={"blob": "x" * 10_000}
    )
    DeliveryAttempt.objects.create(message=message, number=1, started_at=finished, duration_ms=5, status_code=200)
    return message


def test_old_delivered_history_goes_with_its_attempts_and_the_rest_stays():
    old = [delivered(f"old-{n}", days_ago=8) for n in range(3)]
    recent = delivered("recent", days_ago=1)
    failed = make_message(
        message_id="failed-long-ago", status=MessageStatus.FAILED, due_at=None, finished_at=timezone.now() - timedelta(days=30)
    )
    waiting = make_message(message_id="waiting")

    assert prune_delivery_history(now=timezone.now(), keep_days=7) == 3

    assert set(Message.objects.values_list("pk", flat=True)) == {recent.pk, failed.pk, waiting.pk}
    assert not DeliveryAttempt.objects.filter(message_id__in=[message.pk for message in old]).exists()
    assert DeliveryAttempt.objects.filter(message=recent).exists()


def test_pruning_never_reads_a_payload():
    for n in range(5):
        delivered(f"old-{n}", days_ago=8)

    with CaptureQueriesContext(connection) as queries:
        prune_delivery_history(now=timezone.now(), keep_days=7)

    assert not [query["sql"] for query in queries if "payload_json" in query["sql"]]
    assert not Message.objects.exists()
