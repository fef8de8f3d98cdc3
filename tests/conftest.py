"""Shared fixtures: a real Redis, Celery worker and beat, and an HTTP receiver on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from messages.models import WAITING_STATUSES, Message, MessageStatus
from tests.support import processes
from tests.support.dns_server import RESOLVING_NAME, SILENT_NAME, DnsServer
from tests.support.hostile_receiver import HostileReceiver
from tests.support.ports import free_port
from tests.support.processes import RUN_DIR
from tests.support.receiver import Receiver
from tests.support.waits import wait_until


@pytest.fixture(scope="session")
def redis_server() -> Iterator[processes.RedisServer]:
    server = processes.RedisServer(port=int(os.environ["TEST_REDIS_PORT"]), run_dir=RUN_DIR)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _redis_for_every_test(redis_server: processes.RedisServer) -> None:
    """Every test sees the same Redis the settings point at; none needs to ask for it."""


@pytest.fixture(autouse=True)
def _no_counted_requests_or_cached_health(redis_server: processes.RedisServer) -> None:
    """Every test starts with no request counted against its address (all come from 127.0.0.1)
    and no /health report cached, in Redis or in this process, by an earlier test."""
    from messages import health, rate_windows

    client = redis_server.client()
    stale = [*client.scan_iter(rate_windows.COUNTER_KEY.partition("{")[0] + "*"), health.REPORT_KEY]
    client.delete(*stale)
    rate_windows.forget_counts()
    health.forget_reports()


@pytest.fixture
def redis_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The web code's Redis clients (the limiters' too) point at a port nothing listens on (refused at once: no
    retries, where the real client's would take seconds)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from messages import redis_keys

    closed = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(redis_keys, "redis_client", lambda: closed)
    monkeypatch.setattr(redis_keys, "limiter_redis_client", lambda: closed)


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(answers={RESOLVING_NAME: "127.0.0.1"}, silent={SILENT_NAME})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker_env(django_db_setup: None, django_db_blocker, dns_server: DnsServer) -> dict[str, str]:
    with django_db_blocker.unblock():
        database_name = str(connection.settings_dict["NAME"])
    return processes.process_env(SCHEDULER_TEST_DATABASE_NAME=database_name, WEBHOOK_DNS_SERVERS=dns_server.address)


# The session's Celery processes an earlier test started: they go on reading and writing the test
# database between the tests that need them.
SESSION_PROCESSES: list[processes.CeleryProcess] = []


@pytest.fixture
def no_background_processes() -> None:
    """For a test that migrates the test database back and forth: the session's workers and beat,
    if an earlier test started them, are stopped first (the tests that need them start them
    again). Their queries against a schema being changed, or their writes against PostgreSQL's
    TRUNCATE after the test, deadlocked (CI, once the batch tests' end-to-end test started them
    before tests/test_confidential.py)."""
    for process in SESSION_PROCESSES:
        process.stop()


@pytest.fixture(scope="session")
def _session_worker(worker_env: dict[str, str], redis_server: processes.RedisServer) -> Iterator[processes.CeleryProcess]:
    # Tasks left by tests that ran below the worker would point at rolled-back rows.
    redis_server.client().flushall()
    worker = processes.worker("worker-1", env=worker_env, run_dir=RUN_DIR)
    worker.restart()
    SESSION_PROCESSES.append(worker)
    yield worker
    worker.stop()


@pytest.fixture
def celery_worker(_session_worker: processes.CeleryProcess) -> Iterator[processes.CeleryProcess]:
    """The session's worker; a test that kills it gets it restarted afterwards, and one that
    stopped it (no_background_processes) before the next that needs it."""
    _session_worker.ensure_running()
    yield _session_worker
    _session_worker.ensure_running()
    _let_the_worker_go_idle()


def _let_the_worker_go_idle() -> None:
    """Before the test database is flushed: a worker still recording an attempt would hold row
    locks that PostgreSQL's TRUNCATE can deadlock with."""
    Message.objects.filter(status__in=WAITING_STATUSES).delete()
    wait_until(
        lambda: not Message.objects.filter(status=MessageStatus.SENDING).exists(), timeout=30, what="calls in flight to finish"
    )


@pytest.fixture(scope="session")
def _session_maintenance(worker_env: dict[str, str], redis_server: processes.RedisServer) -> Iterator[processes.CeleryProcess]:
    maintenance = processes.maintenance_worker("maintenance-1", env=worker_env, run_dir=RUN_DIR)
    maintenance.restart()
    SESSION_PROCESSES.append(maintenance)
    yield maintenance
    maintenance.stop()


@pytest.fixture(scope="session")
def _session_beat(worker_env: dict[str, str], _session_maintenance: processes.CeleryProcess) -> Iterator[processes.CeleryProcess]:
    beat = processes.beat("beat-1", env=worker_env, run_dir=RUN_DIR)
    beat.restart()
    SESSION_PROCESSES.append(beat)
    yield beat
    beat.stop()


@pytest.fixture
def celery_beat(
    _session_beat: processes.CeleryProcess, _session_maintenance: processes.CeleryProcess
) -> Iterator[processes.CeleryProcess]:
    """The session's beat and the consumer of its ticks; a test that kills either gets it
    restarted afterwards, and one that stopped them (no_background_processes) before the next."""
    _session_maintenance.ensure_running()
    _session_beat.ensure_running()
    yield _session_beat
    _session_beat.ensure_running()
    _session_maintenance.ensure_running()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hostile() -> Iterator[HostileReceiver]:
    """A receiver that answers as hostile ones do, by the path's first segment (see its module)."""
    server = HostileReceiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def service(celery_worker: processes.CeleryProcess, celery_beat: processes.CeleryProcess, receiver: Receiver) -> Receiver:
    """The whole service running (worker, beat and its consumer), delivering to `receiver`."""
    return receiver


@pytest.fixture
def hostile_service(
    celery_worker: processes.CeleryProcess, celery_beat: processes.CeleryProcess, hostile: HostileReceiver
) -> HostileReceiver:
    """The whole service running, delivering to the `hostile` receiver."""
    return hostile


@pytest.fixture
def hook_path() -> str:
    """A path of the receiver's that only this test calls."""
    return f"/hook/{uuid.uuid4().hex}"


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}")
    return client


@pytest.fixture
def anonymous_api() -> APIClient:
    return APIClient()
