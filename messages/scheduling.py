"""The operations on messages: schedule, cancel, retry, deliver now, look up, list.

The API, the admin actions and the management commands all go through these functions. Each
acts for one owner (the API key's id): an id belongs to its owner, and another owner's message
is not found, as if it did not exist. The one exception is cancel_matching, the admin's, which
takes a queryset of any owner's messages that ops staff filtered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from messages import message_states, redis_keys
from messages.confidential import seal_headers
from messages.identifiers import new_delivery_id
from messages.listing import NO_FILTER, MessageFilter
from messages.models import (
    HISTORY_STATUSES,
    ID_HOLDING_STATUSES,
    PENDING_STATUSES,
    WAITING_STATUSES,
    Message,
    MessageStatus,
    prepared_rows,
)
from messages.queueing import enqueue_after_commit, enqueue_many_after_commit, is_imminent


class MessageIdTaken(Exception):
    """The owner has another message with this id scheduled, retrying, in flight or failed."""


class MessageNotFound(Exception):
    """The owner has no message with this id waiting, failed or (for lookups) kept as history."""


class MessageInFlight(Exception):
    """The webhook is being called right now: it can no longer be cancelled or changed."""


class MessageNotFailed(Exception):
    """Only a failed message can be retried."""


class MessageFinished(Exception):
    """A delivered or failed message cannot be changed (a failed one is sent again by retry)."""


class VersionMismatch(Exception):
    """The message changed since the version the client names (If-Match)."""


class ExpiresBeforeNextAttempt(Exception):
    """An edit would leave expiresAt at or before the message's next attempt: it could never be sent."""


# An edit's expires_at when the client leaves it as it is (None clears it).
UNCHANGED: Any = object()


# How often an edit reads again after losing its guarded write to a claim, an attempt or another
# edit without If-Match; each retry sees the winner's change, so a second loss is rare.
EDIT_ATTEMPTS = 3


@dataclass(frozen=True)
class NewMessage:
    """A message a client asks for, its fields validated."""

    message_id: str
    schedule_to: datetime
    webhook_url: str
    payload_json: str
    time_zone: str = ""  # the zone schedule_to was given in, if it was given in local time
    headers: dict[str, str] | None = None
    max_attempts: int | None = None
    timeout_seconds: int | None = None
    expires_at: datetime | None = None


def _new_row(owner_id: int, new: NewMessage, *, now: datetime) -> dict[str, Any]:
    """The fields of a message just accepted; marked enqueued when it is due too soon to leave to
    beat (anything later costs one INSERT: beat enqueues it with the others due with it)."""
    return {
        "owner_id": owner_id,
        "message_id": new.message_id,
        "delivery_id": new_delivery_id(),
        "schedule_to": new.schedule_to,
        "time_zone": new.time_zone,
        **message_states.scheduled_fields(
            due_at=new.schedule_to, enqueued_at=now if is_imminent(new.schedule_to, now=now) else None
        ),
        "webhook_url": new.webhook_url,
        "payload_json": new.payload_json,
        "payload_bytes": len(new.payload_json.encode()),
        "headers_sealed": seal_headers(new.headers or {}),
        "max_attempts": new.max_attempts,
        "timeout_seconds": new.timeout_seconds,
        "expires_at": new.expires_at,
        "created_at": now,
    }


def schedule_message(*, owner_id: int, new: NewMessage, now: datetime | None = None) -> Message:
    now = now or timezone.now()
    message = Message(**_new_row(owner_id, new, now=now))
    # Made and prepared before the transaction: on SQLite it holds the one write lock.
    values = Message.objects.insert_values(message)
    try:
        with transaction.atomic():
            Message.objects.insert(message, values=values)
            if message.enqueued_at is not None:
                enqueue_after_commit(message)
    except IntegrityError:
        # The id's uniqueness, or something else (an owner that is gone): only the first is a 409.
        if Message.objects.owned_by(owner_id).holding_id(new.message_id).exists():
            raise MessageIdTaken(new.message_id) from None
        raise
    return message


# A batch checks which ids are free, then inserts; a concurrent create (another batch, a POST)
# may take one in between, and the INSERT then fails (PostgreSQL; SQLite's write transactions
# queue, so none comes between). The batch is tried again, and each retry finds that id taken:
# it goes on while retries find more ids taken, and gives up after this many in a row that do
# not (an IntegrityError with another cause: an owner that is gone).
BATCH_ATTEMPTS_WITHOUT_PROGRESS = 3
# Ids per query when a batch looks for those already held.
ID_LOOKUP_CHUNK = 500


def schedule_messages(
    *, owner_id: int, new_messages: Sequence[NewMessage], now: datetime | None = None
) -> list[NewMessage | MessageIdTaken]:
    """Schedules the messages whose ids are free, all in one transaction: all of them or none.
    For each, in order, the message scheduled or MessageIdTaken (the owner holds the id, or an
    earlier message of the batch took it)."""
    now = now or timezone.now()
    # Made and prepared before the transaction: on SQLite it holds the one write lock.
    rows = [_new_row(owner_id, new, now=now) for new in new_messages]
    prepared = prepared_rows(rows)
    ids = [new.message_id for new in new_messages]
    most_taken, without_progress = -1, 0
    while True:
        taken: set[str] = set()
        try:
            with transaction.atomic():
                taken = _held_ids(owner_id, ids)
                return _schedule_all_free(new_messages, ids, rows, prepared, taken, now=now)
        except IntegrityError:
            if len(taken) > most_taken:
                most_taken, without_progress = len(taken), 0
            without_progress += 1
            if without_progress >= BATCH_ATTEMPTS_WITHOUT_PROGRESS:
                raise


def _held_ids(owner_id: int, ids: list[str]) -> set[str]:
    owned = Message.objects.owned_by(owner_id)
    return {
        message_id
        for start in range(0, len(ids), ID_LOOKUP_CHUNK)
        for message_id in owned.holding_id_in(ids[start : start + ID_LOOKUP_CHUNK]).values_list("message_id", flat=True)
    }


def _schedule_all_free(
    new_messages: Sequence[NewMessage],
    ids: list[str],
    rows: list[dict[str, Any]],
    prepared: list[tuple[Any, ...]],
    taken: set[str],
    *,
    now: datetime,
) -> list[NewMessage | MessageIdTaken]:
    taken = set(taken)
    results: list[NewMessage | MessageIdTaken] = []
    accepted: list[int] = []
    for index, new in enumerate(new_messages):
        if new.message_id in taken:
            results.append(MessageIdTaken(new.message_id))
        else:
            taken.add(new.message_id)
            results.append(new)
            accepted.append(index)
    # In the order of their ids: two batches taking some of the same ids then wait for each
    # other in the unique index instead of deadlocking (PostgreSQL), whatever their own orders.
    accepted.sort(key=lambda index: ids[index])
    Message.objects.insert_prepared([prepared[index] for index in accepted])
    imminent = {rows[index]["delivery_id"]: rows[index] for index in accepted if rows[index]["enqueued_at"] is not None}
    if imminent:
        pks = Message.objects.filter(delivery_id__in=list(imminent)).values_list("delivery_id", "pk")
        enqueue_many_after_commit(
            [
                (pk, imminent[delivery_id]["message_id"], imminent[delivery_id]["due_at"], imminent[delivery_id]["payload_bytes"])
                for delivery_id, pk in pks
            ],
            enqueued_at=now,
        )
    return results


def _locked_message(owner_id: int, message_id: str, *, allow_in_flight: bool = False) -> Message:
    """Inside a transaction: locked, so a worker's claim either came first or finds it changed."""
    message = Message.objects.select_for_update().owned_by(owner_id).holding_id(message_id).first()
    if message is None:
        raise MessageNotFound(message_id)
    if message.status == MessageStatus.SENDING and not allow_in_flight:
        raise MessageInFlight(message_id)
    return message


def cancel_message(*, owner_id: int, message_id: str) -> None:
    with transaction.atomic():
        message = _locked_message(owner_id, message_id)
        pk = message.pk
        message_states.cancel(message)
    redis_keys.revoke_task_of(pk)


# Rows per transaction of a bulk cancel: each batch holds its locks only for its own statements.
CANCEL_BATCH = 500


@dataclass(frozen=True)
class BulkCancel:
    cancelled: int
    in_flight: list[str]  # the ids being sent, which no cancel can stop any more


def cancel_messages(
    *, owner_id: int, message_ids: list[str] | None = None, status: str | None = None, narrowed_by: MessageFilter = NO_FILTER
) -> BulkCancel:
    """Cancels the owner's messages with these ids, or those that match `status` and the filter
    (by default all that hold an id: waiting, sending, failed), in batches: bounded memory and
    short transactions at any number. Those being sent are reported, not cancelled."""
    owned = Message.objects.owned_by(owner_id)
    if message_ids is not None:
        return _cancel_walks([(owned.holding_id_in(message_ids), "pk")])
    statuses = [status] if status else list(ID_HOLDING_STATUSES)
    return _cancel_walks(_walks_along_indexes(narrowed_by.apply(owned), statuses))


def cancel_matching(*, matching: QuerySet[Message]) -> BulkCancel:
    """Cancels every message in `matching`, a queryset already filtered (the admin's list, of
    every owner), that is waiting or failed, in batches like cancel_messages. Delivered history
    in it is left alone; those being sent are reported, not cancelled."""
    return _cancel_walks(_walks_along_indexes(matching, ID_HOLDING_STATUSES))


def _walks_along_indexes(matching: QuerySet[Message], statuses: Sequence[str]) -> list[tuple[QuerySet[Message], str]]:
    """The rows of `matching` in `statuses`, split by the index that serves each walk: due_at for
    pending ones, finished_at for failed ones."""
    pending = [name for name in statuses if name in PENDING_STATUSES]
    walks: list[tuple[QuerySet[Message], str]] = []
    if pending:
        walks.append((matching.filter(status__in=pending, due_at__isnull=False), "due_at"))
    if MessageStatus.FAILED in statuses:
        walks.append((matching.filter(status=MessageStatus.FAILED, finished_at__isnull=False), "finished_at"))
    return walks


def _cancel_walks(walks: list[tuple[QuerySet[Message], str]]) -> BulkCancel:
    cancelled, in_flight = 0, list[str]()
    for matching, order_field in walks:
        for batch in _in_batches(matching, order_field):
            with transaction.atomic():
                gone = set(message_states.cancel_many([pk for pk, _ in batch], still_matching=matching))
            cancelled += len(gone)
            left = [pk for pk, _ in batch if pk not in gone]
            if left:
                in_flight += Message.objects.filter(pk__in=left, status=MessageStatus.SENDING).values_list("message_id", flat=True)
    return BulkCancel(cancelled=cancelled, in_flight=in_flight)


def _in_batches(matching: QuerySet[Message], order_field: str) -> Iterator[list[tuple[int, str]]]:
    """(pk, message_id) of the matching rows, CANCEL_BATCH at a time, walked in the order of the
    index that serves the filter: (owner, due_at, id) for pending ones, (status, finished_at) for
    failed ones. The `>=` on the order field lets the database start each batch where the last
    ended; walking by pk alone made SQLite read the owner's rows from the start each time."""
    after: tuple[Any, int] | None = None
    while True:
        queryset = matching
        if after is not None:
            moment, pk = after
            if order_field == "pk":
                queryset = queryset.filter(pk__gt=pk)
            else:
                queryset = queryset.filter(**{f"{order_field}__gte": moment}).filter(
                    Q(**{f"{order_field}__gt": moment}) | Q(**{order_field: moment, "pk__gt": pk})
                )
        fields = ("pk", "message_id") if order_field == "pk" else ("pk", "message_id", order_field)
        rows = list(queryset.order_by(*dict.fromkeys((order_field, "pk"))).values_list(*fields)[:CANCEL_BATCH])
        if not rows:
            return
        last = rows[-1]
        after = (last[2] if order_field != "pk" else None, last[0])
        yield [(row[0], row[1]) for row in rows]


def retry_message(
    *,
    owner_id: int,
    message_id: str,
    schedule_to: datetime | None = None,
    expires_at: datetime | None = UNCHANGED,
    now: datetime | None = None,
) -> Message:
    """Sends a failed message again, now or at `schedule_to`, with a fresh set of attempts;
    `expires_at` replaces its expiry (None clears it), which must come after that attempt."""
    now = now or timezone.now()
    with transaction.atomic():
        message = _locked_message(owner_id, message_id, allow_in_flight=True)
        if message.status != MessageStatus.FAILED:
            raise MessageNotFailed(message_id)
        plan = {} if expires_at is UNCHANGED else {"expires_at": expires_at}
        _reschedule(message, due_at=schedule_to or now, now=now, status=MessageStatus.SCHEDULED, plan=plan)
    return message


def deliver_message_now(*, owner_id: int, message_id: str, now: datetime | None = None) -> Message:
    """Moves a waiting or failed message's next attempt to this moment."""
    now = now or timezone.now()
    with transaction.atomic():
        message = _locked_message(owner_id, message_id)
        status = message.status if message.status in WAITING_STATUSES else MessageStatus.SCHEDULED
        _reschedule(message, due_at=now, now=now, status=status)
    return message


def _refuse_expiry_not_after(message: Message, expires_at: datetime | None, *, next_attempt: datetime | None) -> None:
    """The message's next attempt must start before its expiry: one at or after it is never made."""
    if expires_at is not None and next_attempt is not None and expires_at <= next_attempt:
        raise ExpiresBeforeNextAttempt(message.message_id)


def _reschedule(message: Message, *, due_at: datetime, now: datetime, status: str, plan: dict[str, Any] | None = None) -> None:
    _refuse_expiry_not_after(message, (plan or {}).get("expires_at", message.expires_at), next_attempt=due_at)
    queue_now = is_imminent(due_at, now=now)
    message_states.reschedule(message, due_at=due_at, enqueued_at=now if queue_now else None, status=status, plan=plan)
    if queue_now:
        enqueue_after_commit(message)


def edit_message(
    *,
    owner_id: int,
    message_id: str,
    expected_version: int | None = None,
    schedule_to: datetime | None = None,
    time_zone: str = "",
    webhook_url: str | None = None,
    payload_json: str | None = None,
    headers: dict[str, str] | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
    expires_at: datetime | None = UNCHANGED,
    now: datetime | None = None,
) -> Message:
    """Changes a waiting message in place: its delivery id and history stay. Moved later, it is
    not sent at its old time (a task queued for then finds it not yet due); moved into the past,
    it is queued at once, as a POST would be. `expected_version`: only if it is still that one.
    `time_zone`: the zone `schedule_to` was given in, if any. `expires_at`: None clears it; it
    must stay after the next attempt (ExpiresBeforeNextAttempt)."""
    now = now or timezone.now()
    changes: dict[str, object] = {}
    if webhook_url is not None:
        changes["webhook_url"] = webhook_url
    if payload_json is not None:
        changes.update(payload_json=payload_json, payload_bytes=len(payload_json.encode()))
    if headers is not None:
        changes["headers_sealed"] = seal_headers(headers)
    if max_attempts is not None:
        changes["max_attempts"] = max_attempts
    if timeout_seconds is not None:
        changes["timeout_seconds"] = timeout_seconds
    if expires_at is not UNCHANGED:
        changes["expires_at"] = expires_at
    queue_now = schedule_to is not None and is_imminent(schedule_to, now=now)
    if schedule_to is not None:
        # The zone it was given in, or none: a zone kept from before would describe another time.
        changes.update(schedule_to=schedule_to, time_zone=time_zone)
    for _ in range(EDIT_ATTEMPTS):
        with transaction.atomic():
            message = _editable_message(owner_id, message_id, expected_version)
            expiry = message.expires_at if expires_at is UNCHANGED else expires_at
            _refuse_expiry_not_after(message, expiry, next_attempt=schedule_to or message.due_at)
            # Read before the change commits: once it has, beat may queue the message again under
            # a new task id, which a revoke after the commit must not take for the old one.
            old_task_id = redis_keys.task_id_of(message.pk) if schedule_to is not None and not queue_now else None
            edited = message_states.edit(message, changes=changes, due_at=schedule_to, enqueued_at=now if queue_now else None)
            if edited and queue_now:
                enqueue_after_commit(message)
        if edited:
            if old_task_id is not None:
                # Its old task, if alone, need not run; one that runs finds the message not yet
                # due. Beat queues it again within the horizon of its new time.
                redis_keys.revoke_task(message.pk, old_task_id)
            return message
    raise MessageInFlight(message_id)


def _editable_message(owner_id: int, message_id: str, expected_version: int | None) -> Message:
    try:
        message = _locked_message(owner_id, message_id)
    except MessageNotFound:
        if Message.objects.owned_by(owner_id).filter(message_id=message_id, status__in=HISTORY_STATUSES).exists():
            raise MessageFinished(message_id) from None
        raise
    if message.status == MessageStatus.FAILED:
        raise MessageFinished(message_id)
    if expected_version is not None and message.version != expected_version:
        raise VersionMismatch(message_id)
    return message


def find_message(*, owner_id: int, message_id: str) -> Message:
    """The owner's message holding this id, else its latest delivered one still kept as history."""
    owned = Message.objects.owned_by(owner_id).prefetch_related("attempts")
    message = (
        owned.holding_id(message_id).first()
        or owned.filter(message_id=message_id, status__in=HISTORY_STATUSES).order_by("-created_at").first()
    )
    if message is None:
        raise MessageNotFound(message_id)
    return message
