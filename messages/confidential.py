"""What a client gives for its own receiver and must never read back: header values are sealed
at rest (Fernet) and masked when shown, and so is the userinfo of a webhook URL.

The keys: HEADER_ENCRYPTION_KEYS (Fernet keys, the first seals, every one opens), then keys
derived from SECRET_KEY and SECRET_KEY_FALLBACKS (the sealing ones when no explicit key is set),
so that rotating either the Django way keeps every stored message readable.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from urllib.parse import urlsplit, urlunsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

MASK = "********"
# Domain separation: a key derived here is used for nothing else.
_DERIVATION_INFO = b"webhook-scheduler header encryption v1"


class HeadersUnreadable(Exception):
    """Sealed with a key that is no longer configured: the headers cannot be sent."""


def derived_key(secret: str) -> bytes:
    """A Fernet key from a Django SECRET_KEY (HKDF-SHA256)."""
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVATION_INFO).derive(secret.encode())
    return base64.urlsafe_b64encode(material)


def configured_keys() -> list[bytes]:
    """The first seals; all open. The keys derived from SECRET_KEY (and its fallbacks) always
    open, after any explicit ones: setting HEADER_ENCRYPTION_KEYS later leaves the rows sealed
    before it readable (`manage.py reseal_headers` moves them to the new key)."""
    derived = [derived_key(secret) for secret in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]]
    return [key.encode() for key in settings.HEADER_ENCRYPTION_KEYS] + derived


@cache
def _fernet(keys: tuple[bytes, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current_fernet() -> MultiFernet:
    return _fernet(tuple(configured_keys()))


def seal_headers(headers: dict[str, str]) -> str:
    """The stored form: empty for no headers (most messages: no cipher on the create path)."""
    if not headers:
        return ""
    return _current_fernet().encrypt(json.dumps(headers, separators=(",", ":")).encode()).decode()


def open_headers(sealed: str) -> dict[str, str]:
    if not sealed:
        return {}
    try:
        return json.loads(_current_fernet().decrypt(sealed.encode()))
    except InvalidToken:
        raise HeadersUnreadable("sealed with a key that is no longer in HEADER_ENCRYPTION_KEYS") from None


def reseal_headers(sealed: str) -> str:
    """The same headers under the first key (rotation: manage.py reseal_headers)."""
    if not sealed:
        return sealed
    try:
        return _current_fernet().rotate(sealed.encode()).decode()
    except InvalidToken:
        raise HeadersUnreadable("sealed with a key that is no longer in HEADER_ENCRYPTION_KEYS") from None


def masked_headers(headers: dict[str, str]) -> dict[str, str]:
    """Names only: every value may be a credential."""
    return dict.fromkeys(headers, MASK)


def masked_url(url: str) -> str:
    """The URL with its user:password@ replaced by the mask."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))
