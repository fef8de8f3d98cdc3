"""API keys: created with a random secret, stored as a hash, revoked without touching the others."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.utils import timezone

from messages.models import API_TOKEN_KEY_HASH, API_TOKEN_KEY_ID, ApiKey

KEY_PREFIX = "whs_"
# Writing last_used_at on every request would put a write on the hot path; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def issue_secret(key: ApiKey) -> str:
    """Gives an unsaved key its random secret; returns the secret, which is never stored."""
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    key.prefix, key.key_hash = raw_key[:12], hash_key(raw_key)
    return raw_key


def create_api_key(*, name: str, read_only: bool = False) -> tuple[ApiKey, str]:
    key = ApiKey(name=name, read_only=read_only)
    raw_key = issue_secret(key)
    key.save()
    return key, raw_key


def ensure_api_token_key(*, apps: Apps = global_apps, **kwargs: object) -> None:
    """The row standing for API_TOKEN (migration 0005 creates it; a flushed database needs it
    back). post_migrate's `apps` is the migrated state: a migrate to an older target, or to
    zero, must not meet today's columns. A flush sends none: the tables are today's then."""
    try:
        api_key = apps.get_model("scheduler", "ApiKey")
    except LookupError:
        return
    api_key.objects.get_or_create(
        pk=API_TOKEN_KEY_ID, defaults={"name": "API_TOKEN", "prefix": "API_TOKEN", "key_hash": API_TOKEN_KEY_HASH}
    )


def find_active_key(raw_key: str, *, now: datetime | None = None) -> ApiKey | None:
    # An indexed lookup of a SHA-256: its timing says nothing useful about the key.
    key = ApiKey.objects.filter(key_hash=hash_key(raw_key), revoked_at__isnull=True).first()
    if key is not None:
        _record_use(key, now=now or timezone.now())
    return key


def revoke_api_key(key: ApiKey, *, now: datetime | None = None) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())


def _record_use(key: ApiKey, *, now: datetime) -> None:
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
