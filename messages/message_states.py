"""The message state machine: every write of a message's state fields is a transition here.

    scheduled ──claim──▶ sending ──record──▶ delivered
        ▲  ▲                │  │ └──record──▶ retrying ──claim──▶ sending
        │  └────release─────┘  └──record / release_stuck──▶ failed
        └──────────────── reschedule (retry, deliver now) ◀──────────┘
    scheduled, retrying ──edit──▶ (the same), its plan or its next attempt changed
    scheduled, retrying ──expire──▶ expired ◀──expire_claimed / record── sending

The invariants, enforced by the database (models.STATE_INVARIANTS, migration 0006):
- `due_at` is set exactly while a message is pending (scheduled, retrying, sending);
- `finished_at` is set exactly once it is delivered or failed;
- `claim_token` and `claimed_at` are set exactly while it is being sent;
- `enqueued_at` (a task waits in the broker) is set only while it waits (scheduled, retrying).

Each transition is one guarded UPDATE (or INSERT, DELETE), so that two actors racing for the
same message (two workers, a worker and a cancel) cannot both win: the guard names the state the
transition starts from, and the row count says who did.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import F, QuerySet
from django.db.models.functions import Now

from messages.models import WAITING_STATUSES, DeliveryAttempt, Message, MessageStatus

# The fields only this module writes.
STATE_FIELDS = frozenset(
    {
        "status",
        "due_at",
        "enqueued_at",
        "claimed_at",
        "claim_token",
        "finished_at",
        "attempt_count",
        "attempt_count_at_resend",
        "last_status_code",
        "last_error",
        "version",
    }
)
# What every transition a client can see adds (Message.version: the ETag).
NEXT_VERSION = F("version") + 1

# --- Creation -------------------------------------------------------------------------------


def scheduled_fields(*, due_at: datetime, enqueued_at: datetime | None) -> dict[str, Any]:
    """The state of a message just accepted: waiting for `due_at`, its task queued or not yet."""
    return {"status": MessageStatus.SCHEDULED, "due_at": due_at, "enqueued_at": enqueued_at}


# --- Waiting: the broker's side --------------------------------------------------------------


def mark_enqueued(message_pks: Iterable[int], *, now: datetime) -> int:
    """Their tasks are about to be sent: marked first, so a crash in between leaves them to the
    recovery rule (enqueued long ago and still not sent), never lost."""
    return Message.objects.filter(pk__in=list(message_pks), status__in=WAITING_STATUSES).update(enqueued_at=now)


def forget_enqueued(message_pks: Iterable[int] | None = None, *, enqueued_at: datetime | None = None) -> int:
    """Their tasks never reached the broker, or the broker lost them: the dispatcher sends them
    again. Without pks: every queued message (Redis came back empty). With `enqueued_at`: only
    if no later enqueue has marked it since."""
    queryset: QuerySet[Message] = Message.objects.queued()
    if message_pks is not None:
        queryset = queryset.filter(pk__in=list(message_pks))
    if enqueued_at is not None:
        queryset = queryset.filter(enqueued_at=enqueued_at)
    return queryset.update(enqueued_at=None)


# --- Sending ----------------------------------------------------------------------------------


def claim(message_pks: Iterable[int], *, token: UUID, due_by: datetime) -> int:
    """waiting → sending, for those due by `due_by` and not expired, under `token`, on the
    database's clock."""
    return (
        Message.objects.filter(pk__in=list(message_pks))
        .waiting_until(due_by)
        .exclude(expires_at__lte=Now())
        .update(status=MessageStatus.SENDING, claimed_at=Now(), claim_token=token, enqueued_at=None, version=NEXT_VERSION)
    )


EXPIRED_ERROR = "Expired: its expiresAt came before the attempt could start."


def expire(message_pks: Iterable[int]) -> int:
    """waiting → expired, for those whose expires_at has come (the database's clock): the
    attempt they wait for would start after it."""
    return Message.objects.filter(pk__in=list(message_pks), status__in=WAITING_STATUSES, expires_at__lte=Now()).update(
        status=MessageStatus.EXPIRED,
        due_at=None,
        enqueued_at=None,
        finished_at=Now(),
        last_error=EXPIRED_ERROR,
        version=NEXT_VERSION,
    )


def expire_claimed(message: Message) -> int:
    """sending → expired, for a claim whose call was not made because expires_at came first."""
    return Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING, claim_token=message.claim_token).update(
        status=MessageStatus.EXPIRED,
        claim_token=None,
        claimed_at=None,
        due_at=None,
        finished_at=Now(),
        last_error=EXPIRED_ERROR,
        version=NEXT_VERSION,
    )


def renew(tokens: Iterable[UUID]) -> QuerySet[Message]:
    """Moves the claims' `claimed_at` to the database's now; returns the messages still held."""
    held = Message.objects.filter(status=MessageStatus.SENDING, claim_token__in=list(tokens))
    held.update(claimed_at=Now())
    return held


def release(message: Message) -> int:
    """sending → waiting again, as before the claim (no attempt counts): the call was never made."""
    waiting = MessageStatus.RETRYING if message.attempt_count > message.attempt_count_at_resend else MessageStatus.SCHEDULED
    return Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING, claim_token=message.claim_token).update(
        status=waiting, claim_token=None, claimed_at=None, enqueued_at=None, version=NEXT_VERSION
    )


def record_outcome(
    message_pks: list[int],
    *,
    status_code: int | None,
    error: str,
    retry_at: datetime | None,
    finished: str | None,
    now: datetime,
    enqueued_at: datetime | None = None,
) -> int:
    """sending → retrying at `retry_at`, or → `finished` (delivered, failed, expired: its retry
    would come after expires_at), one attempt more.
    The caller has locked the rows and checked their claims."""
    if finished is None:
        if retry_at is None:  # not an assert: `python -O` would drop it, and the row's due_at with it
            raise ValueError("a message retried needs its retry_at")
        moved: dict[str, Any] = {"status": MessageStatus.RETRYING, "due_at": retry_at, "enqueued_at": enqueued_at}
    else:
        moved = {"status": finished, "due_at": None, "enqueued_at": None, "finished_at": now}
    return Message.objects.filter(pk__in=message_pks, status=MessageStatus.SENDING).update(
        attempt_count=F("attempt_count") + 1,
        last_status_code=status_code,
        last_error=error,
        claimed_at=None,
        claim_token=None,
        version=NEXT_VERSION,
        **moved,
    )


def release_stuck(message: Message, *, cutoff: datetime, now: datetime, reason: str) -> int:
    """sending → failed, an operator's last resort for a claim recovery could not clear; its fate
    unknown, no attempt recorded. Guarded as recovery is: a claim renewed since is left alone."""
    return Message.objects.filter(
        pk=message.pk,
        status=MessageStatus.SENDING,
        claim_token=message.claim_token,
        claimed_at__lt=cutoff,
    ).update(
        status=MessageStatus.FAILED,
        claim_token=None,
        claimed_at=None,
        due_at=None,
        enqueued_at=None,
        finished_at=now,
        last_status_code=None,
        last_error=reason,
        version=NEXT_VERSION,
    )


# --- Changing plans ---------------------------------------------------------------------------


def reschedule(
    message: Message, *, due_at: datetime, enqueued_at: datetime | None, status: str, plan: dict[str, Any] | None = None
) -> None:
    """A waiting or failed message (locked by the caller) is due again at `due_at`; a failed one
    gets a fresh set of attempts, its earlier ones kept in the history. `plan`: fields of its
    plan changed with it (a retry's new expires_at)."""
    for name, value in (plan or {}).items():
        setattr(message, name, value)
    if message.status == MessageStatus.FAILED:
        message.attempt_count_at_resend = message.attempt_count
        message.finished_at = None
    message.status = status
    message.due_at = due_at
    message.enqueued_at = enqueued_at
    message.version += 1  # locked: no one else writes it meanwhile
    message.save(
        update_fields=["status", "due_at", "enqueued_at", "attempt_count_at_resend", "finished_at", "version", *(plan or {})]
    )


def edit(message: Message, *, changes: dict[str, Any], due_at: datetime | None, enqueued_at: datetime | None) -> bool:
    """A waiting message (read, by the caller, at `message.version`) takes `changes` (its plan:
    payload, URL, headers, limits) and, given `due_at`, a new next attempt. Guarded by the
    version read: False, and nothing changed, when a claim, an attempt or another edit came
    between. The message keeps its row, its delivery id and its history."""
    moved: dict[str, Any] = {} if due_at is None else {"due_at": due_at, "enqueued_at": enqueued_at}
    updated = Message.objects.filter(pk=message.pk, status__in=WAITING_STATUSES, version=message.version).update(
        **changes, **moved, version=NEXT_VERSION
    )
    if updated:
        for name, value in {**changes, **moved}.items():
            setattr(message, name, value)
        message.version += 1
    return bool(updated)


def cancel(message: Message) -> None:
    """A waiting or failed message (locked by the caller) is gone, as if never scheduled."""
    message.delete()


CANCELLABLE_STATUSES = (*WAITING_STATUSES, MessageStatus.FAILED)


def cancel_many(message_pks: list[int], *, still_matching: QuerySet[Message] | None = None) -> list[int]:
    """Those of the messages still waiting or failed (and still in `still_matching`, the caller's
    filter, read again under the lock) are gone; locked first, so no claim or edit comes between.
    Returns their pks. Attempts first, then the rows by pk in one statement."""
    candidates = Message.objects.all() if still_matching is None else still_matching.order_by()
    locked = list(
        candidates.select_for_update().filter(pk__in=message_pks, status__in=CANCELLABLE_STATUSES).values_list("pk", flat=True)
    )
    if locked:
        DeliveryAttempt.objects.filter(message_id__in=locked).delete()
        Message.objects.filter(pk__in=locked).delete_rows()
    return locked
