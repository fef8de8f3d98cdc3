"""The webhook resolver against a local name server: bounded lookups, remembered failures,
shared queries, and a silent name server that delays nobody else."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import aiohttp
import pytest
from django.core.exceptions import ImproperlyConfigured

from messages.resolver import BoundedResolver, c_ares_timing
from messages.webhook_client import error_name
from tests.support.dns_server import DnsServer
from tests.support.processes import ROOT

T = TypeVar("T")

TIMEOUT_SECONDS = 0.5
NEGATIVE_TTL_SECONDS = 0.3
# Slack for a busy 2-core machine; still far below the timeout where "fast" is asserted.
SCHEDULING_SLACK_SECONDS = 0.25


@pytest.fixture
def dns_server(settings) -> Iterator[DnsServer]:
    with DnsServer(
        answers={"ok.test": "127.0.0.1", "both.test": ["127.0.0.2", "::2"]},
        silent={"hang.test"},
    ) as server:
        settings.WEBHOOK_DNS_SERVERS = [server.address]
        settings.WEBHOOK_DNS_TIMEOUT_SECONDS = TIMEOUT_SECONDS
        settings.WEBHOOK_DNS_NEGATIVE_TTL_SECONDS = NEGATIVE_TTL_SECONDS
        yield server


def with_resolver(scenario: Callable[[BoundedResolver], Awaitable[T]]) -> T:
    """Runs `scenario` on a fresh loop with a resolver made from the settings, closed after."""

    async def main() -> T:
        resolver = BoundedResolver()
        try:
            return await scenario(resolver)
        finally:
            await resolver.close()

    return asyncio.run(main())


async def timed(lookup: Awaitable[T]) -> tuple[T | OSError, float]:
    """The lookup's outcome (its result or its OSError) and how long it took."""
    started = time.monotonic()
    try:
        outcome: T | OSError = await lookup
    except OSError as error:
        outcome = error
    return outcome, time.monotonic() - started


def test_a_name_resolves_to_its_address_through_the_configured_server(dns_server: DnsServer) -> None:
    results = with_resolver(lambda resolver: resolver.resolve("ok.test", 443, socket.AF_INET))

    assert [(result["hostname"], result["host"], result["port"], result["family"]) for result in results] == [
        ("ok.test", "127.0.0.1", 443, socket.AF_INET)
    ]
    assert results[0]["flags"] == socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    assert dns_server.queries("ok.test") == 1


def test_both_families_come_back_for_af_unspec_and_only_the_asked_one_otherwise(dns_server: DnsServer) -> None:
    async def scenario(resolver: BoundedResolver) -> tuple[set, set]:
        any_family = await resolver.resolve("both.test", 80, socket.AF_UNSPEC)
        ipv6_only = await resolver.resolve("both.test", 80, socket.AF_INET6)
        return {(r["family"], r["host"]) for r in any_family}, {(r["family"], r["host"]) for r in ipv6_only}

    any_family, ipv6_only = with_resolver(scenario)

    assert any_family == {(socket.AF_INET, "127.0.0.2"), (socket.AF_INET6, "::2")}
    assert ipv6_only == {(socket.AF_INET6, "::2")}


def test_a_name_with_no_address_of_the_asked_family_fails_as_a_connection_error(dns_server: DnsServer) -> None:
    error, _ = with_resolver(lambda resolver: timed(resolver.resolve("ok.test", 443, socket.AF_INET6)))

    assert type(error) is OSError
    assert error.errno is None


def test_an_unknown_name_fails_as_a_connection_error(dns_server: DnsServer) -> None:
    error, _ = with_resolver(lambda resolver: timed(resolver.resolve("nope.test", 443)))

    assert type(error) is OSError
    assert error.errno is None
    assert "not found" in str(error)


def test_a_silent_name_server_fails_the_lookup_within_the_timeout(dns_server: DnsServer) -> None:
    error, elapsed = with_resolver(lambda resolver: timed(resolver.resolve("hang.test", 443)))

    # An OSError without errno, not a TimeoutError: aiohttp would report that as a read timeout.
    assert type(error) is OSError
    assert error.errno is None
    assert TIMEOUT_SECONDS * 0.8 <= elapsed < TIMEOUT_SECONDS + SCHEDULING_SLACK_SECONDS


def test_aiohttp_reports_a_silent_name_server_as_a_dns_connection_error(dns_server: DnsServer) -> None:
    async def scenario(resolver: BoundedResolver) -> BaseException:
        connector = aiohttp.TCPConnector(resolver=resolver, ttl_dns_cache=10)
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientError) as raised:
                await session.get("http://hang.test:9/", timeout=aiohttp.ClientTimeout(total=5))
        return raised.value

    error = with_resolver(scenario)

    assert isinstance(error, aiohttp.ClientConnectorDNSError)
    assert error_name(error) == "ConnectionError"


def test_a_silent_name_server_does_not_delay_other_lookups(dns_server: DnsServer) -> None:
    async def scenario(resolver: BoundedResolver) -> tuple[float, int, list]:
        # 50 different names, so the 50 lookups cannot share one query.
        silent_lookups = [asyncio.create_task(resolver.resolve(f"n{i}.hang.test", 443)) for i in range(50)]
        await asyncio.sleep(0)  # they start first
        _, elapsed = await timed(resolver.resolve("ok.test", 443))
        still_waiting = sum(not lookup.done() for lookup in silent_lookups)
        return elapsed, still_waiting, await asyncio.gather(*silent_lookups, return_exceptions=True)

    elapsed, still_waiting, silent_outcomes = with_resolver(scenario)

    assert elapsed < SCHEDULING_SLACK_SECONDS < TIMEOUT_SECONDS
    assert still_waiting == 50
    assert all(type(outcome) is OSError for outcome in silent_outcomes)
    assert sum(dns_server.queries(f"n{i}.hang.test") for i in range(50)) >= 50


@pytest.mark.parametrize("failing_name", ["nope.test", "hang.test"], ids=["nxdomain", "silent"])
def test_a_failed_lookup_is_remembered_so_the_next_one_does_not_reach_the_server(dns_server: DnsServer, failing_name: str) -> None:
    async def scenario(resolver: BoundedResolver) -> tuple[int, OSError | object, float]:
        await timed(resolver.resolve(failing_name, 443))
        queries_after_first = dns_server.queries(failing_name)
        second, elapsed = await timed(resolver.resolve(failing_name, 443))
        return queries_after_first, second, elapsed

    queries_after_first, second, elapsed = with_resolver(scenario)

    assert queries_after_first >= 1
    assert dns_server.queries(failing_name) == queries_after_first
    assert type(second) is OSError
    assert elapsed < 0.05


def test_a_remembered_failure_is_forgotten_after_its_ttl(dns_server: DnsServer) -> None:
    async def scenario(resolver: BoundedResolver) -> tuple[int, int]:
        await timed(resolver.resolve("nope.test", 443))
        await timed(resolver.resolve("nope.test", 443))
        queries_within_ttl = dns_server.queries("nope.test")
        await asyncio.sleep(NEGATIVE_TTL_SECONDS + 0.1)
        await timed(resolver.resolve("nope.test", 443))
        return queries_within_ttl, dns_server.queries("nope.test")

    queries_within_ttl, queries_after_ttl = with_resolver(scenario)

    assert queries_within_ttl == 1
    assert queries_after_ttl == 2


def test_concurrent_lookups_of_one_host_send_one_query(dns_server: DnsServer) -> None:
    async def scenario(resolver: BoundedResolver) -> list:
        return await asyncio.gather(*(resolver.resolve("ok.test", port, socket.AF_INET) for port in range(8000, 8020)))

    results = with_resolver(scenario)

    assert dns_server.queries("ok.test") == 1
    # Shared, yet each caller gets its own port.
    assert [(result[0]["host"], result[0]["port"]) for result in results] == [("127.0.0.1", p) for p in range(8000, 8020)]


def test_a_caller_giving_up_does_not_cancel_the_lookup_others_share(dns_server: DnsServer) -> None:
    async def scenario(resolver: BoundedResolver) -> tuple[bool, list]:
        impatient = asyncio.create_task(resolver.resolve("ok.test", 443))
        patient = asyncio.create_task(resolver.resolve("ok.test", 443))
        await asyncio.sleep(0)  # both have joined the one lookup
        impatient.cancel()
        results = await patient
        return impatient.cancelled(), results

    impatient_cancelled, results = with_resolver(scenario)

    assert impatient_cancelled
    assert [result["host"] for result in results] == ["127.0.0.1"]
    assert dns_server.queries("ok.test") == 1


def test_localhost_resolves_from_the_hosts_file_without_asking_the_server(dns_server: DnsServer) -> None:
    results = with_resolver(lambda resolver: resolver.resolve("localhost", 80, socket.AF_INET))

    assert [result["host"] for result in results] == ["127.0.0.1"]
    assert dns_server.queries("localhost") == 0


def test_a_misformatted_name_server_is_refused_when_the_resolver_is_made() -> None:
    with pytest.raises(ImproperlyConfigured, match="WEBHOOK_DNS_SERVERS"):
        BoundedResolver(servers=["not an address"])


@pytest.mark.parametrize(("bound_seconds", "server_count"), [(5.0, 1), (5.0, 3), (0.5, 1), (30.0, 2)])
def test_c_ares_gives_up_by_itself_within_the_lookup_timeout(bound_seconds: float, server_count: int) -> None:
    first_try_seconds, tries = c_ares_timing(bound_seconds, server_count)

    # Each round asks every server, and doubles the timeout of the one before.
    assert server_count * first_try_seconds * (2**tries - 1) <= bound_seconds + 1e-9
    assert tries >= 1


def test_closing_the_resolver_ends_its_lookups_at_once_with_a_connection_error(dns_server: DnsServer) -> None:
    async def scenario(resolver: BoundedResolver) -> tuple[object, float]:
        lookup = asyncio.create_task(timed(resolver.resolve("hang.test", 443)))
        await asyncio.sleep(0.05)  # its query is out
        await resolver.close()
        return await lookup

    error, elapsed = with_resolver(scenario)

    assert type(error) is OSError
    assert elapsed < TIMEOUT_SECONDS


def test_the_first_lookup_in_a_new_process_resolves():
    # A fresh process: every worker's first webhook call to a hostname is this lookup
    program = (
        "import asyncio, socket, django; django.setup()\n"
        "from messages.resolver import BoundedResolver\n"
        "async def first():\n"
        "    return await BoundedResolver().resolve('localhost', 80, socket.AF_UNSPEC)\n"
        "print(sorted(result['host'] for result in asyncio.run(first())))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    completed = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0, completed.stderr
    assert "127.0.0.1" in completed.stdout
