"""The one function that calls a webhook: timeout, no redirects, our headers, a small result."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
import urllib3
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError

from messages.target_policy import BlockedTarget, resolve_allowed_address
from messages.version import USER_AGENT

RESPONSE_EXCERPT_BYTES = 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"

_thread_state = threading.local()


class _PolicyCheckedConnection:
    """Connects only to an address the target policy allows, resolved right here."""

    def _new_conn(self) -> socket.socket:
        try:
            self._dns_host = resolve_allowed_address(self._dns_host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        return super()._new_conn()


class _CheckedHTTPConnection(_PolicyCheckedConnection, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_PolicyCheckedConnection, HTTPSConnection):
    pass


class _CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _TargetPolicyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPConnectionPool,
            "https": _CheckedHTTPSConnectionPool,
        }


@dataclass(frozen=True)
class WebhookResult:
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str = ""
    response_excerpt: str = ""
    retry_after: str | None = None

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def outcome(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else self.error


def encode_payload(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _session() -> requests.Session:
    # One session per thread: connections to a receiver are reused, sessions are not shared.
    session = getattr(_thread_state, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # no proxies or .netrc picked up from the worker's environment
        session.mount("http://", _TargetPolicyAdapter())
        session.mount("https://", _TargetPolicyAdapter())
        _thread_state.session = session
    return session


def send_webhook(
    *,
    url: str,
    body: bytes,
    message_id: str,
    timeout_seconds: float,
    extra_headers: dict[str, str] | None = None,
) -> WebhookResult:
    headers = {
        **(extra_headers or {}),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: message_id,
    }
    started_at = timezone.now()
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        with _session().post(
            url,
            data=body,
            headers=headers,
            timeout=timeout_seconds,
            allow_redirects=False,
            stream=True,  # read only the excerpt we keep, however large the response
        ) as response:
            excerpt = response.raw.read(RESPONSE_EXCERPT_BYTES, decode_content=True)
            return WebhookResult(
                started_at=started_at,
                duration_ms=elapsed_ms(),
                status_code=response.status_code,
                response_excerpt=excerpt.decode("utf-8", errors="replace"),
                retry_after=response.headers.get("Retry-After"),
            )
    # urllib3's errors surface unwrapped while the excerpt is read from the raw stream.
    except (requests.RequestException, urllib3.exceptions.HTTPError, BlockedTarget) as error:
        return WebhookResult(
            started_at=started_at, duration_ms=elapsed_ms(), error=type(error).__name__
        )
