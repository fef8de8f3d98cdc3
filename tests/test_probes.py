"""/health answers from a shared report at most HEALTH_CACHE_SECONDS old; /livez reads nothing;
/readyz checks the database and Redis only. All three stay reachable over plain HTTP."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict

import pytest
from django.db import OperationalError

from messages import health, redis_keys
from tests.factories import make_message

pytestmark = pytest.mark.django_db


def another_web_process(monkeypatch) -> None:
    """What this process remembers is forgotten, as in a process that has not answered yet."""
    monkeypatch.setattr(health, "_this_process", health._ProcessCopy())


# --- /health -------------------------------------------------------------------------------


def test_two_health_calls_within_the_window_check_the_database_once(
    settings, redis_server, anonymous_api, monkeypatch, django_assert_num_queries
):
    # Given the default window and a report checked once
    assert settings.HEALTH_CACHE_SECONDS == 5
    make_message(message_id="counted")
    first = anonymous_api.get("/health")
    assert first.json()["scheduled_jobs"] == 1

    # When it is asked again, in this process and in another one, after one more message
    make_message(message_id="not-yet-counted")
    with django_assert_num_queries(0):
        again = anonymous_api.get("/health")
        another_web_process(monkeypatch)
        elsewhere = anonymous_api.get("/health")

    # Then both answer the same report, from no query
    assert again.json() == elsewhere.json() == first.json()
    assert again.status_code == elsewhere.status_code == 200
    assert 0 < redis_server.client().pttl(health.REPORT_KEY) <= 5000


@pytest.mark.parametrize(
    ("heartbeat", "status", "kept_for_at_most_ms"),
    [(True, "healthy", 5000), (False, "degraded", health.NOT_HEALTHY_MAX_AGE_SECONDS * 1000)],
)
def test_a_report_that_is_not_healthy_is_kept_a_moment_at_most(
    settings, redis_server, anonymous_api, heartbeat, status, kept_for_at_most_ms
):
    # Given a scheduler that has just run (or has not run yet: a service starting)
    assert settings.HEALTH_CACHE_SECONDS == 5
    if heartbeat:
        redis_keys.record_heartbeat(clock_skew_seconds=0.0)
    else:
        redis_server.client().delete(redis_keys.HEARTBEAT_KEY)

    # When /health is checked
    response = anonymous_api.get("/health")

    # Then only a healthy report is shared for the whole window: a starting service reads
    # healthy a moment after its scheduler's first run
    assert response.json()["status"] == status
    left_ms = redis_server.client().pttl(health.REPORT_KEY)
    assert kept_for_at_most_ms - 1000 < left_ms <= kept_for_at_most_ms


def test_a_slow_check_that_is_not_healthy_is_still_shared(settings, redis_server, monkeypatch):
    # A check slower than the moment a report that is not healthy is kept (Redis or the
    # database slow to answer): were its time counted from the check's start, nothing would be
    # kept, and every waiting request would run a check of its own
    def slow_degraded_check() -> health.HealthReport:
        time.sleep(health.NOT_HEALTHY_MAX_AGE_SECONDS + 0.1)
        return health.HealthReport(scheduler="stopped", failing=["scheduler"])

    monkeypatch.setattr(health, "check_health", slow_degraded_check)
    health.forget_reports()

    health.current_health()

    assert 0 < redis_server.client().pttl(health.REPORT_KEY) <= health.NOT_HEALTHY_MAX_AGE_SECONDS * 1000


def test_health_with_a_zero_window_checks_every_time(settings, anonymous_api):
    settings.HEALTH_CACHE_SECONDS = 0
    make_message(message_id="first")
    assert anonymous_api.get("/health").json()["scheduled_jobs"] == 1

    make_message(message_id="second")

    assert anonymous_api.get("/health").json()["scheduled_jobs"] == 2


def test_while_one_process_checks_the_others_wait_for_its_report(redis_server, django_assert_num_queries):
    # Given another process holding the check's lock, which stores its report 0.1 s later
    client = redis_server.client()
    client.set(health.REPORT_LOCK_KEY, "another", px=2000)
    theirs = health.HealthReport(scheduler="running", scheduled_jobs=42, stuck_messages=0)
    store = threading.Timer(0.1, lambda: client.set(health.REPORT_KEY, json.dumps(asdict(theirs)), px=5000))
    store.start()

    # When this process needs a report
    try:
        with django_assert_num_queries(0):
            report = health.current_health()
    finally:
        store.join()

    # Then it answers theirs rather than checking too
    assert report == theirs


def test_with_redis_down_health_says_so_and_checks_once_per_window_in_each_process(
    redis_down, anonymous_api, django_assert_max_num_queries, django_assert_num_queries
):
    with django_assert_max_num_queries(10):
        first = anonymous_api.get("/health")
    with django_assert_num_queries(0):
        again = anonymous_api.get("/health")

    assert first.status_code == again.status_code == 503
    assert first.json() == again.json()
    assert first.json()["redis"] == "disconnected"
    assert first.json()["failing"] == ["redis"]


# --- /livez and /readyz --------------------------------------------------------------------


def test_livez_reads_neither_the_database_nor_redis(monkeypatch, anonymous_api, django_assert_num_queries):
    monkeypatch.setattr(redis_keys, "redis_client", lambda: pytest.fail("Redis was asked"))

    with django_assert_num_queries(0):
        response = anonymous_api.get("/livez")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_is_ready_when_the_database_and_redis_answer(anonymous_api):
    response = anonymous_api.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "connected", "redis": "connected", "failing": []}


def test_readyz_is_503_when_redis_is_down(redis_down, anonymous_api):
    response = anonymous_api.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unready", "database": "connected", "redis": "disconnected", "failing": ["redis"]}


def test_readyz_is_503_when_the_database_is_down(monkeypatch, anonymous_api):
    class Unreachable:
        def cursor(self):
            raise OperationalError("connection refused")

    monkeypatch.setattr(health, "connection", Unreachable())

    response = anonymous_api.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]


@pytest.mark.parametrize("path", ["/health", "/livez", "/readyz"])
def test_probes_answer_over_plain_http_when_https_redirects_everything_else(settings, client, path):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get(path).status_code in (200, 503)
    assert client.get("/messages").status_code == 301
