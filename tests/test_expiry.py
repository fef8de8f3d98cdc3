"""expiresAt: no attempt starts at or after it; the message ends `expired`, kept as history."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from messages import delivery, delivery_engine, history, message_states, metrics, scheduling
from messages.models import DeliveryAttempt, Message, MessageStatus
from messages.retry_policy import Verdict, decide_after_attempt
from messages.webhook_client import WebhookResult
from tests.factories import make_message
from tests.support.api_calls import iso
from tests.support.receiver import Reply
from tests.support.waits import nothing_more_arrives, wait_until

FAR = datetime(2099, 1, 1, tzinfo=UTC)


def body(message_id: str = "m", **extra: object) -> dict[str, object]:
    return {"id": message_id, "scheduleTo": iso(FAR), "webhookUrl": "https://example.com/hook", "payload": {"n": 1}, **extra}


def overdue_and_expired(message_id: str = "late", **fields: Any) -> Message:
    """Due a minute ago and past its expiresAt: what a service that was down finds."""
    now = timezone.now()
    return make_message(message_id=message_id, due_at=now - timedelta(minutes=1), expires_at=now - timedelta(seconds=30), **fields)


# --- The API ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_expires_at_is_kept_and_shown(api):
    response = api.post("/messages", body(expiresAt="2099-01-01T02:00:00+01:00"), format="json")

    assert response.status_code == 200, response.content
    assert api.get("/messages/m").json()["expiresAt"] == "2099-01-01T01:00:00+00:00"
    assert api.post("/messages", body("n"), format="json").status_code == 200
    assert api.get("/messages/n").json()["expiresAt"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("expires_at", "says"),
    [
        ("2098-12-31T23:59:59Z", "later than scheduleTo"),
        ("2099-01-01T00:00:00Z", "later than scheduleTo"),
        ("2099-01-01T02:00:00", "offset"),
        (12, "ISO 8601"),
    ],
)
def test_an_expiry_that_could_never_let_it_be_sent_is_refused(api, expires_at, says):
    response = api.post("/messages", body(expiresAt=expires_at), format="json")

    assert response.status_code == 400
    assert says in response.json()["errors"]["expiresAt"][0]
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_an_expiry_already_past_is_refused_even_after_a_past_schedule(api):
    past = timezone.now() - timedelta(hours=1)
    response = api.post("/messages", body(scheduleTo=iso(past), expiresAt=iso(past + timedelta(minutes=1))), format="json")

    assert response.status_code == 400
    assert "already past" in response.json()["errors"]["expiresAt"][0]
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_patch_sets_changes_and_clears_the_expiry(api):
    api.post("/messages", body(), format="json")

    assert api.patch("/messages/m", {"expiresAt": "2099-02-01T00:00:00Z"}, format="json").json()["expiresAt"] == (
        "2099-02-01T00:00:00+00:00"
    )
    refused = api.patch("/messages/m", {"scheduleTo": "2099-03-01T00:00:00Z"}, format="json")
    assert refused.status_code == 400  # moved past its own expiry
    assert "next attempt" in refused.json()["errors"]["expiresAt"][0]
    assert api.patch("/messages/m", {"expiresAt": None}, format="json").json()["expiresAt"] is None
    assert api.patch("/messages/m", {"scheduleTo": "2099-03-01T00:00:00Z"}, format="json").status_code == 200
    both = api.patch("/messages/m", {"scheduleTo": "2099-04-01T00:00:00Z", "expiresAt": "2099-03-15T00:00:00Z"}, format="json")
    assert both.status_code == 400
    assert Message.objects.get().schedule_to == datetime(2099, 3, 1, tzinfo=UTC)


@pytest.mark.django_db
def test_an_expired_message_is_history_its_id_free_listed_and_counted(api):
    expired = overdue_and_expired()
    message_states.expire([expired.pk])

    detail = api.get("/messages/late").json()
    assert detail["status"] == "expired"
    assert detail["nextRun"] is None
    assert detail["finishedAt"] is not None
    assert detail["lastOutcome"] == message_states.EXPIRED_ERROR
    assert api.get("/messages?status=expired").json()["scheduledJobs"][0]["messageId"] == "late"
    assert api.get("/messages").json()["count"] == 0
    assert 'scheduler_messages{status="expired"} 1.0' in api.get("/metrics").content.decode()
    assert api.patch("/messages/late", {"payload": {"n": 2}}, format="json").status_code == 409
    assert api.delete("/messages/late").status_code == 404
    assert api.post("/messages", body("late"), format="json").status_code == 200  # the id is free again


@pytest.mark.django_db
def test_expired_history_is_pruned_with_delivered_history():
    message = overdue_and_expired()
    message_states.expire([message.pk])

    assert history.prune_delivery_history(now=timezone.now() + timedelta(days=8), keep_days=7) == 1
    assert not Message.objects.exists()


# --- Where an attempt is not made -------------------------------------------------------


@pytest.mark.django_db
def test_a_claim_skips_an_expired_message_and_ends_it_without_an_attempt():
    expired = overdue_and_expired()
    live = make_message(message_id="live", due_at=timezone.now() - timedelta(minutes=1))

    claimed = delivery.claim_due_messages([expired.pk, live.pk], now=timezone.now())

    assert [message.message_id for message in claimed] == ["live"]
    expired.refresh_from_db()
    assert expired.status == MessageStatus.EXPIRED
    assert expired.due_at is None
    assert expired.finished_at is not None
    assert not DeliveryAttempt.objects.filter(message=expired).exists()


@pytest.mark.django_db
def test_an_expiry_still_to_come_is_not_touched():
    waiting = make_message(due_at=timezone.now() + timedelta(minutes=1), expires_at=timezone.now() + timedelta(minutes=2))

    assert message_states.expire([waiting.pk]) == 0
    waiting.refresh_from_db()
    assert waiting.status == MessageStatus.SCHEDULED


def test_a_retry_that_would_start_after_the_expiry_is_not_planned():
    now = datetime(2099, 1, 1, tzinfo=UTC)
    failed = WebhookResult(started_at=now, duration_ms=5, status_code=503)

    def decide(expires_at: datetime | None) -> Verdict:
        return decide_after_attempt(
            result=failed, attempt_number=1, max_attempts=5, retry_schedule=[60.0], now=now, expires_at=expires_at
        ).verdict

    assert decide(None) is Verdict.RETRY
    assert decide(now + timedelta(minutes=2)) is Verdict.RETRY  # 60 s ± 20 % comes before it
    assert decide(now + timedelta(seconds=30)) is Verdict.EXPIRED


@pytest.mark.django_db
def test_a_failed_attempt_whose_retry_would_come_too_late_ends_the_message_expired(receiver, hook_path, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [60.0]
    receiver.reply(hook_path, Reply(status=503))
    message = make_message(webhook_url=receiver.url(hook_path), expires_at=timezone.now() + timedelta(seconds=2))

    delivery.deliver_messages([message.pk])

    message.refresh_from_db()
    assert message.status == MessageStatus.EXPIRED
    assert message.attempt_count == 1
    assert message.last_status_code == 503
    assert len(receiver.calls_to(hook_path)) == 1


@pytest.mark.django_db
def test_a_claimed_message_whose_expiry_comes_while_it_waits_for_its_call_is_not_called(receiver, hook_path, monkeypatch):
    message = make_message(webhook_url=receiver.url(hook_path), expires_at=timezone.now() + timedelta(seconds=30))
    # Claimed in time; by the moment its call would start (a slot long in coming), expired.
    later = timezone.now() + timedelta(minutes=1)
    monkeypatch.setattr(delivery_engine, "timezone", types.SimpleNamespace(now=lambda: later))

    delivery.deliver_messages([message.pk])

    message.refresh_from_db()
    assert message.status == MessageStatus.EXPIRED
    assert message.claim_token is None
    assert message.attempt_count == 0
    assert receiver.calls_to(hook_path) == []


@pytest.mark.django_db
def test_an_edit_racing_an_expiry_loses_to_it(api):
    message = overdue_and_expired("raced")
    # The edit read the message before it expired; the expiry moved its version on.
    assert message_states.expire([message.pk]) == 1

    assert not message_states.edit(message, changes={"payload_json": "{}"}, due_at=None, enqueued_at=None)
    with pytest.raises(scheduling.MessageFinished):
        scheduling.edit_message(owner_id=message.owner_id, message_id="raced", payload_json="{}")


def test_metrics_name_every_status():
    assert MessageStatus.EXPIRED in MessageStatus.values
    assert metrics  # the gauge iterates MessageStatus.values (test above reads its expired line)


# --- The real path ----------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_message_found_past_its_expiry_is_never_sent_and_its_neighbour_is(service, hook_path):
    # The service was down past the 9:00 reminder's usefulness: beat finds it overdue and expired.
    late = overdue_and_expired("nine-o-clock", webhook_url=service.url(hook_path))
    on_time = make_message(
        message_id="still-useful", due_at=timezone.now() - timedelta(minutes=1), webhook_url=service.url(hook_path)
    )

    service.wait_for_calls(hook_path, 1, timeout=15)
    wait_until(lambda: Message.objects.get(pk=late.pk).status == MessageStatus.EXPIRED, timeout=10, what="the expiry")

    calls = nothing_more_arrives(lambda: service.calls_to(hook_path), within=1.5, what="a call of the expired message")
    assert len(calls) == 1
    assert Message.objects.get(pk=on_time.pk).status == MessageStatus.DELIVERED
    assert not DeliveryAttempt.objects.filter(message_id=late.pk).exists()


@pytest.mark.django_db
def test_a_retry_cannot_plan_an_attempt_at_or_after_the_expiry_but_may_move_or_clear_it(api):
    failed = make_message(
        message_id="f", status=MessageStatus.FAILED, due_at=None, expires_at=timezone.now() + timedelta(minutes=10)
    )
    later = iso(timezone.now() + timedelta(hours=1))

    refused = api.post("/messages/f/retry", {"scheduleTo": later}, format="json")
    assert refused.status_code == 400
    assert "next attempt" in refused.json()["errors"]["expiresAt"][0]
    failed.refresh_from_db()
    assert failed.status == MessageStatus.FAILED

    moved = api.post(
        "/messages/f/retry", {"scheduleTo": later, "expiresAt": iso(timezone.now() + timedelta(hours=2))}, format="json"
    )
    assert moved.status_code == 200, moved.content
    assert api.get("/messages/f").json()["expiresAt"] is not None


@pytest.mark.django_db
def test_a_failed_message_past_its_expiry_is_retried_only_with_the_expiry_moved_or_cleared(api):
    make_message(message_id="f", status=MessageStatus.FAILED, due_at=None, expires_at=timezone.now() - timedelta(minutes=1))

    assert api.post("/messages/f/retry", {}, format="json").status_code == 400
    cleared = api.post("/messages/f/retry", {"expiresAt": None}, format="json")
    assert cleared.status_code == 200
    detail = api.get("/messages/f").json()
    assert (detail["status"], detail["expiresAt"]) == ("scheduled", None)


@pytest.mark.django_db
def test_a_bulk_cancel_cannot_name_history_statuses(api):
    for status in ("expired", "delivered"):
        response = api.post("/messages/cancel", {"filter": {"status": status}}, format="json")
        assert response.status_code == 400, status
