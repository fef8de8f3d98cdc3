"""The one place webhooks are called: timeout, no redirects, our headers, a small result.

Calls run on one asyncio loop per process, in a thread of its own, with aiohttp: many calls in
flight on threads cost several times the CPU per call, mostly in contention for the GIL
(docs/benchmarks.md), so one worker process can keep hundreds of calls in flight cheaply.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import Connection
from django.conf import settings
from django.utils import timezone
from yarl import URL

from messages.resolver import BoundedResolver
from messages.signing import signature_headers
from messages.target_policy import (
    BlockedTarget,
    host_block_reason,
    is_response_excerpt_kept,
    port_block_reason,
    resolved_addresses_block_reason,
)
from messages.version import USER_AGENT

logger = logging.getLogger(__name__)

RESPONSE_EXCERPT_BYTES = 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"
MESSAGE_ID_HEADER = "X-Message-Id"
# DeliveryAttempt.duration_ms is a 32-bit integer on PostgreSQL.
MAX_DURATION_MS = 2**31 - 1


@dataclass(frozen=True)
class WebhookCall:
    url: str
    body: bytes
    message_id: str  # the client's id, sent as X-Message-Id
    timeout_seconds: float
    extra_headers: dict[str, str] = field(default_factory=dict)
    # Never sent before this moment (a group's messages each keep their own).
    not_before: datetime | None = None
    # This scheduled message's own id (webhook-id, Idempotency-Key); the client's id if unset.
    delivery_id: str = ""


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
    def summary(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else self.error


def send_webhook(
    *,
    url: str,
    body: bytes,
    message_id: str,
    timeout_seconds: float,
    extra_headers: dict[str, str] | None = None,
) -> WebhookResult:
    call = WebhookCall(
        url=url, body=body, message_id=message_id, timeout_seconds=timeout_seconds, extra_headers=extra_headers or {}
    )
    return send_webhooks([call])[0]


def duration_ms(seconds: float) -> int:
    return min(max(round(seconds * 1000), 0), MAX_DURATION_MS)


def request_headers(call: WebhookCall, *, now: datetime) -> dict[str, str]:
    """Made when the request is sent: a signature's timestamp is the moment of sending, so a call
    that waited for a slot still verifies against a receiver's tolerance."""
    delivery_id = call.delivery_id or call.message_id
    return {
        **call.extra_headers,
        **signature_headers(message_id=delivery_id, body=call.body, now=now),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: delivery_id,
        MESSAGE_ID_HEADER: call.message_id,
    }


def excerpt_text(raw: bytes) -> str:
    """What a receiver answered, as text any database stores: valid UTF-8, no NUL, bounded."""
    return raw[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


async def send(session: aiohttp.ClientSession, call: WebhookCall) -> WebhookResult:
    """One call; never raises: whatever happens becomes the result."""
    started_at = timezone.now()
    started = time.monotonic()

    def elapsed_ms() -> int:
        return duration_ms(time.monotonic() - started)

    try:
        # The allowed host and port lists and literal addresses (aiohttp never asks the resolver
        # about those); the resolver checks the addresses a name resolves to.
        url = URL(call.url)
        reason = host_block_reason(url.host or "") or port_block_reason(url)
        if reason:
            raise BlockedTarget(reason)
        async with session.post(
            call.url,
            data=call.body,
            headers=request_headers(call, now=timezone.now()),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=call.timeout_seconds, sock_connect=call.timeout_seconds),
        ) as response:
            # Read even when it is not kept: a connection whose answer was read stays reusable.
            excerpt = await _read_excerpt(response)
            peer = response.peer_address if isinstance(response, PeerRecordingResponse) else None
            return WebhookResult(
                started_at=started_at,
                duration_ms=elapsed_ms(),
                status_code=response.status,
                response_excerpt=excerpt_text(excerpt) if is_response_excerpt_kept(peer) else "",
                retry_after=response.headers.get("Retry-After"),
            )
    except (aiohttp.ClientError, TimeoutError, BlockedTarget, ValueError) as error:
        return WebhookResult(started_at=started_at, duration_ms=elapsed_ms(), error=error_name(error))
    except Exception as error:
        # Not the receiver's doing, but one call's surprise must not sink its group's record.
        logger.exception("message %s: unexpected error calling its webhook", call.message_id)
        return WebhookResult(started_at=started_at, duration_ms=elapsed_ms(), error=type(error).__name__)


async def _read_excerpt(response: aiohttp.ClientResponse) -> bytes:
    """Only the excerpt we keep, however large the response."""
    excerpt = b""
    while len(excerpt) < RESPONSE_EXCERPT_BYTES:
        chunk = await response.content.read(RESPONSE_EXCERPT_BYTES - len(excerpt))
        if not chunk:
            break
        excerpt += chunk
    return excerpt


# What an attempt's `error` says. The names are the ones the service has always recorded,
# so the history, the metrics' labels and ops staff's searches keep their meaning.
_ERROR_NAMES: tuple[tuple[type[BaseException], str], ...] = (
    (BlockedTarget, "BlockedTarget"),
    (aiohttp.ConnectionTimeoutError, "ConnectTimeout"),
    (TimeoutError, "ReadTimeout"),
    (aiohttp.ClientSSLError, "SSLError"),
    (aiohttp.ClientConnectionError, "ConnectionError"),
    (aiohttp.ClientPayloadError, "ConnectionError"),
    (aiohttp.InvalidURL, "InvalidURL"),
    (ValueError, "InvalidRequest"),  # a URL or header the client refuses to send
)


def error_name(error: BaseException) -> str:
    for kind, name in _ERROR_NAMES:
        if isinstance(error, kind):
            return name
    return type(error).__name__


class PolicyCheckedResolver(AbstractResolver):
    """Resolves a name and refuses it if any of its addresses is not allowed; aiohttp then
    connects to exactly the addresses checked here, so DNS cannot change between the two.
    The name itself (the allowed host list) was checked by `send` before the call."""

    def __init__(self) -> None:
        # c-ares on the loop: a name server that never answers holds no thread and no other lookup.
        self._resolver = BoundedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        reason = resolved_addresses_block_reason(host, [result["host"] for result in results])
        if reason:
            raise BlockedTarget(reason)
        return results

    async def close(self) -> None:
        await self._resolver.close()


class PeerRecordingResponse(aiohttp.ClientResponse):
    """Remembers the address its connection reached. Read in `start`, because aiohttp releases
    the connection as soon as the whole body has arrived: for a small body, before `send` sees
    the response, so `response.connection` is None there."""

    peer_address: str | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        self.peer_address = peer[0] if isinstance(peer, tuple) and peer else None
        return await super().start(connection)


def new_session() -> aiohttp.ClientSession:
    """Inside the loop. Connections are kept and reused across messages as plain transport:
    no cookie jar (a Set-Cookie never reaches another message's call), no session-wide
    headers or credentials, and trust_env off (no proxy or .netrc from the worker's environment)."""
    connector = aiohttp.TCPConnector(limit=0, resolver=PolicyCheckedResolver(), ttl_dns_cache=10)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), response_class=PeerRecordingResponse)


class CallLoop:
    """An event loop in a daemon thread, with one HTTP session and the process's call slots."""

    def __init__(self, max_concurrent_calls: int) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="webhook-calls", daemon=True).start()
        self.slots, self.session = self.run(self._start(max_concurrent_calls))
        atexit.register(self.close)

    @staticmethod
    async def _start(max_concurrent_calls: int) -> tuple[asyncio.Semaphore, aiohttp.ClientSession]:
        return asyncio.Semaphore(max_concurrent_calls), new_session()

    async def send_when_due(self, call: WebhookCall) -> WebhookResult:
        await sleep_until(call.not_before)
        # The slot is taken outside the call's timeout: waiting for one is not the receiver's fault.
        async with self.slots:
            return await send(self.session, call)

    def run(self, coroutine: Any, *, timeout: float | None = None) -> Any:
        """From another thread: runs `coroutine` on the loop and waits for its result."""
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def is_responsive(self, *, timeout: float) -> bool:
        try:
            self.run(asyncio.sleep(0), timeout=timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """At exit: closes the kept connections, so receivers see them end cleanly."""
        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.run(self.session.close(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)


async def sleep_until(moment: datetime | None) -> None:
    if moment is not None:
        wait = (moment - timezone.now()).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)


_call_loop: CallLoop | None = None
_call_loop_lock = threading.Lock()


def call_loop() -> CallLoop:
    """The process's one loop and its slots: threads asking at once must not build several."""
    global _call_loop
    with _call_loop_lock:
        if _call_loop is None:
            _call_loop = CallLoop(settings.DELIVERY_MAX_CONCURRENT_CALLS)
        return _call_loop


def send_webhooks(calls: Sequence[WebhookCall]) -> list[WebhookResult]:
    """Makes the calls concurrently, each at its own moment; blocks until all have ended."""
    if not calls:
        return []
    loop = call_loop()

    async def send_all() -> list[WebhookResult]:
        return list(await asyncio.gather(*(loop.send_when_due(call) for call in calls)))

    return loop.run(send_all())
