"""The one place webhooks are called: timeout, no redirects, our headers, a small result.

Calls run on one asyncio loop per process, in a thread of its own, with aiohttp. Measured on
5,000 calls to a loopback receiver (`docs/benchmarks.md`), requests on 200 threads cost
1.1–1.4 ms of CPU per call, mostly in contention for the GIL; aiohttp on one loop costs
0.2 ms, so one worker process can keep hundreds of calls in flight for little CPU.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from django.utils import timezone
from yarl import URL

from messages.target_policy import BlockedTarget, host_block_reason, resolved_addresses_block_reason
from messages.version import USER_AGENT

logger = logging.getLogger(__name__)

RESPONSE_EXCERPT_BYTES = 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class WebhookCall:
    url: str
    body: bytes
    message_id: str
    timeout_seconds: float
    extra_headers: dict[str, str] = field(default_factory=dict)
    # Never sent before this moment (a group's messages each keep their own).
    not_before: datetime | None = None


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


def send_webhook(
    *,
    url: str,
    body: bytes,
    message_id: str,
    timeout_seconds: float,
    extra_headers: dict[str, str] | None = None,
) -> WebhookResult:
    call = WebhookCall(url=url, body=body, message_id=message_id, timeout_seconds=timeout_seconds,
                       extra_headers=extra_headers or {})
    return send_webhooks([call])[0]


def send_webhooks(calls: Sequence[WebhookCall]) -> list[WebhookResult]:
    """Makes the calls concurrently, each at its own moment; blocks until all have ended."""
    if not calls:
        return []
    sender = _sender()
    return sender.run(sender.send_all(calls))


async def _send(session: aiohttp.ClientSession, call: WebhookCall) -> WebhookResult:
    headers = {
        **call.extra_headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: call.message_id,
    }
    started_at = timezone.now()
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        # The allowed host list and literal addresses (aiohttp never asks the resolver about
        # those); the resolver checks the addresses a name resolves to.
        reason = host_block_reason(URL(call.url).host or "")
        if reason:
            raise BlockedTarget(reason)
        async with session.post(
            call.url,
            data=call.body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=call.timeout_seconds, sock_connect=call.timeout_seconds),
        ) as response:
            excerpt = await _read_excerpt(response)
            return WebhookResult(
                started_at=started_at,
                duration_ms=elapsed_ms(),
                status_code=response.status,
                response_excerpt=excerpt.decode("utf-8", errors="replace"),
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
    The name itself (the allowed host list) was checked by `_send` before the call."""

    def __init__(self) -> None:
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        reason = resolved_addresses_block_reason(host, [result["host"] for result in results])
        if reason:
            raise BlockedTarget(reason)
        return results

    async def close(self) -> None:
        await self._resolver.close()


class _Sender:
    """An event loop in a daemon thread, with one HTTP session: connections to a receiver are
    kept and reused across tasks and groups."""

    def __init__(self, max_concurrent_calls: int) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="webhook-sender", daemon=True).start()
        self.slots, self.session = self.run(self._start(max_concurrent_calls))
        atexit.register(self.close)

    @staticmethod
    async def _start(max_concurrent_calls: int) -> tuple[asyncio.Semaphore, aiohttp.ClientSession]:
        connector = aiohttp.TCPConnector(limit=0, resolver=PolicyCheckedResolver(), ttl_dns_cache=10)
        # trust_env stays off: no proxy or .netrc is picked up from the worker's environment.
        return asyncio.Semaphore(max_concurrent_calls), aiohttp.ClientSession(connector=connector)

    async def send_all(self, calls: Sequence[WebhookCall]) -> list[WebhookResult]:
        return list(await asyncio.gather(*(self._send_when_due(call) for call in calls)))

    async def _send_when_due(self, call: WebhookCall) -> WebhookResult:
        if call.not_before is not None:
            wait = (call.not_before - timezone.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
        # The slot is taken outside the call's timeout: waiting for one is not the receiver's fault.
        async with self.slots:
            return await _send(self.session, call)

    def run(self, coroutine: Any) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    def close(self) -> None:
        """At exit: closes the kept connections, so receivers see them end cleanly."""
        self.run(self.session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)


@cache
def _sender() -> _Sender:
    return _Sender(settings.DELIVERY_MAX_CONCURRENT_CALLS)
