"""Claims due messages, records each attempt's outcome, gives back and recovers claims.

A claim (status `sending`, a claim token, `claimed_at` on the database's clock) makes one
worker the owner of a message's next call. The worker renews `claimed_at` for as long as it
holds the claim (messages.delivery_engine), so only a claim its worker stopped renewing grows
stale; `recover_stale_claims` then counts the call as lost. `record_attempts` only finishes a
message under the claim it was sent with, and never raises: what a receiver answered cannot
stop its own record, let alone another message's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID, uuid4

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from messages import message_states, metrics
from messages.clock import database_now
from messages.models import DeliveryAttempt, Message, MessageStatus
from messages.queueing import enqueue_after_commit, is_imminent
from messages.retry_policy import RetryDecision, Verdict, decide_after_attempt
from messages.webhook_client import WebhookCall, WebhookResult, duration_ms

logger = logging.getLogger(__name__)

WORKER_LOST = "WorkerLost"
# Set by an operator on a message whose stale claim recovery could not record.
RELEASED_STUCK = "ReleasedStuck"
# Errors of a database that is away (or locked past the bound): worth waiting for.
DATABASE_AWAY = (OperationalError, InterfaceError)


def lease_clock() -> float:
    """Seconds on a clock that never jumps and keeps counting while the host is suspended:
    a lease judged on CLOCK_MONOTONIC would look fresh after a suspend of any length."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


@dataclass(frozen=True)
class Claim:
    token: UUID
    messages: list[Message]
    # lease_clock() just before the claim was written: the lease began no earlier.
    started_at: float


def deliver_messages(message_pks: Sequence[int]) -> None:
    """Claims, sends and records in this thread, waiting for every call: for tests and
    direct callers. Workers hand their tasks to the process's delivery engine instead."""
    from messages.delivery_engine import engine

    engine().deliver_in_this_thread(message_pks)


def claim_window() -> timedelta:
    """How far ahead a task claims: its start lead and its group's window."""
    return timedelta(milliseconds=settings.DELIVERY_CLAIM_LEAD_MS + settings.DELIVERY_GROUP_WINDOW_MS)


def claim_messages(message_pks: Sequence[int], *, now: datetime, within: timedelta = timedelta(0)) -> Claim:
    """Claims the messages due by `now + within` (a group's window); none is sent before its time."""
    token = uuid4()
    started = lease_clock()
    claimed_count = message_states.claim(message_pks, token=token, due_by=now + within)
    if claimed_count < len(message_pks):
        # Some were not claimed: gone, not yet due, or past their expires_at, which end here.
        message_states.expire(message_pks)
    messages = list(Message.objects.filter(pk__in=message_pks, claim_token=token)) if claimed_count else []
    return Claim(token=token, messages=messages, started_at=started)


def claim_due_messages(message_pks: Sequence[int], *, now: datetime, within: timedelta = timedelta(0)) -> list[Message]:
    return claim_messages(message_pks, now=now, within=within).messages


RENEW_BATCH = 500  # tokens per statement: far below SQLite's limit on bound variables


def renew_claims(tokens: Sequence[UUID]) -> set[UUID]:
    """Moves the claims' `claimed_at` to the database's now: their worker is alive and on them.
    Returns the tokens that still hold a message: a claim recovered meanwhile is not among
    them, and its worker must not call. The status index narrows each statement to the
    messages in flight."""
    renewed: set[UUID] = set()
    with bounded_transaction():
        for start in range(0, len(tokens), RENEW_BATCH):
            held = message_states.renew(tokens[start : start + RENEW_BATCH])
            # Never None: the filter names the tokens.
            renewed.update(token for token in held.values_list("claim_token", flat=True).distinct() if token is not None)
    return renewed


def expire_claims(messages: Sequence[Message]) -> int:
    """Ends claims whose call was not made because the message's expires_at came first."""
    expired = 0
    with bounded_transaction():
        for message in messages:
            expired += message_states.expire_claimed(message)
    return expired


def release_claims(messages: Sequence[Message]) -> int:
    """Gives back claims whose call was never made (a stopping worker, a lease it could not
    renew): the message waits again as it did, due at the same moment, and no attempt counts.
    Beat enqueues it again on its next tick."""
    released = 0
    with bounded_transaction():
        for message in messages:
            released += message_states.release(message)
    return released


@contextmanager
def bounded_transaction() -> Iterator[None]:
    """A transaction no statement of which waits longer than DELIVERY_DATABASE_TIMEOUT_SECONDS:
    a worker recording or renewing must give up (and try again) well within a claim's grace,
    rather than sit in SQLite's busy wait or behind a PostgreSQL lock while its claims age."""
    milliseconds = int(settings.DELIVERY_DATABASE_TIMEOUT_SECONDS * 1000)
    if connection.vendor != "sqlite":
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL statement_timeout = {milliseconds}")
                    cursor.execute(f"SET LOCAL lock_timeout = {milliseconds}")
            yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        configured = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
    try:
        with transaction.atomic():
            yield
    finally:
        # The connection's own timeout again (the settings' 20 s) for whatever it does next.
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {int(configured)}")


def webhook_call(message: Message) -> WebhookCall:
    """The call for a message; signed when it is sent, not before its moment."""
    return WebhookCall(
        url=message.webhook_url,
        body=message.payload_json.encode(),
        message_id=message.message_id,
        delivery_id=message.delivery_id or "",
        timeout_seconds=message.timeout_seconds or settings.WEBHOOK_TIMEOUT_SECONDS,
        extra_headers=message.headers,
        not_before=message.due_at,
    )


@dataclass(frozen=True)
class AttemptOutcome:
    message: Message
    result: WebhookResult
    decision: RetryDecision
    number: int
    # Recovery's: recorded only if the claim was not renewed since (checked under the row lock).
    claimed_before: datetime | None = None


def record_attempt(message: Message, result: WebhookResult, *, now: datetime | None = None) -> RetryDecision:
    return record_attempts([(message, result)], now=now)[0]


def record_attempts(
    calls: Sequence[tuple[Message, WebhookResult]],
    *,
    now: datetime | None = None,
    claimed_before: datetime | None = None,
) -> list[RetryDecision]:
    """Stores each attempt and moves each message on: delivered, retrying or failed.

    The calls are recorded in one transaction (one commit, however many messages); if that
    fails for any reason but the database being away, message by message, and a row that
    still fails gets a minimal record. With `claimed_before` (recovery's), a claim renewed since
    then is left to its worker. Never raises: the calls were made, and an exception
    here would leave them claimed, to be recovered and sent a second time.
    """
    now = now or timezone.now()
    outcomes = [_decide(message, result, now=now, claimed_before=claimed_before) for message, result in calls]
    recorded = _store_isolated(outcomes, now=now) if outcomes else set()
    for outcome in outcomes:
        if outcome.message.pk in recorded:
            _log_attempt(outcome)
        else:
            logger.warning("message %s: its attempt was not recorded (claim lost or database away)", outcome.message.message_id)
    metrics.count_attempts_in_background(
        metrics.AttemptSample(
            verdict=outcome.decision.verdict.value,
            result_class=_result_class(outcome.result),
            duration_seconds=outcome.result.duration_ms / 1000,
            lateness_seconds=_first_attempt_lateness(outcome),
        )
        for outcome in outcomes
        if outcome.message.pk in recorded
    )
    return [outcome.decision for outcome in outcomes]


def _decide(message: Message, result: WebhookResult, *, now: datetime, claimed_before: datetime | None = None) -> AttemptOutcome:
    number = message.attempt_count + 1
    try:
        decision = _decide_after(message, result, number=number, now=now)
    except Exception:
        # The policy reads what the receiver sent (Retry-After); whatever slips past its
        # parsing costs this message its server-given delay, never its record.
        logger.exception("message %s: retry policy failed on its result; deciding without Retry-After", message.message_id)
        decision = _decide_after(message, dataclasses.replace(result, retry_after=None), number=number, now=now)
    return AttemptOutcome(message=message, result=result, decision=decision, number=number, claimed_before=claimed_before)


def _decide_after(message: Message, result: WebhookResult, *, number: int, now: datetime) -> RetryDecision:
    return decide_after_attempt(
        result=result,
        attempt_number=number - message.attempt_count_at_resend,
        max_attempts=message.max_attempts or settings.WEBHOOK_MAX_ATTEMPTS,
        retry_schedule=settings.WEBHOOK_RETRY_SCHEDULE,
        now=now,
        expires_at=message.expires_at,
    )


def _store_isolated(outcomes: Sequence[AttemptOutcome], *, now: datetime, deadline: float | None = None) -> set[int]:
    """Returns the pks recorded. A batch is an optimisation, never a shared fate; one
    deadline for the database's return serves the batch and its fallbacks together."""
    if deadline is None:
        deadline = time.monotonic() + settings.DELIVERY_RECORD_RETRY_SECONDS
    try:
        return _store_attempts_patiently(outcomes, now=now, deadline=deadline)
    except DATABASE_AWAY as error:
        logger.error("%d attempts not recorded, database away past DELIVERY_RECORD_RETRY_SECONDS: %s", len(outcomes), error)
        return set()
    except Exception:
        if len(outcomes) == 1:
            return _store_minimal(outcomes[0], now=now, deadline=deadline)
        logger.exception("recording %d attempts together failed; recording them one by one", len(outcomes))
    recorded: set[int] = set()
    for outcome in outcomes:
        recorded |= _store_isolated([outcome], now=now, deadline=deadline)
    return recorded


def _store_minimal(outcome: AttemptOutcome, *, now: datetime, deadline: float) -> set[int]:
    """The row failed with everything the receiver sent: keep only what we wrote ourselves."""
    logger.exception("message %s: recording its attempt failed; recording it without the response", outcome.message.message_id)
    minimal = dataclasses.replace(
        outcome,
        result=dataclasses.replace(
            outcome.result,
            response_excerpt="",
            retry_after=None,
            error=outcome.result.error.encode("ascii", "replace").decode()[:200],
        ),
    )
    try:
        return _store_attempts_patiently([minimal], now=now, deadline=deadline)
    except Exception:
        # Left claimed: recovery counts it as lost, and /health lists it if that fails too.
        logger.exception("message %s: even a minimal record failed", outcome.message.message_id)
        return set()


def _first_attempt_lateness(outcome: AttemptOutcome) -> float | None:
    if outcome.number != 1:
        return None
    return (outcome.result.started_at - outcome.message.schedule_to).total_seconds()


def _store_attempts_patiently(outcomes: Sequence[AttemptOutcome], *, now: datetime, deadline: float) -> set[int]:
    """Retries through a database outage until `deadline` (monotonic): giving up leaves sent
    messages claimed, and their recovery would send them a second time. Returns the pks recorded."""
    delay = 0.1
    while True:
        try:
            return _store_attempts(outcomes, now=now)
        except DATABASE_AWAY as error:
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
    with bounded_transaction():
        for alike in _alike_outcomes(outcomes):
            first = alike[0]
            claims = {outcome.message.pk: outcome.message.claim_token for outcome in alike}
            still_claimed = (
                Message.objects.select_for_update()
                .filter(pk__in=claims, status=MessageStatus.SENDING)
                .values_list("pk", "claim_token")
            )
            if first.claimed_before is not None:
                still_claimed = still_claimed.filter(claimed_at__lt=first.claimed_before)
            pks = [pk for pk, token in still_claimed if token is not None and token == claims[pk]]
            if not pks:
                continue
            decision = first.decision
            retry_at = decision.retry_at if decision.verdict is Verdict.RETRY else None
            queue_now = retry_at is not None and is_imminent(retry_at, now=now)
            message_states.record_outcome(
                pks,
                status_code=first.result.status_code,
                error=first.result.error,
                retry_at=retry_at,
                finished=_finished_status(decision),
                now=now,
                enqueued_at=now if queue_now else None,
            )
            recorded.update(pks)
            if queue_now:
                # A retry always travels alone (_alike_outcomes): this is its message.
                enqueue_after_commit(first.message, due_at=retry_at, enqueued_at=now)
        DeliveryAttempt.objects.bulk_create(
            DeliveryAttempt(
                message_id=outcome.message.pk,
                number=outcome.number,
                due_at=outcome.message.due_at,
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
        if outcome.decision.verdict is Verdict.RETRY:
            key: tuple[object, ...] = ("retry", outcome.message.pk)
        else:
            key = (outcome.decision.verdict, outcome.result.status_code, outcome.result.error, outcome.claimed_before)
        alike.setdefault(key, []).append(outcome)
    return list(alike.values())


def _result_class(result: WebhookResult) -> str:
    return f"{result.status_code // 100}xx" if result.status_code is not None else result.error


FINISHED_BY_VERDICT: dict[Verdict, str | None] = {
    Verdict.RETRY: None,
    Verdict.DELIVERED: MessageStatus.DELIVERED,
    Verdict.FAILED: MessageStatus.FAILED,
    Verdict.EXPIRED: MessageStatus.EXPIRED,
}


def _finished_status(decision: RetryDecision) -> str | None:
    """The status an attempt ends the message in; None while it is retried."""
    return FINISHED_BY_VERDICT[decision.verdict]


def _log_attempt(outcome: AttemptOutcome) -> None:
    message, result, decision, number = outcome.message, outcome.result, outcome.decision, outcome.number
    if decision.verdict is Verdict.DELIVERED:
        logger.info("message %s delivered (%s, attempt %d)", message.message_id, result.summary, number)
    elif decision.verdict is Verdict.RETRY:
        retry_at = decision.retry_at.isoformat() if decision.retry_at is not None else "an unknown time"
        logger.warning(
            "message %s attempt %d failed (%s), retry at %s",
            message.message_id,
            number,
            result.summary,
            retry_at,
        )
    elif decision.verdict is Verdict.EXPIRED:
        logger.warning(
            "message %s attempt %d failed (%s); expired, its retry would come after its expiresAt",
            message.message_id,
            number,
            result.summary,
        )
    else:
        logger.error("message %s failed for good after attempt %d (%s)", message.message_id, number, result.summary)


def recover_stale_claims(*, now: datetime) -> int:
    """A claim not renewed within its lifetime means its worker is gone: the call counts as lost."""
    database_time = database_now()
    stale = _stale_claims(database_time)
    for message, claimed_at, cutoff in stale:
        lost = WebhookResult(
            started_at=claimed_at,
            duration_ms=duration_ms((database_time - claimed_at).total_seconds()),
            error=WORKER_LOST,
        )
        record_attempts([(message, lost)], now=now, claimed_before=cutoff)
    return len(stale)


def stuck_claims() -> list[Message]:
    """Stale claims that recovery should have cleared a recovery period ago and did not:
    for /health and the admin, where an operator can release them."""
    return [stale.message for stale in _stale_claims(database_now(), margin=_stuck_margin())]


def release_stuck_claims(message_pks: Sequence[int], *, now: datetime) -> int:
    """An operator's last resort: the message is marked failed (its fate unknown, no attempt
    recorded), so that it can be looked at and retried by hand."""
    selected = set(message_pks)
    released = 0
    for message, _claimed_at, cutoff in _stale_claims(database_now(), margin=_stuck_margin()):
        if message.pk not in selected:
            continue
        released += message_states.release_stuck(message, cutoff=cutoff, now=now, reason=RELEASED_STUCK)
    return released


class StaleClaim(NamedTuple):
    message: Message
    claimed_at: datetime
    cutoff: datetime


def _stale_claims(database_time: datetime, *, margin: timedelta = timedelta(0)) -> list[StaleClaim]:
    """Claims in flight not renewed since their cutoff (their lifetime and `margin` before
    `database_time`), each with its `claimed_at` and that cutoff. Both sides of the test are the database's clock
    (claimed_at is written by it), so two hosts' clocks never meet here. Messages in flight
    are few, so each one's own timeout is applied in Python, not in SQL."""
    candidates = Message.objects.filter(
        status=MessageStatus.SENDING, claimed_at__lt=database_time - _claim_lifetime(None) - margin
    ).defer("payload_json")
    stale = []
    for message in candidates:
        cutoff = database_time - _claim_lifetime(message) - margin
        # Never None here: the filter compares it, and a message in flight always has one.
        if message.claimed_at is not None and message.claimed_at < cutoff:
            stale.append(StaleClaim(message, message.claimed_at, cutoff))
    return stale


def _stuck_margin() -> timedelta:
    return timedelta(seconds=settings.SCHEDULER_RECOVERY_SECONDS)


def _claim_lifetime(message: Message | None) -> timedelta:
    """How long a claim lives after its last renewal: its call's timeout (a call started just
    before a renewal was missed), the record retries, and a grace period.

    Without a message: the shortest any claim can have (the smallest timeout is one second).
    """
    timeout = (message.timeout_seconds or settings.WEBHOOK_TIMEOUT_SECONDS) if message else 1
    return timedelta(seconds=timeout + settings.DELIVERY_RECORD_RETRY_SECONDS + settings.DELIVERY_CLAIM_GRACE_SECONDS)
