"""A scheduled webhook call and its delivery attempts: the source of truth for every message."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from django.db import connections, models, router
from django.db.models import Q
from django.db.models.sql import InsertQuery
from django.utils import timezone

from messages.confidential import open_headers, seal_headers
from messages.identifiers import new_delivery_id


class MessageStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Retrying"
    FAILED = "failed", "Failed"
    DELIVERED = "delivered", "Delivered"
    EXPIRED = "expired", "Expired"


# The longest timeoutSeconds a message may ask for.
TIMEOUT_SECONDS_MAX = 120

# Waiting for their time: a worker may claim them once `due_at` has come.
WAITING_STATUSES = (MessageStatus.SCHEDULED, MessageStatus.RETRYING)
# Still going to be sent: what GET /messages lists by default.
PENDING_STATUSES = (*WAITING_STATUSES, MessageStatus.SENDING)
# Hold their id: a POST with the same id gets 409 until they are delivered or deleted.
ID_HOLDING_STATUSES = (*PENDING_STATUSES, MessageStatus.FAILED)
# Finished for good and kept as history until pruned: the id is free again.
HISTORY_STATUSES = (MessageStatus.DELIVERED, MessageStatus.EXPIRED)
FINISHED_STATUSES = (*HISTORY_STATUSES, MessageStatus.FAILED)

# The state machine's invariants (messages/message_states.py makes every transition), checked by
# the database on every write.
STATE_INVARIANTS = [
    models.CheckConstraint(
        name="due_at_set_exactly_while_pending",
        condition=Q(status__in=PENDING_STATUSES, due_at__isnull=False) | (~Q(status__in=PENDING_STATUSES) & Q(due_at__isnull=True)),
    ),
    models.CheckConstraint(
        name="finished_at_set_exactly_once_finished",
        condition=Q(status__in=FINISHED_STATUSES, finished_at__isnull=False)
        | (~Q(status__in=FINISHED_STATUSES) & Q(finished_at__isnull=True)),
    ),
    models.CheckConstraint(
        name="claim_held_exactly_while_sending",
        condition=Q(status=MessageStatus.SENDING, claim_token__isnull=False, claimed_at__isnull=False)
        | (~Q(status=MessageStatus.SENDING) & Q(claim_token__isnull=True, claimed_at__isnull=True)),
    ),
    models.CheckConstraint(
        name="enqueued_only_while_waiting",
        condition=Q(enqueued_at__isnull=True) | Q(status__in=WAITING_STATUSES),
    ),
]


class MessageQuerySet(models.QuerySet["Message"]):
    def pending(self) -> MessageQuerySet:
        # due_at is set exactly while a message is pending, and its index serves this.
        return self.filter(due_at__isnull=False)

    def owned_by(self, owner_id: int) -> MessageQuerySet:
        return self.filter(owner_id=owner_id)

    def holding_id(self, message_id: str) -> MessageQuerySet:
        return self.filter(message_id=message_id, status__in=ID_HOLDING_STATUSES)

    def holding_id_in(self, message_ids: list[str]) -> MessageQuerySet:
        return self.filter(message_id__in=message_ids, status__in=ID_HOLDING_STATUSES)

    def queued(self) -> MessageQuerySet:
        """Messages whose task waits in the broker. enqueued_at is only ever set while a message
        waits (scheduled or retrying): a claim, a final outcome or a retry later than the
        horizon clears it. So no status test here: with one, SQLite (which keeps no statistics
        unless asked) reads the whole status index instead of the small partial index on
        enqueued_at, on every beat tick (docs/benchmarks.md)."""
        return self.filter(enqueued_at__isnull=False)

    def waiting_until(self, moment: datetime) -> MessageQuerySet:
        return self.filter(status__in=WAITING_STATUSES, due_at__lte=moment)

    def delete_rows(self) -> int:
        """Deletes these rows in one DELETE, without Django's collector, which fetches every row
        and deletes them 100 at a time (4.2 of 16 s of a bulk cancel of 50,000 on PostgreSQL:
        docs/benchmarks.md). Nothing cascades: the caller has deleted their attempts first."""
        return self._raw_delete(router.db_for_write(self.model))

    def insert(self, message: Message, values: list[Any] | None = None) -> None:
        """Saves a new message as create() would, without compiling the same INSERT each time.

        save() builds the statement afresh on every call (docs/benchmarks.md: what it costs).
        Here Django compiles it once per database, and each call only prepares the values,
        with the model's own fields (or takes those insert_values() prepared). Nothing else
        save() does applies to a new Message: it has no parent model, no relation to save
        first and no pre_save/post_save receiver.
        """
        alias = router.db_for_write(Message)
        statement = _insert_statement(alias)
        if statement is None:  # a database without INSERT ... RETURNING: the general way
            message.save(force_insert=True, using=alias)
            return
        connection = connections[alias]
        if values is None:
            values = self.insert_values(message)
        with connection.cursor() as cursor:
            cursor.execute(statement, values)
            returned = cursor.fetchone()
        for field, value in zip(Message._meta.db_returning_fields, returned, strict=True):
            setattr(message, field.attname, value)
        message._state.adding = False
        message._state.db = alias

    def insert_values(self, message: Message) -> list[Any]:
        """What insert() binds for `message`, prepared ahead: outside the transaction, which on
        SQLite holds the one write lock every process waits for."""
        connection = connections[router.db_for_write(Message)]
        return [field.get_db_prep_save(field.pre_save(message, True), connection) for field in _inserted_fields()]

    def insert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Saves new messages given as their field values by attname (prepared_rows says how),
        in one executemany of the statement insert() compiles, without RETURNING: look their
        pks up by delivery_id."""
        self.insert_prepared(prepared_rows(rows))

    def insert_prepared(self, prepared: Sequence[tuple[Any, ...]]) -> None:
        """Saves rows prepared_rows prepared, as insert_rows does, with the statement
        bulk_create compiles: on PostgreSQL one INSERT ... SELECT FROM UNNEST taking the values
        column by column (a short statement with a placeholder per field, whose parse psycopg
        keeps), elsewhere INSERT ... VALUES of as many rows as the backend takes placeholders
        for. One statement per row (executemany) cost PostgreSQL's server 0.32 ms a row, and a
        VALUES of 1,000 rows cost psycopg 93 ms to parse on every call (docs/benchmarks.md, batch)."""
        if not prepared:
            return
        alias = router.db_for_write(Message)
        connection = connections[alias]
        per_statement = max(connection.ops.bulk_batch_size(_inserted_fields(), list(prepared)), 1)
        with connection.cursor() as cursor:
            for start in range(0, len(prepared), per_statement):
                chunk = prepared[start : start + per_statement]
                statement, by_columns = _bulk_insert_statement(alias, len(chunk))
                params = [list(column) for column in zip(*chunk, strict=True)] if by_columns else [v for row in chunk for v in row]
                cursor.execute(statement, params)


def prepared_rows(rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """New messages given as their field values by attname, as the database takes them: the
    values of the statement's placeholders, row by row. A field a row leaves out gets its
    default, as Message() would give it. No Message is built: Model.__init__ cost more than the
    INSERT (docs/benchmarks.md, batch). Values are prepared with the fields' own
    get_db_prep_save, once per distinct value of a field: in a batch most repeat (owner,
    status, created_at, the empty ones). Apart from the INSERT, so that a caller can prepare
    before its transaction begins."""
    connection = connections[router.db_for_write(Message)]
    columns: list[list[Any]] = []
    for field in _inserted_fields():
        prepared: dict[tuple[type, Any], Any] = {}
        made_per_row = field.has_default() and callable(field.default)  # delivery_id's, created_at's
        default = None if made_per_row else field.get_default()
        column = []
        for row in rows:
            if field.attname in row:
                value = row[field.attname]
            else:
                value = field.get_default() if made_per_row else default
            key = (type(value), value)  # 1 and True, equal as keys, stay apart
            try:
                column.append(prepared[key])
            except KeyError:
                column.append(prepared.setdefault(key, field.get_db_prep_save(value, connection)))
            except TypeError:  # unhashable: prepared alone
                column.append(field.get_db_prep_save(value, connection))
        columns.append(column)
    return list(zip(*columns, strict=True))


def encode_payload(payload: Any) -> str:
    """The JSON text stored and sent: compact, in the client's key order, encoded once. Raises
    ValueError for NaN or an infinity (`1e400` parses to one), which JSON cannot carry."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Message(models.Model):
    # The key that created it: the only one that sees it through the API. Ids are its own.
    # No index of its own: every index that serves a lookup by owner starts with it.
    owner = models.ForeignKey("ApiKey", on_delete=models.PROTECT, related_name="messages", db_index=False)
    message_id = models.CharField(max_length=200)
    # What receivers see as webhook-id and Idempotency-Key: this scheduled message's own, on
    # every attempt and resend of it, never another's (the client's id is free once delivered).
    # Empty only for messages stored before it existed: they keep the key their receivers have
    # already seen, the client's id.
    # NULL, not "": a unique column holds any number of NULLs.
    delivery_id = models.CharField(  # noqa: DJ001
        max_length=40, unique=True, null=True, default=new_delivery_id, editable=False
    )
    status = models.CharField(max_length=10, choices=MessageStatus.choices, default=MessageStatus.SCHEDULED)
    schedule_to = models.DateTimeField(help_text="The moment the client asked for.")
    # The IANA zone the client gave scheduleTo in (local time), else empty: schedule_to is the
    # instant it resolved to. The database default serves the previous version's processes.
    time_zone = models.CharField(max_length=64, blank=True, default="", db_default="")
    # No attempt starts at or after it: the message ends expired instead (empty: never expires).
    expires_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True, help_text="When the next attempt is due; empty once finished.")
    webhook_url = models.CharField(max_length=2048)
    # The JSON text as received (encode_payload), sent as it is: never parsed again on the
    # delivery path, and kept in the client's key order (jsonb would reorder the keys).
    payload_json = models.TextField()
    payload_bytes = models.PositiveIntegerField(default=0, help_text="Size of the payload as sent, in bytes.")
    # The client's headers as one Fernet token (messages/confidential.py); empty for none. The
    # database default serves the previous version's processes during an upgrade (migration 0005).
    headers_sealed = models.TextField(blank=True, default="", db_default="")
    max_attempts = models.PositiveSmallIntegerField(null=True, blank=True)
    timeout_seconds = models.PositiveSmallIntegerField(null=True, blank=True)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    # attempt_count when it was last sent again by hand: the retry schedule restarts there.
    attempt_count_at_resend = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When its current task was handed to the broker.")
    # The database's clock, never a worker's: the stale test compares it with the database's now.
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="When its worker last renewed its claim (claimed, or still holding it)."
    )
    # Names the claim that may finish the call in flight; a stale worker's result is ignored.
    claim_token = models.UUIDField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Goes up by one with every change a client can see (an edit, a claim, an attempt, a resend),
    # never with the service's own bookkeeping (enqueueing, renewing a claim): the ETag of GET and
    # PATCH /messages/{id}, which If-Match compares. The database default serves the previous
    # version's processes during an upgrade. IntegerField, not Positive: a CHECK on a new column
    # would make PostgreSQL scan the table while it holds the lock.
    version = models.IntegerField(default=1, db_default=1)

    objects = MessageQuerySet.as_manager()

    class Meta:
        permissions = [("run_message_actions", "Can deliver now, cancel and retry messages")]
        constraints = [
            # POST's 409 and every lookup by id; history (delivered, expired) may repeat an id.
            models.UniqueConstraint(
                fields=["owner", "message_id"],
                condition=Q(status__in=ID_HOLDING_STATUSES),
                name="unique_owner_message_id_while_held",
            ),
            *STATE_INVARIANTS,
        ]
        indexes = [
            # GET /messages in next-run order and the dispatcher's horizon scan: only
            # pending messages have a due_at, so finished history never enters this range.
            # With the id, for the (due_at, id) order and cursor, however many share one due_at.
            models.Index(fields=["due_at", "id"], name="by_due_at_id"),
            # GET /messages?status=scheduled|retrying, counts by status, stale claims.
            models.Index(fields=["status", "due_at"], name="by_status_due_at"),
            # GET /messages?status=failed and the pruning of delivered history. Partial, like
            # the next one: a new message is in neither, so a create writes two B-trees fewer
            # (no CPU gain showed in-process, docs/benchmarks.md; the indexes stay smaller).
            models.Index(fields=["status", "finished_at"], name="by_status_finished_at", condition=Q(finished_at__isnull=False)),
            # The dispatcher's count of messages already waiting in the broker.
            models.Index(fields=["enqueued_at", "status"], name="by_enqueued_at_status", condition=Q(enqueued_at__isnull=False)),
            # GET /messages/{id} of a delivered id: its latest history.
            models.Index(fields=["owner", "message_id", "-created_at"], name="by_owner_message_id_created"),
            # GET /messages for one key, in next-run order (the dispatcher's scan stays on by_due_at_id).
            models.Index(fields=["owner", "due_at", "id"], name="by_owner_due_at_id"),
        ]

    def __str__(self) -> str:
        return self.message_id

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)

    @payload.setter
    def payload(self, value: Any) -> None:
        self.payload_json = encode_payload(value)
        self.payload_bytes = len(self.payload_json.encode())

    @property
    def headers(self) -> dict[str, str]:
        """Opened for the call; raises HeadersUnreadable when its key is gone."""
        return open_headers(self.headers_sealed)

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self.headers_sealed = seal_headers(value)


def _inserted_fields() -> list[models.Field]:
    return [field for field in Message._meta.local_concrete_fields if field is not Message._meta.auto_field]


@cache
def _insert_statement(alias: str) -> str | None:
    """INSERT ... RETURNING with a placeholder per field, as save() would compile it for `alias`."""
    connection = connections[alias]
    if not connection.features.can_return_columns_from_insert:
        return None
    query = InsertQuery(Message)
    query.insert_values(_inserted_fields(), [Message()])
    compiler = query.get_compiler(alias)
    compiler.returning_fields = Message._meta.db_returning_fields
    [(statement, _values)] = compiler.as_sql()
    # Oracle returns through bound variables, which would need their own handling.
    return None if compiler.returning_params else statement


@lru_cache(maxsize=64)
def _bulk_insert_statement(alias: str, rows: int) -> tuple[str, bool]:
    """The INSERT bulk_create compiles for `rows` new messages on `alias`, and whether it takes
    its values column by column (PostgreSQL's UNNEST, Django 5.2) rather than row by row."""
    query = InsertQuery(Message)
    query.insert_values(_inserted_fields(), [Message() for _ in range(rows)])
    [(statement, params)] = query.get_compiler(alias).as_sql()
    by_columns = rows > 1 and len(params) == len(_inserted_fields()) and all(isinstance(column, list) for column in params)
    return statement, by_columns


class DeliveryAttempt(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    # When the attempt was due (its message's due_at when claimed): started_at minus it is how late
    # it started. Empty for attempts recorded before it was kept.
    due_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    response_excerpt = models.TextField(blank=True)

    class Meta:
        ordering = ["message", "number"]
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="unique_attempt_number"),
        ]

    def __str__(self) -> str:
        return f"{self.message.message_id} #{self.number}"

    @property
    def late_ms(self) -> int | None:
        """How late it started against the moment it was due, in milliseconds (None: not kept)."""
        if self.due_at is None:
            return None
        return round((self.started_at - self.due_at).total_seconds() * 1000)


# The row that stands for API_TOKEN, so that the token owns messages as a key does. Its id is
# fixed (ids given out start at 1), so no request looks it up; its key_hash is no SHA-256.
API_TOKEN_KEY_ID = 0
API_TOKEN_KEY_HASH = "API_TOKEN"  # noqa: S105 - a marker, not a secret


class ApiKey(models.Model):
    """A named API key, each the owner of the messages it creates; API_TOKEN is one of them.

    Only a SHA-256 of the key is stored: the key itself is shown once, when it is created.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)  # the lookup on every request
    read_only = models.BooleanField(default=False, help_text="May list and read messages, nothing else.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        permissions = [("revoke_apikey", "Can revoke API keys")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_api_token(self) -> bool:
        return self.pk == API_TOKEN_KEY_ID


class IdempotentRequest(models.Model):
    """A create made with an Idempotency-Key: what it answered, replayed to the same key and
    body within IDEMPOTENCY_KEY_TTL (messages/idempotency.py)."""

    owner = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="idempotent_requests", db_index=False)
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path and the body's JSON (keys sorted): the same key with another body is a 422.
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="unique_owner_idempotency_key")]
        indexes = [models.Index(fields=["created_at"], name="idempotent_by_created_at")]

    def __str__(self) -> str:
        return self.key
