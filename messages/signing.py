"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from standardwebhooks import Webhook

SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
WHSEC_PREFIX = "whsec_"
# The Standard Webhooks specification recommends keys of 24 to 64 bytes.
MIN_SECRET_BYTES = 24


def parse_signing_secrets(text: str, *, setting: str = "WEBHOOK_SIGNING_SECRET") -> tuple[bytes, ...]:
    """Space-separated `whsec_<base64>` secrets as their keys, checked when the settings load
    (standardwebhooks would take `whsec_abc` as a 2-byte key, or fail only at the first send).
    An error names the secret by its position, never by its value."""
    secrets = text.split()
    return tuple(
        _signing_key(secret, where=f"{setting}: secret {number} of {len(secrets)}")
        for number, secret in enumerate(secrets, start=1)
    )


def _signing_key(secret: str, *, where: str) -> bytes:
    if not secret.startswith(WHSEC_PREFIX):
        raise ImproperlyConfigured(f"{where} does not start with {WHSEC_PREFIX}.")
    encoded = secret.removeprefix(WHSEC_PREFIX)
    try:
        # Padding is optional, as in standardwebhooks; anything outside standard base64 is refused
        # (b64decode would drop it silently, and the receiver's key would differ from ours).
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ImproperlyConfigured(f"{where} is not valid base64 after {WHSEC_PREFIX}.") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ImproperlyConfigured(
            f"{where} decodes to {len(key)} bytes; at least {MIN_SECRET_BYTES} are needed "
            "(the README's *Verifying signatures* shows how to generate one)."
        )
    return key


@cache
def _signers(keys: tuple[bytes, ...]) -> tuple[Webhook, ...]:
    return tuple(Webhook(key) for key in keys)


def signature_headers(*, message_id: str, body: bytes, now: datetime, secrets: Sequence[bytes] | None = None) -> dict[str, str]:
    """The three headers, one v1 signature per key (settings.WEBHOOK_SIGNING_SECRETS, parsed by
    parse_signing_secrets when the settings load); empty when signing is off."""
    signers = _signers(tuple(settings.WEBHOOK_SIGNING_SECRETS if secrets is None else secrets))
    if not signers:
        return {}
    data = body.decode()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signer.sign(msg_id=message_id, timestamp=now, data=data) for signer in signers),
    }
