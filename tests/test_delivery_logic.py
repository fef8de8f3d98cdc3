"""Claiming and finishing messages, called directly, with a real receiver where a call is made."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from standardwebhooks import Webhook

from messages import delivery
from messages.clock import database_now
from messages.models import API_TOKEN_KEY_ID, DeliveryAttempt, Message, MessageStatus
from messages.signing import parse_signing_secrets
from messages.webhook_client import WebhookResult
from tests.factories import make_message
from tests.support.receiver import Reply
from tests.support.waits import wait_until

pytestmark = pytest.mark.django_db


def failed_result(**fields) -> WebhookResult:
    return WebhookResult(started_at=timezone.now(), duration_ms=3, **fields)


def test_a_due_message_is_claimed_once_however_many_tasks_carry_it():
    message = make_message(due_at=timezone.now() - timedelta(seconds=1))

    first = delivery.claim_due_messages([message.pk], now=timezone.now())
    second = delivery.claim_due_messages([message.pk], now=timezone.now())

    assert [claimed.pk for claimed in first] == [message.pk]
    assert second == []
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING


def test_a_message_is_not_claimed_before_it_is_due():
    now = timezone.now()
    message = make_message(due_at=now + timedelta(milliseconds=5))

    assert delivery.claim_due_messages([message.pk], now=now) == []
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SCHEDULED


@pytest.mark.parametrize("status", [MessageStatus.FAILED, MessageStatus.DELIVERED, MessageStatus.SENDING])
def test_finished_or_in_flight_messages_are_never_claimed(status):
    # A finished message has no due_at (the state invariants); one in flight keeps its own.
    due_at = timezone.now() - timedelta(seconds=1) if status == MessageStatus.SENDING else None
    message = make_message(due_at=due_at, status=status)
    assert delivery.claim_due_messages([message.pk], now=timezone.now()) == []


def test_a_deleted_message_makes_its_task_a_no_op():
    message = make_message(due_at=timezone.now() - timedelta(seconds=1))
    message.delete()
    assert delivery.claim_due_messages([message.pk], now=timezone.now()) == []


def test_success_marks_the_message_delivered_and_frees_its_id():
    message = delivery.claim_due_messages([make_message().pk], now=timezone.now())[0]

    decision = delivery.record_attempt(message, failed_result(status_code=204))

    message.refresh_from_db()
    assert decision.verdict.value == "delivered"
    assert (message.status, message.due_at, message.attempt_count) == (MessageStatus.DELIVERED, None, 1)
    assert not Message.objects.holding_id(message.message_id).exists()
    assert DeliveryAttempt.objects.get(message=message).status_code == 204


def test_a_retryable_failure_schedules_the_next_attempt():
    pk = make_message().pk
    now = timezone.now()
    message = delivery.claim_due_messages([pk], now=now)[0]

    delivery.record_attempt(message, failed_result(status_code=503), now=now)

    message.refresh_from_db()
    assert message.status == MessageStatus.RETRYING
    assert message.due_at is not None
    assert message.due_at > now
    assert message.last_status_code == 503


def test_the_last_attempt_leaves_the_message_failed_and_its_id_taken():
    message = delivery.claim_due_messages([make_message(max_attempts=1).pk], now=timezone.now())[0]

    delivery.record_attempt(message, failed_result(error="ConnectionError"))

    message.refresh_from_db()
    assert (message.status, message.due_at, message.last_error) == (MessageStatus.FAILED, None, "ConnectionError")
    assert Message.objects.holding_id(message.message_id).exists()


def test_a_result_from_a_claim_that_was_taken_away_is_ignored():
    message = delivery.claim_due_messages([make_message().pk], now=timezone.now())[0]
    Message.objects.filter(pk=message.pk).update(claim_token=None, claimed_at=None, status=MessageStatus.RETRYING)

    delivery.record_attempt(message, failed_result(status_code=200))

    assert Message.objects.get(pk=message.pk).status == MessageStatus.RETRYING
    assert not DeliveryAttempt.objects.exists()


def test_a_stale_claim_is_recovered_as_a_lost_attempt():
    now = timezone.now()
    message = make_message(due_at=now - timedelta(minutes=10))
    delivery.claim_due_messages([message.pk], now=now)
    # Its worker's last renewal, five minutes ago on the database's clock
    Message.objects.filter(pk=message.pk).update(claimed_at=now - timedelta(minutes=5))

    recovered = delivery.recover_stale_claims(now=now)

    message.refresh_from_db()
    assert recovered == 1
    assert message.status == MessageStatus.RETRYING
    assert DeliveryAttempt.objects.get(message=message).error == delivery.WORKER_LOST


def test_a_fresh_claim_is_left_alone():
    now = timezone.now()
    message = make_message(due_at=now)
    delivery.claim_due_messages([message.pk], now=now)

    assert delivery.recover_stale_claims(now=now + timedelta(seconds=1)) == 0
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING


def test_a_renewed_claim_is_not_stale_however_long_ago_it_was_made():
    now = timezone.now()
    message = make_message(due_at=now)
    claim = delivery.claim_messages([message.pk], now=now)
    Message.objects.filter(pk=message.pk).update(claimed_at=now - timedelta(hours=1))

    assert delivery.renew_claims([claim.token, uuid.uuid4()]) == {claim.token}  # only claims still held

    assert delivery.recover_stale_claims(now=now) == 0
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING


def test_the_claim_time_is_the_databases_clock_not_the_callers():
    # A worker whose clock is an hour ahead still writes the database's time
    message = make_message(due_at=timezone.now())
    delivery.claim_due_messages([message.pk], now=timezone.now() + timedelta(hours=1))

    claimed_at = Message.objects.get(pk=message.pk).claimed_at
    assert claimed_at is not None
    assert abs((claimed_at - database_now()).total_seconds()) < 5


def test_a_group_is_sent_concurrently_and_each_message_recorded(receiver, hook_path):
    receiver.reply(hook_path, then=Reply(delay=0.5))
    messages = [make_message(message_id=f"group-{n}", webhook_url=receiver.url(hook_path)) for n in range(10)]

    started = timezone.now()
    delivery.deliver_messages([message.pk for message in messages])
    elapsed = (timezone.now() - started).total_seconds()

    assert len(receiver.calls_to(hook_path)) == 10
    assert Message.objects.filter(status=MessageStatus.DELIVERED).count() == 10
    assert elapsed < 10 * 0.5  # concurrent, not one after another


TWO_SECRETS = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2Vjb25kLXNlY3JldC1vZi0yNC1ieXRlcyE=")


@override_settings(WEBHOOK_SIGNING_SECRETS=parse_signing_secrets(" ".join(TWO_SECRETS)))
def test_calls_are_signed_by_every_secret_and_verify_with_standardwebhooks(receiver, hook_path):
    message = make_message(message_id="signed", webhook_url=receiver.url(hook_path), payload={"é": [1, 2]})

    delivery.deliver_messages([message.pk])

    call = receiver.calls_to(hook_path)[0]
    assert len(call.headers["webhook-signature"].split()) == 2
    for secret in TWO_SECRETS:
        assert Webhook(secret).verify(call.body, call.headers) == {"é": [1, 2]}
    assert call.headers["webhook-id"] == message.delivery_id == call.headers["Idempotency-Key"]
    assert call.headers["X-Message-Id"] == "signed"


def test_extra_headers_are_sent_but_never_replace_ours(receiver, hook_path):
    message = make_message(webhook_url=receiver.url(hook_path), headers={"X-Tenant": "acme"})

    delivery.deliver_messages([message.pk])

    headers = receiver.calls_to(hook_path)[0].headers
    assert headers["X-Tenant"] == "acme"
    assert headers["Content-Type"] == "application/json"


def test_a_failed_message_sent_again_by_hand_gets_a_fresh_set_of_attempts():
    from messages import scheduling

    message = make_message(message_id="resent", max_attempts=2)
    for _ in range(2):
        claimed = delivery.claim_due_messages([message.pk], now=timezone.now())[0]
        delivery.record_attempt(claimed, failed_result(status_code=500), now=timezone.now())
        Message.objects.filter(pk=message.pk, status=MessageStatus.RETRYING).update(due_at=timezone.now())
    assert Message.objects.get(pk=message.pk).status == MessageStatus.FAILED

    scheduling.retry_message(owner_id=API_TOKEN_KEY_ID, message_id="resent")
    claimed = delivery.claim_due_messages([message.pk], now=timezone.now())[0]
    decision = delivery.record_attempt(claimed, failed_result(status_code=500))

    assert decision.verdict.value == "retry"
    assert list(DeliveryAttempt.objects.filter(message=message).values_list("number", flat=True)) == [1, 2, 3]


@override_settings(DELIVERY_GROUP_WINDOW_MS=400)
def test_a_group_spread_over_its_window_sends_each_message_at_its_own_moment(receiver, hook_path):
    start = timezone.now()
    dues = [start + timedelta(milliseconds=offset) for offset in (100, 250, 350)]
    messages = [
        make_message(message_id=f"spread-{n}", due_at=due, webhook_url=receiver.url(hook_path), payload={"n": n})
        for n, due in enumerate(dues)
    ]
    # The task starts at its first message's eta
    wait_until(lambda: timezone.now() >= dues[0], timeout=1, interval=0.005, what="the first message's eta")

    delivery.deliver_messages([message.pk for message in messages])

    arrivals = {call.json["n"]: call.arrived_at for call in receiver.calls_to(hook_path)}
    assert sorted(arrivals) == [0, 1, 2]
    for n, due in enumerate(dues):
        assert 0 <= arrivals[n] - due.timestamp() < 0.1


@override_settings(DELIVERY_CLAIM_LEAD_MS=300, DELIVERY_GROUP_WINDOW_MS=100)
def test_a_task_started_the_claim_lead_early_claims_its_group_but_sends_nothing_early(receiver, hook_path):
    start = timezone.now()
    dues = [start + timedelta(milliseconds=offset) for offset in (300, 380)]
    messages = [
        make_message(message_id=f"lead-{n}", due_at=due, webhook_url=receiver.url(hook_path), payload={"n": n})
        for n, due in enumerate(dues)
    ]

    delivery.deliver_messages([message.pk for message in messages])  # at once: 300 ms early

    arrivals = {call.json["n"]: call.arrived_at for call in receiver.calls_to(hook_path)}
    assert sorted(arrivals) == [0, 1]
    for n, due in enumerate(dues):
        assert 0 <= arrivals[n] - due.timestamp() < 0.1
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.DELIVERED}


def test_only_a_waiting_message_counts_as_queued():
    # The dispatcher counts queued messages by enqueued_at alone (its partial index): a claim
    # and every outcome must clear it, or the broker's room would shrink for good.
    now = timezone.now()
    message = make_message(due_at=now, enqueued_at=now)
    assert list(Message.objects.queued()) == [message]

    claimed = delivery.claim_due_messages([message.pk], now=now)[0]
    assert not Message.objects.queued().exists()

    delivery.record_attempt(claimed, failed_result(status_code=400))
    assert Message.objects.get(pk=message.pk).status == MessageStatus.FAILED
    assert not Message.objects.queued().exists()
