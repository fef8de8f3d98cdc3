"""The DNS resolver for webhook calls: asynchronous c-ares lookups, each bounded in time, failures
remembered for a while and coinciding lookups shared, so a dead domain delays only its own calls.

Plugged into aiohttp as `TCPConnector(resolver=BoundedResolver(), ttl_dns_cache=...)`: the
connector keeps the answers, so only failures are cached here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Sequence

import aiodns
import pycares
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# (family, address) pairs for one (host, family) lookup, in c-ares' preference order.
Addresses = tuple[tuple[socket.AddressFamily, str], ...]
LookupKey = tuple[str, socket.AddressFamily]

# What aiohttp's own resolvers put in a result: the address is numeric, nothing to look up again.
NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
# /etc/hosts first (localhost and the like), then DNS: what glibc does with "hosts: files dns".
HOSTS_FILE_THEN_DNS = "fb"
# c-ares waits at least this long for one try, whatever timeout it is given (MIN_TIMEOUT_MS).
C_ARES_MIN_TRY_SECONDS = 0.25
# One retry when the bound leaves room for it: a single lost UDP packet should not fail a call.
PREFERRED_TRIES = 2
TIMEOUT_MESSAGE = "Timeout while contacting DNS servers"  # c-ares' own words for ARES_ETIMEOUT
NO_ADDRESS_MESSAGE = "DNS lookup failed"  # aiohttp's AsyncResolver's words
# Errors from closing the resolver, not from DNS: nothing to remember about the host.
CLOSING_ERRORS = frozenset({pycares.errno.ARES_ECANCELLED, pycares.errno.ARES_EDESTRUCTION})
# Past this many remembered failures, expired ones are dropped (hosts that are never asked again).
FAILURES_PRUNE_SIZE = 1024


class BoundedResolver(AbstractResolver):
    """Raises `OSError(None, message)` on failure, like aiohttp's AsyncResolver, which the connector
    turns into `aiohttp.ClientConnectorDNSError`. Arguments left out come from the settings
    WEBHOOK_DNS_TIMEOUT_SECONDS, WEBHOOK_DNS_NEGATIVE_TTL_SECONDS and WEBHOOK_DNS_SERVERS."""

    def __init__(
        self,
        *,
        timeout_seconds: float | None = None,
        negative_ttl_seconds: float | None = None,
        servers: Sequence[str] | None = None,
    ) -> None:
        self.timeout_seconds = settings.WEBHOOK_DNS_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds
        self.negative_ttl_seconds = (
            settings.WEBHOOK_DNS_NEGATIVE_TTL_SECONDS if negative_ttl_seconds is None else negative_ttl_seconds
        )
        self.servers = list(settings.WEBHOOK_DNS_SERVERS if servers is None else servers)
        # Checked now (a bad server raises here, not at the first call); counted for the c-ares timing.
        self._server_count = name_server_count(self.servers)
        self._channel: aiodns.DNSResolver | None = None  # made by the first lookup, on its loop
        self._failures: dict[LookupKey, tuple[float, str]] = {}  # key -> (remembered until, message)
        self._in_flight: dict[LookupKey, asyncio.Task[Addresses]] = {}

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        key = (host, family)
        self._raise_if_failed_recently(key)
        lookup = self._in_flight.get(key) or self._start_lookup(key)
        # Shielded: one caller giving up (its call's timeout) must not cancel the lookup others share.
        addresses = await asyncio.shield(lookup)
        return [_result(host, port, address_family, address) for address_family, address in addresses]

    async def close(self) -> None:
        if self._channel is None:
            return
        lookups = list(self._in_flight.values())
        # Closing the channel ends its lookups with ARES_ECANCELLED; their callers see an OSError.
        await self._channel.close()
        self._channel = None
        await asyncio.gather(*lookups, return_exceptions=True)

    def _raise_if_failed_recently(self, key: LookupKey) -> None:
        failure = self._failures.get(key)
        if failure is None:
            return
        remembered_until, message = failure
        if time.monotonic() < remembered_until:
            raise OSError(None, message)  # a new error each time: a shared one would grow its traceback
        del self._failures[key]

    def _start_lookup(self, key: LookupKey) -> asyncio.Task[Addresses]:
        lookup = asyncio.get_running_loop().create_task(self._lookup(key))
        # Its error is read here, so none is reported as never retrieved when every caller gave up.
        lookup.add_done_callback(lambda task: task.cancelled() or task.exception())
        self._in_flight[key] = lookup
        return lookup

    async def _lookup(self, key: LookupKey) -> Addresses:
        host, family = key
        try:
            return await self._addresses(host, family)
        except OSError as error:
            if not _is_from_closing(error):
                self._remember_failure(key, error.strerror or NO_ADDRESS_MESSAGE)
            raise
        finally:
            self._in_flight.pop(key, None)

    async def _addresses(self, host: str, family: socket.AddressFamily) -> Addresses:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                answer = await self._dns().getaddrinfo(host, family=family, type=socket.SOCK_STREAM)
        except TimeoutError:
            # Not the TimeoutError itself: aiohttp would let it through as a read timeout.
            raise OSError(None, TIMEOUT_MESSAGE) from None
        except aiodns.error.DNSError as error:
            message = error.args[1] if len(error.args) > 1 else NO_ADDRESS_MESSAGE
            raise OSError(None, message) from error
        addresses = tuple(_address(node) for node in answer.nodes)
        if not addresses:
            raise OSError(None, NO_ADDRESS_MESSAGE)
        return addresses

    def _remember_failure(self, key: LookupKey, message: str) -> None:
        now = time.monotonic()
        if len(self._failures) >= FAILURES_PRUNE_SIZE:
            self._failures = {known: failure for known, failure in self._failures.items() if failure[0] > now}
        self._failures[key] = (now + self.negative_ttl_seconds, message)

    def _dns(self) -> aiodns.DNSResolver:
        if self._channel is None:
            try_seconds, tries = c_ares_timing(self.timeout_seconds, self._server_count)
            self._channel = aiodns.DNSResolver(
                nameservers=self.servers or None,
                loop=asyncio.get_running_loop(),
                timeout=try_seconds,
                tries=tries,
                lookups=HOSTS_FILE_THEN_DNS,
            )
        return self._channel


def c_ares_timing(bound_seconds: float, server_count: int) -> tuple[float, int]:
    """(first try's timeout, tries per server) for c-ares, so that it gives up within the bound by
    itself and no query lingers after the lookup has failed. c-ares tries each server in turn and
    doubles the timeout on every round: the worst case is servers × timeout × (2^tries - 1).
    (c-ares may stretch a try for a server it has measured as slow; the asyncio bound still holds.)"""
    servers = max(server_count, 1)
    for tries in range(PREFERRED_TRIES, 0, -1):
        first_try_seconds = bound_seconds / (servers * (2**tries - 1))
        if first_try_seconds >= C_ARES_MIN_TRY_SECONDS:
            return first_try_seconds, tries
    return bound_seconds / servers, 1  # below c-ares' floor: the bound's own timeout cuts it short


RESOLV_CONF = "/etc/resolv.conf"


def name_server_count(servers: Sequence[str]) -> int:
    """How many servers c-ares will ask: the given ones ("ip", "ip:port", "[ipv6]:port"), or
    resolv.conf's. Read without a c-ares channel: a channel made and closed before the real one
    made that one's first lookup fail ("Could not contact DNS servers"), the first webhook call
    of every worker process whose host is a name."""
    if servers:
        for server in servers:
            _check_server(server)
        return len(servers)
    try:
        with open(RESOLV_CONF) as conf:
            listed = [line for line in conf if line.split()[:1] == ["nameserver"]]
    except OSError:
        return 1
    return max(len(listed), 1)


def _check_server(server: str) -> None:
    host, port = server, ""
    if server.startswith("["):
        host, _, port = server[1:].partition("]")
        port = port.removeprefix(":")
    elif server.count(":") == 1:
        host, port = server.split(":")
    try:
        ipaddress.ip_address(host)
        if port and not 0 < int(port) < 65536:
            raise ValueError(port)
    except ValueError:
        raise ImproperlyConfigured(f"WEBHOOK_DNS_SERVERS: {server!r} is not an IP address with an optional port.") from None


def _is_from_closing(error: OSError) -> bool:
    cause = error.__cause__
    return isinstance(cause, aiodns.error.DNSError) and bool(cause.args) and cause.args[0] in CLOSING_ERRORS


def _address(node: pycares.AddrInfoNode) -> tuple[socket.AddressFamily, str]:
    address = node.addr[0].decode("ascii")
    if node.family == socket.AF_INET6 and len(node.addr) > 3 and node.addr[3]:
        # Link-local: the address means nothing without its interface (scope id).
        address = f"{address}%{node.addr[3]}"
    return socket.AddressFamily(node.family), address


def _result(host: str, port: int, family: socket.AddressFamily, address: str) -> ResolveResult:
    return ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=NUMERIC_FLAGS)
