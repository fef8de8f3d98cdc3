"""Scheduling through the real API and waiting for messages to finish, for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from messages.models import Message, MessageStatus
from tests.support.waits import wait_until

# Generous: a loaded CI machine may be slow, but a message must never be minutes late.
LATENESS_BOUND_SECONDS = 3.0


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post_message(api, message_id: str, url: str, *, at: datetime, **extra: object) -> None:
    """POST /messages with the message's id as its payload; extra fields as the API names them."""
    body = {"id": message_id, "scheduleTo": iso(at), "payload": {"id": message_id}, "webhookUrl": url, **extra}
    response = api.post("/messages", body)
    assert response.status_code == 200, response.content


def schedule(api, receiver, path: str, *, message_id: str, at: datetime, payload: object = None) -> None:
    """POST /messages for `path` on `receiver`; the payload is {"n": 1} unless given."""
    post_message(api, message_id, receiver.url(path), at=at, payload=payload or {"n": 1})


def schedule_batch(api, receiver, path: str, *, count: int, at: datetime, prefix: str) -> list[str]:
    """`count` messages due together, each with its id as its payload; returns the ids."""
    ids = [f"{prefix}-{n}" for n in range(count)]
    for message_id in ids:
        post_message(api, message_id, receiver.url(path), at=at)
    return ids


def wait_until_finished(message_ids: Iterable[str], *, timeout: float) -> None:
    """Until each is delivered or failed: every attempt made and recorded, none in flight."""
    message_ids = list(message_ids)
    wait_until(
        lambda: (
            not Message.objects.filter(message_id__in=message_ids)
            .exclude(status__in=[MessageStatus.DELIVERED, MessageStatus.FAILED])
            .exists()
        ),
        timeout=timeout,
        what="every message to be delivered or failed",
    )
