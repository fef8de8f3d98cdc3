"""Recording can never fail because of what a receiver sent, and one message's failure to be
recorded never touches another's: the layers below the hostile-receiver suite, one by one."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, OperationalError
from django.test import override_settings
from django.utils import timezone

from messages import delivery
from messages.models import DeliveryAttempt, Message, MessageStatus
from messages.retry_policy import Verdict, decide_after_attempt
from messages.webhook_client import MAX_DURATION_MS, RESPONSE_EXCERPT_BYTES, WebhookResult, excerpt_text
from tests.factories import make_message

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def unavailable(retry_after: str, *, status_code: int = 503) -> WebhookResult:
    return WebhookResult(started_at=NOW, duration_ms=3, status_code=status_code, retry_after=retry_after)


def decide(result: WebhookResult):
    return decide_after_attempt(result=result, attempt_number=1, max_attempts=5, retry_schedule=[10, 60], now=NOW)


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "١٢",
        "99999999999999999999999",
        "9" * 400,
        "Fri, 31 Dec 99999 23:59:59 GMT",
        "Wed, 21 Oct 2015 07:28:00",
        "-5",
        "",
        " ",
        "1e9",
        "Mon, 32 Foo 2020 99:99:99 GMT",
        "\udcff\udcfe",
    ],
)
def test_a_hostile_retry_after_is_ignored_and_the_schedule_applies(value):
    decision = decide(unavailable(value))

    assert decision.verdict is Verdict.RETRY
    assert timedelta(seconds=8) <= decision.retry_at - NOW <= timedelta(seconds=12)  # 10 s ± jitter


def test_a_retry_after_in_ascii_digits_is_honoured_up_to_the_schedules_longest_step():
    assert decide(unavailable("30")).retry_at - NOW == timedelta(seconds=30)
    assert decide(unavailable("100000")).retry_at - NOW == timedelta(seconds=60)


def test_a_retry_after_date_is_honoured():
    date = (NOW + timedelta(seconds=40)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert decide(unavailable(date)).retry_at - NOW == timedelta(seconds=40)


def test_an_excerpt_is_valid_text_without_nul_and_bounded():
    text = excerpt_text(b"a\x00b\xff\xfe\xc3(" + b"x" * 5000)

    assert "\x00" not in text
    assert text.startswith("a\ufffdb\ufffd")
    assert len(text.encode("utf-8")) <= 3 * RESPONSE_EXCERPT_BYTES
    text.encode("utf-8")  # no lone surrogate: any database stores it


def claimed(count: int) -> list[Message]:
    for n in range(count):
        make_message(message_id=f"group-{n}", due_at=timezone.now() - timedelta(seconds=1))
    return delivery.claim_due_messages(list(Message.objects.values_list("pk", flat=True)), now=timezone.now())


def test_a_policy_that_raises_on_one_result_costs_that_message_only_its_server_delay(monkeypatch):
    messages = claimed(3)
    real = delivery.decide_after_attempt

    def fragile(*, result, **kwargs):
        if result.retry_after:
            raise ValueError("a parser the receiver broke")
        return real(result=result, **kwargs)

    monkeypatch.setattr(delivery, "decide_after_attempt", fragile)
    results = [
        unavailable("whatever"),
        WebhookResult(started_at=NOW, duration_ms=1, status_code=200),
        WebhookResult(started_at=NOW, duration_ms=1, status_code=200),
    ]

    delivery.record_attempts(list(zip(messages, results, strict=True)))

    statuses = dict(Message.objects.values_list("message_id", "status"))
    assert statuses == {"group-0": MessageStatus.RETRYING, "group-1": MessageStatus.DELIVERED, "group-2": MessageStatus.DELIVERED}
    assert DeliveryAttempt.objects.count() == 3


def test_a_row_that_cannot_be_stored_falls_back_alone_and_keeps_a_minimal_record(monkeypatch):
    messages = claimed(5)
    poisoned = messages[2].pk
    real = delivery._store_attempts

    def store(outcomes, *, now):
        if any(outcome.message.pk == poisoned and outcome.result.response_excerpt for outcome in outcomes):
            raise IntegrityError("what the receiver sent cannot be stored")
        return real(outcomes, now=now)

    monkeypatch.setattr(delivery, "_store_attempts", store)
    results = [WebhookResult(started_at=NOW, duration_ms=1, status_code=200, response_excerpt="fine") for _ in messages]

    delivery.record_attempts(list(zip(messages, results, strict=True)))

    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.DELIVERED}
    excerpts = dict(DeliveryAttempt.objects.values_list("message_id", "response_excerpt"))
    assert excerpts.pop(poisoned) == ""
    assert set(excerpts.values()) == {"fine"}


@pytest.mark.django_db(transaction=True)  # the retries close the connection, as in an outage
@override_settings(DELIVERY_RECORD_RETRY_SECONDS=0.3)
def test_a_database_away_past_the_retries_leaves_the_batch_claimed_without_raising(monkeypatch):
    # Due tomorrow, claimed as of tomorrow: committed rows that a worker left running by an
    # earlier test could otherwise claim through a stale task (SQLite reuses flushed pks).
    tomorrow = timezone.now() + timedelta(days=1)
    for n in range(50):
        make_message(message_id=f"away-{n}", due_at=tomorrow)
    messages = delivery.claim_due_messages(list(Message.objects.values_list("pk", flat=True)), now=tomorrow)
    calls = 0

    def away(outcomes, *, now):
        nonlocal calls
        calls += 1
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(delivery, "_store_attempts", away)
    started = time.monotonic()

    delivery.record_attempts([(message, WebhookResult(started_at=NOW, duration_ms=1, status_code=200)) for message in messages])

    # One patience for the batch, not one per message
    assert time.monotonic() - started < 2
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENDING}


def test_a_claim_lost_for_a_month_records_a_duration_that_fits_its_column():
    message = claimed(1)[0]
    Message.objects.filter(pk=message.pk).update(claimed_at=timezone.now() - timedelta(days=30))

    assert delivery.recover_stale_claims(now=timezone.now()) == 1

    attempt = DeliveryAttempt.objects.get(message=message)
    assert attempt.error == delivery.WORKER_LOST
    assert attempt.duration_ms == MAX_DURATION_MS


def test_a_claim_recovery_cannot_record_is_listed_as_stuck_and_can_be_released(monkeypatch):
    # A claim as a worker writes it (the database's Now()), seen an hour later
    message = claimed(1)[0]
    monkeypatch.setattr(delivery, "database_now", lambda: timezone.now() + timedelta(hours=1))

    def failing(outcomes, *, now):
        raise IntegrityError("a row recovery keeps failing on")

    monkeypatch.setattr(delivery, "_store_attempts", failing)

    delivery.recover_stale_claims(now=timezone.now())

    assert [stuck.pk for stuck in delivery.stuck_claims()] == [message.pk]
    assert delivery.release_stuck_claims([message.pk], now=timezone.now()) == 1
    released = Message.objects.get(pk=message.pk)
    assert released.status == MessageStatus.FAILED
    assert released.last_error == delivery.RELEASED_STUCK
    assert released.claim_token is None
    assert delivery.stuck_claims() == []


def test_recovery_leaves_a_claim_renewed_after_it_was_found_stale(monkeypatch):
    message = claimed(1)[0]
    monkeypatch.setattr(delivery, "database_now", lambda: timezone.now() + timedelta(hours=1))
    real = delivery._store_attempts

    def renewed_meanwhile(outcomes, *, now):
        # its worker's renewal lands between recovery's read and its locked update
        Message.objects.filter(pk=message.pk).update(claimed_at=timezone.now() + timedelta(hours=1))
        return real(outcomes, now=now)

    monkeypatch.setattr(delivery, "_store_attempts", renewed_meanwhile)

    delivery.recover_stale_claims(now=timezone.now())

    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING
    assert not DeliveryAttempt.objects.exists()


def test_a_fresh_claim_is_never_stuck_nor_released():
    message = claimed(1)[0]

    assert delivery.stuck_claims() == []
    assert delivery.release_stuck_claims([message.pk], now=timezone.now()) == 0
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING


def test_a_released_claim_waits_again_as_it_was_with_no_attempt_counted():
    message = claimed(1)[0]

    assert delivery.release_claims([message]) == 1

    released = Message.objects.get(pk=message.pk)
    assert released.status == MessageStatus.SCHEDULED
    assert released.due_at == message.due_at
    assert released.attempt_count == 0
    assert released.enqueued_at is None  # beat enqueues it again on its next tick
    assert not DeliveryAttempt.objects.exists()
