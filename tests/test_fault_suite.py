"""More faults on the real path: beat and the web server killed, the receiver away at due
time, PostgreSQL restarted under load, the worker's clock. Each test prints how long the
service took to recover."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from messages import broker
from messages.models import DeliveryAttempt, Message, MessageStatus
from tests.conftest import RUN_DIR
from tests.support.processes import ROOT, wait_until
from tests.support.receiver import Receiver
from tests.test_delivery_end_to_end import iso, schedule

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def service(celery_worker, celery_beat, receiver):
    return receiver


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_beat_killed_with_sigkill_loses_nothing(api, service, celery_beat, hook_path):
    # Given messages beyond the horizon, and beat killed before it could move them in
    due = datetime.now(UTC) + timedelta(seconds=6)
    for n in range(3):
        schedule(api, service, hook_path, message_id=f"beatless-{n}", at=due, payload={"id": f"beatless-{n}"})
    celery_beat.kill()
    time.sleep(1)

    # When a new beat starts
    broker.redis_client().delete(broker.HEARTBEAT_KEY)
    restarted = time.monotonic()
    celery_beat.restart()
    wait_until(lambda: broker.seconds_since_heartbeat() is not None, timeout=10, what="the first tick")
    print(f"\nbeat SIGKILL: first tick {time.monotonic() - restarted:.1f} s after the restart")

    # Then each message arrives once, on time
    calls = service.wait_for_calls(hook_path, 3, timeout=20)
    time.sleep(2)
    assert Counter(call.json["id"] for call in service.calls_to(hook_path)) == Counter(
        {f"beatless-{n}": 1 for n in range(3)})
    assert all(0 <= call.arrived_at - due.timestamp() < 3 for call in calls)


def test_web_server_killed_mid_request_leaves_no_half_message(worker_env, service, hook_path):
    port = free_port()
    command = [sys.executable, "-m", "scheduler_project.web_server"]
    env = {**worker_env, "API_HOST": "127.0.0.1", "API_PORT": str(port), "WEB_CONCURRENCY": "1"}

    def start_web() -> subprocess.Popen:
        web = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                               stdout=open(Path(RUN_DIR) / "web.log", "ab"), stderr=subprocess.STDOUT)
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), timeout=30, what="the web server")
        return web

    body = (f'{{"id": "half-sent", "scheduleTo": "{iso(datetime.now(UTC))}", "payload": {{"id": "half-sent"}}, '
            f'"webhookUrl": "{service.url(hook_path)}"}}').encode()
    web = start_web()
    try:
        # Given a POST whose body is half sent
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                           + settings.API_TOKEN.encode() + b"\r\n"
                           b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                           + b"\r\n\r\n" + body[: len(body) // 2])
            time.sleep(0.5)
            # When the whole web server is killed with SIGKILL
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(timeout=10)
        # Then nothing of it was stored
        assert not Message.objects.filter(message_id="half-sent").exists()

        # And once it is back, the client's retry is accepted and delivered once
        restarted = time.monotonic()
        web = start_web()
        response = requests.post(f"http://127.0.0.1:{port}/messages", data=body, timeout=10,
                                 headers={"Authorization": f"Bearer {settings.API_TOKEN}", "Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        print(f"\nweb SIGKILL: accepting again {time.monotonic() - restarted:.1f} s after restart")
        service.wait_for_calls(hook_path, 1, timeout=10)
        time.sleep(1.5)
        assert len(service.calls_to(hook_path)) == 1
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code in (200, 503)
    except requests.RequestException:
        return False


def test_a_receiver_down_at_due_time_gets_the_message_when_it_is_back(api, celery_worker, celery_beat):
    # Given a receiver that is not listening when the message comes due
    port = free_port()
    response = api.post("/messages", {"id": "receiver-away", "scheduleTo": iso(datetime.now(UTC)),
                                      "payload": {"id": "receiver-away"},
                                      "webhookUrl": f"http://127.0.0.1:{port}/hook"})
    assert response.status_code == 200
    wait_until(lambda: DeliveryAttempt.objects.filter(message__message_id="receiver-away").exists(),
               timeout=10, what="the first attempt to fail")

    # When it comes back
    receiver = Receiver(port=port)
    receiver.start()
    back = time.time()
    try:
        # Then a retry delivers the message once
        calls = receiver.wait_for_calls("/hook", 1, timeout=15)
        wait_until(lambda: Message.objects.filter(message_id="receiver-away", status=MessageStatus.DELIVERED).exists(),
                   timeout=10, what="delivery to be recorded")
        time.sleep(1)
        assert len(receiver.calls_to("/hook")) == len(calls) == 1
        errors = list(DeliveryAttempt.objects.filter(message__message_id="receiver-away")
                      .order_by("number").values_list("error", flat=True))
        assert errors[0] == "ConnectionError"
        assert errors[-1] == ""
        print(f"\nreceiver down: delivered {calls[0].arrived_at - back:.1f} s after it came back, "
              f"after {len(errors)} attempts")
    finally:
        receiver.stop()


def test_the_workers_clock_agrees_with_the_databases(api, celery_worker, celery_beat):
    broker.redis_client().delete(broker.CLOCK_SKEW_KEY)
    wait_until(lambda: broker.last_worker_clock_skew() is not None, timeout=10, what="a beat tick")

    skew = broker.last_worker_clock_skew()
    health = api.get("/health").json()

    print(f"\nworker clock minus database clock: {skew * 1000:.1f} ms")
    assert abs(skew) < 0.5
    assert health["worker_clock_skew_ms"] is not None


def _postgres_cluster() -> str | None:
    if connection.vendor != "postgresql" or not shutil.which("pg_ctlcluster"):
        return None
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return versions[-1] if versions else None


def test_postgresql_restarted_under_load_loses_and_duplicates_nothing(api, service, hook_path):
    version = _postgres_cluster()
    if version is None:
        pytest.skip("needs the local PostgreSQL cluster (runs in CI's PostgreSQL pass)")
    # Given 40 messages coming due over the next four seconds
    start = datetime.now(UTC) + timedelta(seconds=1)
    ids = [f"pg-{n}" for n in range(40)]
    for n, message_id in enumerate(ids):
        schedule(api, service, hook_path, message_id=message_id, at=start + timedelta(seconds=n * 0.1),
                 payload={"id": message_id})
    connection.close()

    # When PostgreSQL restarts in the middle of them
    time.sleep(1.5)
    restarted = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=60)
    print(f"\nPostgreSQL restart took {time.monotonic() - restarted:.1f} s")

    # Then every message arrives exactly once
    service.wait_for_calls(hook_path, 40, timeout=60)
    time.sleep(3)
    counts = Counter(call.json["id"] for call in service.calls_to(hook_path))
    assert counts == Counter({message_id: 1 for message_id in ids})
    print(f"PostgreSQL restart: all 40 delivered {time.monotonic() - restarted:.1f} s after it began")
    wait_until(lambda: not Message.objects.pending().exists(), timeout=30, what="nothing left pending")
