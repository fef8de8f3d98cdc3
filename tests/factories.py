"""A small cast of messages for tests that work below the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from django.utils import timezone

from messages.models import API_TOKEN_KEY_ID, FINISHED_STATUSES, Message, MessageStatus


class _Now:
    """The type of make_message's default due_at: the moment of the call."""


_NOW = _Now()


def make_message(
    *,
    message_id: str = "msg-1",
    due_at: datetime | None | _Now = _NOW,
    status: str = MessageStatus.SCHEDULED,
    webhook_url: str = "http://127.0.0.1:9/unused",
    **fields: Any,
) -> Message:
    due_at = timezone.now() if isinstance(due_at, _Now) else due_at
    fields = {**consistent_state(status), **fields}
    # payload= is a Message property, which Model.__init__ sets; the django-stubs plugin knows only fields.
    return Message.objects.create(  # type: ignore[misc]
        owner_id=fields.pop("owner_id", API_TOKEN_KEY_ID),
        message_id=message_id,
        status=status,
        schedule_to=fields.pop("schedule_to", due_at or timezone.now()),
        due_at=due_at,
        webhook_url=webhook_url,
        payload=fields.pop("payload", {"n": 1}),
        **fields,
    )


def consistent_state(status: str) -> dict[str, Any]:
    """What the state invariants (messages/models.py STATE_INVARIANTS) ask of a row in `status`."""
    if status in FINISHED_STATUSES:
        return {"finished_at": timezone.now()}
    if status == MessageStatus.SENDING:
        return {"claim_token": uuid4(), "claimed_at": timezone.now()}
    return {}
