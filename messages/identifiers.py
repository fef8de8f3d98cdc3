"""Delivery ids: one per scheduled message, never reused, so receivers can deduplicate on it."""

from __future__ import annotations

import os
import time

DELIVERY_ID_PREFIX = "msg_"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_delivery_id() -> str:
    """`msg_` + a ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32.

    Ids sort by creation time, so the unique index takes them at its right edge."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return DELIVERY_ID_PREFIX + "".join(reversed(chars))
