"""GET /messages: one owner's pending messages in next-run order, or one status, paged by a cursor."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.db.models.functions import Left

from messages.models import Message, MessageStatus
from messages.row_counts import count_rows

LISTABLE_STATUSES = (MessageStatus.SCHEDULED, MessageStatus.RETRYING, MessageStatus.FAILED, MessageStatus.EXPIRED)
# Listed in the order they finished; the others in next-run order.
FINISHED_LISTABLE = (MessageStatus.FAILED, MessageStatus.EXPIRED)
# Past this many (by PostgreSQL's planner) `count` is its estimate; SQLite always counts exactly.
EXACT_COUNT_UP_TO = 100_000
# All that a listed message shows, and the order fields: a payload may be a megabyte, and a
# page of plain rows costs a fraction of a page of model instances (1,000 per page by default).
LISTED_FIELDS = ("pk", "message_id", "status", "due_at", "finished_at")


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class MessageFilter:
    """What GET /messages and POST /messages/cancel narrow by, beside the owner and the status."""

    due_after: datetime | None = None  # next attempt at or after
    due_before: datetime | None = None  # next attempt before
    webhook_url_prefix: str = ""

    def apply(self, queryset: QuerySet[Message]) -> QuerySet[Message]:
        if self.due_after is not None:
            queryset = queryset.filter(due_at__gte=self.due_after)
        if self.due_before is not None:
            queryset = queryset.filter(due_at__lt=self.due_before)
        if self.webhook_url_prefix:
            # startswith is LIKE, which SQLite compares without case (https://a/X matches
            # https://a/x%): the prefix is compared exactly as well, so both databases agree and a
            # bulk cancel never takes a URL that differs in case.
            queryset = (
                queryset.filter(webhook_url__startswith=self.webhook_url_prefix)
                .alias(url_start=Left("webhook_url", len(self.webhook_url_prefix)))
                .filter(url_start=self.webhook_url_prefix)
            )
        return queryset


NO_FILTER = MessageFilter()


@dataclass(frozen=True)
class MessagePage:
    messages: list[Any]  # rows with the attributes named in LISTED_FIELDS
    count: int
    count_is_estimate: bool
    next_cursor: str | None


def list_messages(
    *, owner_id: int, status: str | None, limit: int, cursor: str | None, narrowed_by: MessageFilter = NO_FILTER
) -> MessagePage:
    # Failed and expired messages have no next run: they list in the order they finished.
    order_field = "finished_at" if status in FINISHED_LISTABLE else "due_at"
    owned = Message.objects.owned_by(owner_id)
    queryset = narrowed_by.apply(owned.pending() if status is None else owned.filter(status=status))
    if order_field == "finished_at":
        # Always true of a finished message; said so that its partial index serves the query.
        queryset = queryset.filter(finished_at__isnull=False)
    count = count_rows(queryset, exact_up_to=EXACT_COUNT_UP_TO)
    if cursor:
        moment, pk = decode_cursor(cursor)
        queryset = queryset.filter(Q(**{f"{order_field}__gt": moment}) | Q(**{order_field: moment, "pk__gt": pk}))
    page = list(queryset.order_by(order_field, "pk").values_list(*LISTED_FIELDS, named=True)[: limit + 1])
    next_cursor = None
    if len(page) > limit:
        page = page[:limit]
        last = page[-1]
        next_cursor = encode_cursor(getattr(last, order_field), last.pk)
    return MessagePage(messages=page, count=count.value, count_is_estimate=count.is_estimate, next_cursor=next_cursor)


def encode_cursor(moment: datetime, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment_text, pk_text = text.split("|")
        moment = datetime.fromisoformat(moment_text)
        pk = int(pk_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(cursor) from None
    if moment.tzinfo is None:
        raise InvalidCursor(cursor)
    try:
        return moment.astimezone(UTC), pk
    except OverflowError:
        raise InvalidCursor(cursor) from None
