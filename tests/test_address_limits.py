"""Per-address limits: failed API authentications, the public endpoints, failed admin logins; and
what every limiter does when Redis does not answer (RATE_LIMIT_ON_REDIS_ERROR)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.checks import run_checks
from django.test import RequestFactory
from rest_framework.test import APIClient

from messages import address_limits, rate_windows, redis_keys
from messages.api_keys import create_api_key

pytestmark = pytest.mark.django_db

ADMIN_LOGIN = "/admin/login/"


@pytest.fixture
def hung_redis(settings) -> Iterator[None]:
    """REDIS_URL points at a listener that accepts connections and never answers: a hung Redis."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept_and_say_nothing() -> None:
        while not stopping.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    settings.REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    redis_keys.redis_client.cache_clear()
    redis_keys.limiter_redis_client.cache_clear()
    yield
    redis_keys.redis_client.cache_clear()
    redis_keys.limiter_redis_client.cache_clear()
    stopping.set()
    thread.join()
    for connection in [listener, *held]:
        connection.close()


def client_with(authorization: str | None, address: str = "127.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def assert_refused(response, status: int, *, window_seconds: float) -> None:
    assert response.status_code == status
    assert 0 < int(response["Retry-After"]) <= window_seconds
    assert response.json()["detail"]


# --- Failed API authentications ------------------------------------------------------------


def test_an_address_past_the_failed_auth_limit_gets_429_even_with_a_valid_api_key(settings):
    # Given a limit of 3 failed authentications a minute, and an API key
    settings.API_FAILED_AUTH_LIMIT = (3, 60.0)
    _, secret = create_api_key(name="real")
    wrong = client_with("Bearer not-the-token")

    # When an address fails 3 times (a missing header fails too)
    statuses = [wrong.get("/messages").status_code for _ in range(2)] + [client_with(None).get("/messages").status_code]

    # Then its next request is refused, with a wrong token or a valid key, and other addresses are not
    assert statuses == [401, 401, 401]
    assert_refused(wrong.get("/messages"), 429, window_seconds=60)
    assert_refused(client_with(f"Bearer {secret}").get("/messages"), 429, window_seconds=60)
    assert client_with(f"Bearer {secret}", address="10.1.2.3").get("/messages").status_code == 200


def test_api_token_still_passes_from_an_address_that_wrong_tokens_blocked(settings, redis_server):
    # Given a proxy in front and TRUSTED_PROXY_COUNT=0, so every client has the proxy's address,
    # and one client that sent wrong tokens until that address was blocked
    settings.TRUSTED_PROXY_COUNT = 0
    settings.API_FAILED_AUTH_LIMIT = (3, 60.0)
    proxy = "10.0.0.1"
    assert [client_with("Bearer guessed", address=proxy).get("/messages").status_code for _ in range(3)] == [401] * 3
    assert client_with("Bearer guessed", address=proxy).get("/messages").status_code == 429
    redis_server.client().config_resetstat()

    # When another client behind the same proxy sends API_TOKEN
    operator = client_with(f"Bearer {django_settings.API_TOKEN}", address=proxy)
    statuses = [operator.get("/messages").status_code for _ in range(3)]

    # Then it is served, without a count read, and the guesser stays blocked
    assert statuses == [200, 200, 200]
    assert "cmdstat_get" not in redis_server.client().info("commandstats")
    assert client_with("Bearer guessed", address=proxy).get("/messages").status_code == 429


def test_requests_with_a_valid_token_never_count_as_failures(settings, api):
    settings.API_FAILED_AUTH_LIMIT = (1, 60.0)

    assert [api.get("/messages").status_code for _ in range(5)] == [200] * 5


def test_a_blocked_address_costs_one_redis_get_and_no_query_or_key_lookup(
    settings, redis_server, monkeypatch, django_assert_num_queries
):
    # Given an address that failed once too often, against a limit of 1
    settings.API_FAILED_AUTH_LIMIT = (1, 60.0)
    _, secret = create_api_key(name="real")
    client = client_with("Bearer whs_not-a-key")
    assert client.get("/messages").status_code == 401
    monkeypatch.setattr("messages.api.authentication.find_active_key", lambda token: pytest.fail("token hashed"))
    redis_server.client().config_resetstat()

    # When it sends a real key
    with django_assert_num_queries(0):
        response = client_with(f"Bearer {secret}").get("/messages")

    # Then it is refused before any view, hash or query ran: Redis saw one GET and nothing else
    assert response.status_code == 429
    commands = {name: stats["calls"] for name, stats in redis_server.client().info("commandstats").items()}
    assert commands.pop("cmdstat_get") == 1
    # (what else Redis saw is this test's own client: its HELLO, CONFIG RESETSTAT and INFO)
    assert not {name for name in commands if not name.startswith(("cmdstat_config", "cmdstat_info", "cmdstat_hello"))}


# --- Public endpoints ----------------------------------------------------------------------


def test_public_endpoints_past_their_limit_get_429_with_a_token_or_without(settings, anonymous_api):
    # Given 4 public requests a minute, shared by the public endpoints
    settings.API_PUBLIC_RATE_LIMIT = (4, 60.0)

    # When an address makes them, one with a header these views never check
    statuses = [anonymous_api.get(path).status_code for path in ["/health", "/readyz", "/openapi.json", "/docs"]]
    with_a_header = client_with("Bearer anything")

    # Then the fifth /health is refused, and so is the header-carrying one
    assert statuses == [200, 200, 200, 200]
    assert_refused(anonymous_api.get("/health"), 429, window_seconds=60)
    assert_refused(with_a_header.get("/readyz"), 429, window_seconds=60)
    assert client_with(None, address="10.9.9.9").get("/health").status_code == 200


def test_livez_is_limited_too_counted_in_this_process_alone(settings, anonymous_api, redis_server):
    settings.API_PUBLIC_RATE_LIMIT = (2, 60.0)
    redis_server.client().config_resetstat()

    statuses = [anonymous_api.get("/livez").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert "cmdstat_incr" not in redis_server.client().info("commandstats")


def test_probes_every_two_seconds_are_never_limited_at_the_default(settings, anonymous_api):
    # Given the default limit, and a window's worth of probes from one address (a kubelet's
    # liveness and readiness probes and a monitor's /health, each every 2 s)
    assert settings.API_PUBLIC_RATE_LIMIT == (120, 60.0)
    probes_per_window = 60 // 2

    statuses = {anonymous_api.get(path).status_code for _ in range(probes_per_window) for path in ["/livez", "/readyz", "/health"]}

    assert statuses == {200}


# --- Admin logins --------------------------------------------------------------------------


def test_admin_logins_past_the_failure_limit_get_a_plain_429(settings, client):
    # Given a limit of 3 failed logins, and an admin
    settings.ADMIN_LOGIN_FAILURE_LIMIT = (3, 900.0)
    User.objects.create_superuser("root", "root@example.com", "a-long-password-1")
    wrong = {"username": "root", "password": "guessed", "next": "/admin/"}

    # When an address fails 3 times
    statuses = [client.post(ADMIN_LOGIN, wrong).status_code for _ in range(3)]

    # Then even the right password is refused from it, in plain text with Retry-After
    assert statuses == [200, 200, 200]
    response = client.post(ADMIN_LOGIN, {**wrong, "password": "a-long-password-1"})
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/plain")
    assert 0 < int(response["Retry-After"]) <= 900
    assert b"Too many failed logins" in response.content
    # And the login page itself still shows
    assert client.get(ADMIN_LOGIN).status_code == 200


def test_a_successful_admin_login_does_not_count_as_a_failure(settings, client):
    settings.ADMIN_LOGIN_FAILURE_LIMIT = (1, 900.0)
    User.objects.create_superuser("root", "root@example.com", "a-long-password-1")
    right = {"username": "root", "password": "a-long-password-1", "next": "/admin/"}

    assert client.post(ADMIN_LOGIN, right).status_code == 302
    client.logout()
    assert client.post(ADMIN_LOGIN, right).status_code == 302


# --- Redis down ----------------------------------------------------------------------------


def test_with_redis_down_a_valid_token_is_served_and_failed_auth_is_still_limited_per_process(settings, redis_down, api):
    # Given refusal on Redis errors but no per-key limit, and 2 failed authentications allowed
    settings.RATE_LIMIT_ON_REDIS_ERROR = "refuse"
    settings.API_FAILED_AUTH_LIMIT = (2, 60.0)
    wrong = client_with("Bearer wrong", address="192.0.2.7")

    # Then the API still answers a valid token (it needs the database, not Redis)
    assert api.get("/messages").status_code == 200
    # And a guesser still meets the limit, counted by this process
    assert [wrong.get("/messages").status_code for _ in range(2)] == [401, 401]
    assert_refused(wrong.get("/messages"), 429, window_seconds=60)


def test_after_a_redis_error_the_limiters_leave_redis_alone_for_a_moment(settings, redis_down, monkeypatch):
    # Given Redis refusing connections
    asked = []
    closed = redis_keys.limiter_redis_client()

    def counted_client():
        asked.append(1)
        return closed

    monkeypatch.setattr(redis_keys, "limiter_redis_client", counted_client)
    wrong = client_with("Bearer wrong", address="192.0.2.8")

    # When requests keep coming
    statuses = [wrong.get("/messages").status_code for _ in range(3)]

    # Then only the first waited for Redis
    assert statuses == [401, 401, 401]
    assert len(asked) == 1


def test_the_pause_after_redis_errors_doubles_while_they_go_on_and_ends_at_a_success():
    pause = rate_windows.RedisPause()
    error = ConnectionError("refused")

    def paused_at(now: float) -> bool:
        try:
            pause.check(now=now)
        except rate_windows.CountUnavailable:
            return True
        return False

    # Given errors each time the pause ends: 2 s, 4 s, 8 s, 16 s, then 30 s at most
    ends = []
    now = 0.0
    for _ in range(6):
        pause.start(error, now=now)
        ends.append(pause.until)
        now = pause.until
    assert ends == [2.0, 6.0, 14.0, 30.0, 60.0, 90.0]
    assert paused_at(89.9)
    assert not paused_at(90.0)

    # When requests that were waiting already fail while a pause runs, it is not lengthened
    pause.start(error, now=85.0)
    assert pause.until == 90.0

    # And after a success, the next error pauses for 2 s again
    pause.succeeded()
    pause.start(error, now=100.0)
    assert pause.until == 102.0


def test_a_hung_redis_delays_an_api_request_a_fraction_of_a_second_once(hung_redis):
    # Given an API key, and a Redis that accepts connections and never answers
    _, secret = create_api_key(name="real")
    client = client_with(f"Bearer {secret}")

    # When requests come with the key (each read of its address's failures waits on Redis)
    started = time.monotonic()
    first = client.get("/messages")
    first_took = time.monotonic() - started
    started = time.monotonic()
    second = client.get("/messages")
    second_took = time.monotonic() - started

    # Then the first waits for the limiters' short timeout, not redis-py's 5 s and its retries,
    # and the next does not ask Redis at all
    assert (first.status_code, second.status_code) == (200, 200)
    assert first_took < 2.0
    assert second_took < 0.2


def test_with_redis_down_refuse_answers_503_from_the_per_key_throttle(settings, redis_down, api):
    # Given a per-key limit the operator asked for, which Redis alone can count across processes
    settings.RATE_LIMIT_ON_REDIS_ERROR = "refuse"
    settings.API_RATE_LIMIT = (100, 60.0)

    assert_refused(api.get("/messages"), 503, window_seconds=60)


def test_with_redis_down_allow_lets_requests_past_the_per_key_limit(settings, redis_down, api):
    settings.RATE_LIMIT_ON_REDIS_ERROR = "allow"
    settings.API_RATE_LIMIT = (1, 60.0)

    assert [api.get("/messages").status_code for _ in range(3)] == [200, 200, 200]


def test_with_redis_down_admin_logins_are_still_limited_per_process(settings, redis_down, client):
    settings.RATE_LIMIT_ON_REDIS_ERROR = "refuse"
    settings.ADMIN_LOGIN_FAILURE_LIMIT = (2, 60.0)

    statuses = [client.post(ADMIN_LOGIN, {"username": "root", "password": "guessed"}).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_with_redis_down_probes_answer_and_say_so_and_are_still_counted(settings, redis_down, anonymous_api):
    # Given refusal on Redis errors, and a small public limit
    settings.RATE_LIMIT_ON_REDIS_ERROR = "refuse"
    settings.API_PUBLIC_RATE_LIMIT = (3, 60.0)

    # Then the probes are not refused: they report Redis down, and are counted in this process
    assert anonymous_api.get("/livez").status_code == 200
    health = anonymous_api.get("/health")
    assert (health.status_code, health.json()["redis"]) == (503, "disconnected")
    readiness = anonymous_api.get("/readyz")
    assert (readiness.status_code, readiness.json()["failing"]) == (503, ["redis"])
    assert_refused(anonymous_api.get("/readyz"), 429, window_seconds=60)


# --- The client's address and the settings -------------------------------------------------


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        (0, "6.6.6.6", "10.0.0.1"),  # no proxy trusted: the header is anyone's to write
        (1, "", "10.0.0.1"),
        (1, "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # the left entry is the client's own, forgeable
        (2, "6.6.6.6, 203.0.113.7, 10.0.0.9", "203.0.113.7"),
        (3, "203.0.113.7", "203.0.113.7"),
    ],
)
def test_the_client_address_is_the_one_the_outermost_trusted_proxy_saw(settings, proxies, forwarded_for, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().get("/messages", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)

    assert address_limits.client_address(request) == expected


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8:1:2::7]:443", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::7]", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),  # any address of the /64 is the same host's
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client as a dual-stack proxy writes it
        # Not an IP address: counted as REMOTE_ADDR, never as an address of its own
        ("anything-at-all", "10.0.0.1"),
        ("unknown", "10.0.0.1"),
        ("203.0.113.7:http", "10.0.0.1"),
        ("[2001:db8::7]x", "10.0.0.1"),
        ("203.0.113.7 extra", "10.0.0.1"),
    ],
)
def test_a_forwarded_entry_counts_as_an_ip_address_or_as_remote_addr(settings, forwarded_for, expected):
    settings.TRUSTED_PROXY_COUNT = 1
    request = RequestFactory().get("/messages", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)

    assert address_limits.client_address(request) == expected


def test_an_ipv6_remote_addr_counts_as_its_64(settings):
    # Given a limit of 2 failures, and a host that owns 2001:db8:5:6::/64
    settings.API_FAILED_AUTH_LIMIT = (2, 60.0)
    addresses = ["2001:db8:5:6::1", "2001:db8:5:6::2", "2001:db8:5:6:ffff::3"]

    # When it fails from two of its addresses
    statuses = [client_with("Bearer wrong", address=address).get("/messages").status_code for address in addresses[:2]]

    # Then a third of them is blocked too, and the next /64 is not
    assert statuses == [401, 401]
    assert client_with("Bearer wrong", address=addresses[2]).get("/messages").status_code == 429
    assert client_with("Bearer wrong", address="2001:db8:5:7::1").get("/messages").status_code == 401


@pytest.mark.parametrize(("https", "proxies", "warned"), [(True, 0, True), (True, 1, False), (False, 0, False)])
def test_https_without_trusted_proxies_warns_that_clients_share_the_proxy_s_address(settings, https, proxies, warned):
    settings.HTTPS = https
    settings.TRUSTED_PROXY_COUNT = proxies

    assert ("scheduler.W001" in {message.id for message in run_checks()}) is warned


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20/min", (20, 60.0)), ("10/15min", (10, 900.0)), ("600/m", (600, 60.0)), ("5/2h", (5, 7200.0)), ("", None)],
)
def test_limits_read_like_api_rate_limit_with_a_window_length(monkeypatch, text, expected):
    from scheduler_project import settings as project_settings

    monkeypatch.setenv("SOME_LIMIT", text)

    assert project_settings._rate_limit_from_env("SOME_LIMIT") == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_ON_REDIS_ERROR", "ignore"),
        ("API_FAILED_AUTH_LIMIT", "20/fortnight"),
        ("ADMIN_LOGIN_FAILURE_LIMIT", "10/0min"),
        ("API_PUBLIC_RATE_LIMIT", "0/min"),
    ],
)
def test_a_bad_limit_setting_fails_at_start_up(name, value):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", name: value}

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr
