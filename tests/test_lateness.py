"""How late each attempt started against the moment it was due, as GET /messages/{id} shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from messages import delivery
from messages.models import DeliveryAttempt, Message, MessageStatus
from messages.webhook_client import WebhookResult
from tests.factories import make_message
from tests.support.api_calls import LATENESS_BOUND_SECONDS, schedule
from tests.support.waits import wait_until

pytestmark = pytest.mark.django_db


def attempt(message: Message, *, late: timedelta, status_code: int) -> None:
    claimed = delivery.claim_due_messages([message.pk], now=timezone.now())[0]
    assert claimed.due_at is not None
    delivery.record_attempt(claimed, WebhookResult(started_at=claimed.due_at + late, duration_ms=5, status_code=status_code))


def test_each_attempt_shows_how_late_it_started_against_its_own_due_time(api):
    # Given a message due a second ago, whose first attempt starts 250 ms late and fails
    due = timezone.now() - timedelta(seconds=1)
    message = make_message(message_id="late", due_at=due, schedule_to=due, max_attempts=3)
    attempt(message, late=timedelta(milliseconds=250), status_code=503)

    # And whose retry, made due now, starts 40 ms after that and succeeds
    retried = Message.objects.get(pk=message.pk)
    assert retried.status == MessageStatus.RETRYING
    Message.objects.filter(pk=message.pk).update(due_at=timezone.now() - timedelta(milliseconds=100))
    attempt(Message.objects.get(pk=message.pk), late=timedelta(milliseconds=40), status_code=200)

    # Then GET shows each attempt's own lateness, and the first one's for the message
    body = api.get("/messages/late").json()
    assert [item["lateMs"] for item in body["attempts"]] == [250, 40]
    assert body["firstAttemptLateMs"] == 250


def test_attempts_recorded_before_lateness_was_kept_show_null(api):
    message = make_message(message_id="old", status=MessageStatus.FAILED, due_at=None)
    DeliveryAttempt.objects.create(message=message, number=1, started_at=datetime.now(UTC), duration_ms=3, status_code=500)

    body = api.get("/messages/old").json()

    assert body["attempts"][0]["lateMs"] is None
    assert body["firstAttemptLateMs"] is None


def test_a_message_not_yet_attempted_shows_null(api):
    make_message(message_id="waiting", due_at=timezone.now() + timedelta(hours=1))

    assert api.get("/messages/waiting").json()["firstAttemptLateMs"] is None


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_delivered_message_shows_a_small_lateness(api, service, hook_path):
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    schedule(api, service, hook_path, message_id="timed", at=due)
    service.wait_for_calls(hook_path, 1, timeout=15)

    def recorded() -> dict:
        return api.get("/messages/timed").json()

    wait_until(lambda: recorded()["attempts"], timeout=5, what="the attempt to be recorded")
    late_ms = recorded()["firstAttemptLateMs"]
    assert 0 <= late_ms < LATENESS_BOUND_SECONDS * 1000
    assert recorded()["attempts"][0]["lateMs"] == late_ms
