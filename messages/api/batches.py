"""POST /messages/batch: many creates in one request, each accepted or refused on its own.

Each message gets the answer POST /messages would have given it alone: scheduled, or its 400,
409 or 413 with the same `detail` and `errors`. The accepted ones are stored in one transaction,
all of them or none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import ValidationError

from messages import scheduling
from messages.api.errors import error_answer
from messages.api.exceptions import RequestTooLarge
from messages.api.serializers import new_message, validated_new_message


@dataclass(frozen=True)
class BatchItem:
    """One message's answer in the batch: `error` (a status and the body POST would answer)
    when refused, else None: scheduled."""

    message_id: str | None
    error: dict[str, Any] | None = None

    @property
    def status(self) -> str | None:
        return "scheduled" if self.error is None else None


def schedule_batch(*, owner_id: int, items: list[Any]) -> list[BatchItem]:
    checked_urls: dict[str, bool] = {}
    answers: list[BatchItem | None] = [None] * len(items)
    accepted: list[tuple[int, scheduling.NewMessage]] = []
    for index, item in enumerate(items):
        try:
            data = validated_new_message(item, checked_urls=checked_urls)
        except (ValidationError, RequestTooLarge) as refusal:
            answers[index] = _refused(_given_id(item), refusal)
            continue
        accepted.append((index, new_message(data)))
    results = scheduling.schedule_messages(owner_id=owner_id, new_messages=[new for _, new in accepted])
    for (index, new), result in zip(accepted, results, strict=True):
        answers[index] = (
            _refused(new.message_id, result) if isinstance(result, scheduling.MessageIdTaken) else BatchItem(new.message_id)
        )
    return [answer for answer in answers if answer is not None]


def _given_id(item: Any) -> str | None:
    """The id the client gave a refused message, to match the answer to it: a string of at most
    200 characters (an id can be no longer), else null."""
    given = item.get("id") if isinstance(item, dict) else None
    return given if isinstance(given, str) and len(given) <= 200 else None


def _refused(message_id: str | None, refusal: Exception) -> BatchItem:
    status, body = error_answer(refusal)
    return BatchItem(message_id, error={"status": status, **body})
