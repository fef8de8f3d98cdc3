"""Claims due messages, calls their webhooks and records each attempt's outcome.

Every task may run twice, late or after its message was deleted: the guarded UPDATE in
`claim_due_messages` lets exactly one worker own a due message, and `record_attempt` only
finishes a message under the claim it was sent with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from messages import metrics
from messages.models import DeliveryAttempt, Message, MessageStatus
from messages.queueing import enqueue_after_commit, is_imminent
from messages.retry_policy import Outcome, RetryDecision, decide_after_attempt
from messages.signing import signature_headers
from messages.webhook_client import WebhookCall, WebhookResult, encode_payload, send_webhooks

logger = logging.getLogger(__name__)

WORKER_LOST = "WorkerLost"


def deliver_messages(message_pks: Sequence[int]) -> None:
    """Sends every message of the group that is still unclaimed, each at its own moment, concurrently."""
    now = timezone.now()
    within = timedelta(milliseconds=settings.DELIVERY_CLAIM_LEAD_MS + settings.DELIVERY_GROUP_WINDOW_MS)
    claimed = claim_due_messages(message_pks, now=now, within=within)
    # Only the HTTP calls run concurrently; the database is written from this thread, once.
    results = send_webhooks([webhook_call(message) for message in claimed])
    record_attempts(list(zip(claimed, results, strict=True)))


def claim_due_messages(message_pks: Sequence[int], *, now: datetime, within: timedelta = timedelta(0)) -> list[Message]:
    """Claims the messages due by `now + within` (a group's window); none is sent before its time."""
    token = uuid4()
    claimed_count = (
        Message.objects.filter(pk__in=message_pks)
        .waiting_until(now + within)
        .update(status=MessageStatus.SENDING, claimed_at=now, claim_token=token, enqueued_at=None)
    )
    if not claimed_count:
        return []
    return list(Message.objects.filter(pk__in=message_pks, claim_token=token))


def webhook_call(message: Message) -> WebhookCall:
    """The call for a message, signed; not before its moment (a group starts at its first)."""
    body = encode_payload(message.payload)
    headers = {
        **message.headers,
        **signature_headers(message_id=message.message_id, body=body, now=timezone.now()),
    }
    return WebhookCall(
        url=message.webhook_url,
        body=body,
        message_id=message.message_id,
        timeout_seconds=message.timeout_seconds or settings.WEBHOOK_TIMEOUT_SECONDS,
        extra_headers=headers,
        not_before=message.due_at,
    )


@dataclass(frozen=True)
class AttemptOutcome:
    message: Message
    result: WebhookResult
    decision: RetryDecision
    number: int


def record_attempt(message: Message, result: WebhookResult, *, now: datetime | None = None) -> RetryDecision:
    return record_attempts([(message, result)], now=now)[0]


def record_attempts(
    calls: Sequence[tuple[Message, WebhookResult]], *, now: datetime | None = None
) -> list[RetryDecision]:
    """Stores each attempt and moves each message on: delivered, retrying or failed.

    A group's calls are recorded in one transaction: one commit, however many messages.
    """
    now = now or timezone.now()
    outcomes = [_decide(message, result, now=now) for message, result in calls]
    if outcomes:
        recorded = _store_attempts_patiently(outcomes, now=now)
        for outcome in outcomes:
            if outcome.message.pk in recorded:
                _log_attempt(outcome)
            else:
                logger.warning("message %s: claim lost before its attempt was recorded", outcome.message.message_id)
        metrics.record_attempts(
            metrics.AttemptSample(
                outcome=outcome.decision.outcome.value,
                result_class=_result_class(outcome.result),
                duration_seconds=outcome.result.duration_ms / 1000,
                lateness_seconds=_first_attempt_lateness(outcome),
            )
            for outcome in outcomes
            if outcome.message.pk in recorded
        )
    return [outcome.decision for outcome in outcomes]


def _decide(message: Message, result: WebhookResult, *, now: datetime) -> AttemptOutcome:
    number = message.attempt_count + 1
    decision = decide_after_attempt(
        result=result,
        attempt_number=number - message.attempt_count_at_resend,
        max_attempts=message.max_attempts or settings.WEBHOOK_MAX_ATTEMPTS,
        retry_schedule=settings.WEBHOOK_RETRY_SCHEDULE,
        now=now,
    )
    return AttemptOutcome(message=message, result=result, decision=decision, number=number)


def _first_attempt_lateness(outcome: AttemptOutcome) -> float | None:
    if outcome.number != 1:
        return None
    return (outcome.result.started_at - outcome.message.schedule_to).total_seconds()


def _store_attempts_patiently(outcomes: Sequence[AttemptOutcome], *, now: datetime) -> set[int]:
    """Retries through a database outage: giving up here would leave sent messages claimed,
    and their recovery would send them a second time. Returns the pks recorded."""
    deadline = time.monotonic() + settings.DELIVERY_RECORD_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            return _store_attempts(outcomes, now=now)
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() > deadline:
                raise
            logger.warning("%d attempts not yet recorded, database unavailable: %s", len(outcomes), error)
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _store_attempts(outcomes: Sequence[AttemptOutcome], *, now: datetime) -> set[int]:
    """One transaction, each message guarded by its claim: safe to repeat after an error at commit.

    Messages that end alike (delivered with the same status, say) are moved on by one UPDATE.
    """
    recorded: set[int] = set()
    with transaction.atomic():
        for alike in _alike_outcomes(outcomes):
            first = alike[0]
            claims = {outcome.message.pk: outcome.message.claim_token for outcome in alike}
            still_claimed = (
                Message.objects.select_for_update()
                .filter(pk__in=claims, status=MessageStatus.SENDING)
                .values_list("pk", "claim_token")
            )
            pks = [pk for pk, token in still_claimed if token is not None and token == claims[pk]]
            if not pks:
                continue
            Message.objects.filter(pk__in=pks).update(
                attempt_count=F("attempt_count") + 1,
                last_status_code=first.result.status_code,
                last_error=first.result.error,
                claimed_at=None,
                claim_token=None,
                **_fields_after(first.decision, now=now),
            )
            recorded.update(pks)
        for outcome in outcomes:
            decision = outcome.decision
            if outcome.message.pk in recorded and decision.outcome is Outcome.RETRY and is_imminent(decision.retry_at, now=now):
                outcome.message.due_at, outcome.message.enqueued_at = decision.retry_at, now
                enqueue_after_commit(outcome.message)
        DeliveryAttempt.objects.bulk_create(
            DeliveryAttempt(
                message_id=outcome.message.pk,
                number=outcome.number,
                started_at=outcome.result.started_at,
                duration_ms=outcome.result.duration_ms,
                status_code=outcome.result.status_code,
                error=outcome.result.error,
                response_excerpt=outcome.result.response_excerpt,
            )
            for outcome in outcomes
            if outcome.message.pk in recorded
        )
    return recorded


def _alike_outcomes(outcomes: Sequence[AttemptOutcome]) -> list[list[AttemptOutcome]]:
    """Groups that can share one UPDATE: same final state and result; each retry alone (its own time)."""
    alike: dict[tuple[object, ...], list[AttemptOutcome]] = {}
    for outcome in outcomes:
        if outcome.decision.outcome is Outcome.RETRY:
            key: tuple[object, ...] = ("retry", outcome.message.pk)
        else:
            key = (outcome.decision.outcome, outcome.result.status_code, outcome.result.error)
        alike.setdefault(key, []).append(outcome)
    return list(alike.values())


def _result_class(result: WebhookResult) -> str:
    return f"{result.status_code // 100}xx" if result.status_code is not None else result.error


def _fields_after(decision: RetryDecision, *, now: datetime) -> dict[str, object]:
    if decision.outcome is Outcome.RETRY:
        enqueued_at = now if is_imminent(decision.retry_at, now=now) else None
        return {"status": MessageStatus.RETRYING, "due_at": decision.retry_at, "enqueued_at": enqueued_at}
    status = MessageStatus.DELIVERED if decision.outcome is Outcome.DELIVERED else MessageStatus.FAILED
    return {"status": status, "due_at": None, "enqueued_at": None, "finished_at": now}


def _log_attempt(outcome: AttemptOutcome) -> None:
    message, result, decision, number = outcome.message, outcome.result, outcome.decision, outcome.number
    if decision.outcome is Outcome.DELIVERED:
        logger.info("message %s delivered (%s, attempt %d)", message.message_id, result.outcome, number)
    elif decision.outcome is Outcome.RETRY:
        logger.warning(
            "message %s attempt %d failed (%s), retry at %s",
            message.message_id, number, result.outcome, decision.retry_at.isoformat(),
        )
    else:
        logger.error("message %s failed for good after attempt %d (%s)", message.message_id, number, result.outcome)


def recover_stale_claims(*, now: datetime) -> int:
    """A claim older than its call can take means its worker died: count it as a lost attempt.

    Messages in flight are few, so each one's own timeout is applied here, not in SQL."""
    stale = [
        message
        for message in Message.objects.filter(status=MessageStatus.SENDING, claimed_at__lt=now - _claim_lifetime(None))
        if message.claimed_at < now - _claim_lifetime(message)
    ]
    for message in stale:
        lost = WebhookResult(
            started_at=message.claimed_at,
            duration_ms=round((now - message.claimed_at).total_seconds() * 1000),
            error=WORKER_LOST,
        )
        try:
            record_attempt(message, lost, now=now)
        except DatabaseError:
            # One bad row must not stop the tick that feeds every other message.
            logger.exception("message %s: recovering its stale claim failed", message.message_id)
    return len(stale)


def _claim_lifetime(message: Message | None) -> timedelta:
    """How long a claim may live: its call's timeout, the record retries, a grace period.

    Without a message: the shortest any claim can have (the smallest timeout is one second).
    """
    timeout = (message.timeout_seconds or settings.WEBHOOK_TIMEOUT_SECONDS) if message else 1
    return timedelta(seconds=timeout + settings.DELIVERY_RECORD_RETRY_SECONDS + settings.DELIVERY_CLAIM_GRACE_SECONDS)
