"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache

from django.conf import settings
from standardwebhooks import Webhook

SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})


@cache
def _signers(secrets: tuple[str, ...]) -> tuple[Webhook, ...]:
    return tuple(Webhook(secret) for secret in secrets)


def signature_headers(
    *, message_id: str, body: bytes, now: datetime, secrets: Sequence[str] | None = None
) -> dict[str, str]:
    """The three headers, one v1 signature per secret; empty when signing is off."""
    signers = _signers(tuple(settings.WEBHOOK_SIGNING_SECRETS if secrets is None else secrets))
    if not signers:
        return {}
    data = body.decode()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(
            signer.sign(msg_id=message_id, timestamp=now, data=data) for signer in signers
        ),
    }
