"""Retry-safe creates: a request with an Idempotency-Key is answered once, and the same key with
the same body within IDEMPOTENCY_KEY_TTL gets that answer again and schedules nothing new, even
after the message was delivered and its id freed.

The answer is kept in the database, in the transaction that schedules the message, so there is
never an answer without its message nor a message without its answer. A twin sent while the first
is being processed waits for it (PostgreSQL holds the second INSERT of the key until the first
commits; SQLite's IMMEDIATE transactions queue) and then gets its answer: it never schedules a
second message, and never sees a half-made one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction

from messages.models import IdempotentRequest

KEY_MAX_LENGTH = 255


class IdempotencyKeyReused(Exception):
    """The key was used, within its time to live, for a request with another body."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    replayed: bool


def fingerprint(*, method: str, path: str, data: Any) -> str:
    """What makes two requests the same one: method, path and the body's JSON, keys sorted."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{body}".encode()).hexdigest()


def answer_once(
    *, owner_id: int, key: str, request_fingerprint: str, now: datetime, ttl_seconds: float, answer: Callable[[], tuple[int, Any]]
) -> Answer:
    """`answer()` once per key and body: runs it, inside the transaction that keeps its answer,
    or gives back the answer kept. An exception from it keeps nothing: a retry runs it again."""
    with transaction.atomic():
        IdempotentRequest.objects.filter(owner_id=owner_id, key=key, created_at__lt=now - timedelta(seconds=ttl_seconds)).delete()
        kept = IdempotentRequest.objects.filter(owner_id=owner_id, key=key).first()
        if kept is None:
            try:
                with transaction.atomic():
                    record = IdempotentRequest.objects.create(
                        owner_id=owner_id,
                        key=key,
                        fingerprint=request_fingerprint,
                        response_status=0,
                        response_body="",
                        created_at=now,
                    )
            except IntegrityError:
                # A twin committed the key while this one waited for it: its answer is this one's.
                kept = IdempotentRequest.objects.get(owner_id=owner_id, key=key)
        if kept is not None:
            if kept.fingerprint != request_fingerprint:
                raise IdempotencyKeyReused(key)
            return Answer(status=kept.response_status, body=json.loads(kept.response_body), replayed=True)
        status, body = answer()
        IdempotentRequest.objects.filter(pk=record.pk).update(response_status=status, response_body=json.dumps(body))
    return Answer(status=status, body=body, replayed=False)


def forget_expired(*, now: datetime, ttl_seconds: float) -> int:
    """Drops the answers past their time to live (beat's hourly pruning)."""
    deleted, _ = IdempotentRequest.objects.filter(created_at__lt=now - timedelta(seconds=ttl_seconds)).delete()
    return deleted
