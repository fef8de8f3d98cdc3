"""Faults that kill a process of the service with SIGKILL, on the real path: a delivery worker
holding eta tasks, a worker in the middle of a call, a worker that died between its claim and
its call, beat, and the web server in the middle of a request.

Each test checks the two promises (no message lost, none sent twice by the service) and prints
how long the service took to recover.
"""

from __future__ import annotations

import os
import select
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

from messages import delivery, redis_keys
from messages.models import DeliveryAttempt, Message, MessageStatus
from tests.support.api_calls import iso, schedule, schedule_batch
from tests.support.deliveries import (
    RECOVERY_BOUND_SECONDS,
    assert_each_delivered_once,
    deliveries_by_id,
    wait_until_held_by_the_worker,
)
from tests.support.ports import free_port
from tests.support.processes import ROOT, RUN_DIR
from tests.support.receiver import Reply
from tests.support.waits import nothing_more_arrives, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_worker_killed_while_holding_eta_tasks_loses_and_duplicates_nothing(api, service, celery_worker, redis_server, hook_path):
    # Given a worker holding an eta task for five messages in memory
    due = datetime.now(UTC) + timedelta(seconds=2.5)
    ids = schedule_batch(api, service, hook_path, count=5, at=due, prefix="held")
    wait_until_held_by_the_worker(redis_server, ids)

    # When it is killed with SIGKILL and a new worker starts
    started = time.monotonic()
    celery_worker.kill()
    celery_worker.restart()

    # Then every message arrives once, late only by the recovery delay
    assert_each_delivered_once(service, hook_path, ids, due=due, bound=RECOVERY_BOUND_SECONDS)
    print(f"\nrecovered after worker SIGKILL in {time.monotonic() - started:.1f} s")


def test_worker_killed_mid_call_leaves_nothing_stuck_in_flight(api, service, celery_worker, hook_path):
    # Given a receiver that holds the first call for longer than the test waits
    service.reply(hook_path, Reply(delay=5), then=Reply())
    schedule(api, service, hook_path, message_id="mid-call", at=datetime.now(UTC))
    service.wait_for_calls(hook_path, 1, timeout=10)

    # When the worker dies during that call
    celery_worker.kill()
    celery_worker.restart()

    # Then the stale claim is recovered and the message delivered on a later attempt
    wait_until(
        lambda: Message.objects.filter(message_id="mid-call", status=MessageStatus.DELIVERED).exists(),
        timeout=40,
        what="the message to be delivered after recovery",
    )
    attempts = list(DeliveryAttempt.objects.filter(message__message_id="mid-call").order_by("number"))
    assert [(a.error, a.status_code) for a in attempts] == [(delivery.WORKER_LOST, None), ("", 200)]
    calls = service.calls_to(hook_path)
    # The receiver did get the first call: it is sent again with the same idempotency key.
    assert len(calls) == 2
    delivery_id = Message.objects.get(message_id="mid-call").delivery_id
    assert {call.headers["Idempotency-Key"] for call in calls} == {delivery_id}


def test_a_claim_whose_worker_died_before_calling_is_sent_exactly_once(api, service, hook_path):
    # Given a message claimed by a worker that died before making the call
    schedule(api, service, hook_path, message_id="claimed-then-died", at=datetime.now(UTC) + timedelta(hours=1))
    message = Message.objects.get(message_id="claimed-then-died")
    Message.objects.filter(pk=message.pk).update(due_at=datetime.now(UTC))
    assert delivery.claim_due_messages([message.pk], now=datetime.now(UTC))

    # Then, once the claim has grown too old, it is recovered and sent once
    calls = service.wait_for_calls(hook_path, 1, timeout=40)
    assert len(nothing_more_arrives(lambda: service.calls_to(hook_path), within=2, what="a second call")) == len(calls) == 1
    wait_until(
        lambda: Message.objects.get(pk=message.pk).status == MessageStatus.DELIVERED,
        timeout=5,
        what="delivery to be recorded",
    )


def test_beat_killed_with_sigkill_loses_nothing(api, service, celery_beat, hook_path):
    # Given messages beyond the horizon, and beat killed before it could move them in
    due = datetime.now(UTC) + timedelta(seconds=6)
    for n in range(3):
        schedule(api, service, hook_path, message_id=f"beatless-{n}", at=due, payload={"id": f"beatless-{n}"})
    celery_beat.kill()
    # Its last ticks may still be on their way to the maintenance worker: let them land, so
    # that the first heartbeat after the restart is the new beat's
    wait_until(
        lambda: (age := redis_keys.seconds_since_heartbeat()) is None or age >= 2 * settings.SCHEDULER_POLL_SECONDS,
        timeout=10,
        what="the killed beat's last tick to be recorded",
    )

    # When a new beat starts
    redis_keys.redis_client().delete(redis_keys.HEARTBEAT_KEY)
    restarted = time.monotonic()
    celery_beat.restart()
    wait_until(lambda: redis_keys.seconds_since_heartbeat() is not None, timeout=10, what="the first tick")
    print(f"\nbeat SIGKILL: first tick {time.monotonic() - restarted:.1f} s after the restart")

    # Then each message arrives once, on time
    calls = service.wait_for_calls(hook_path, 3, timeout=20)
    nothing_more_arrives(lambda: service.calls_to(hook_path), within=2, what="a duplicate")
    assert deliveries_by_id(service, hook_path) == Counter({f"beatless-{n}": 1 for n in range(3)})
    assert all(0 <= call.arrived_at - due.timestamp() < 3 for call in calls)


def test_web_server_killed_mid_request_leaves_no_half_message(worker_env, service, hook_path):
    port = free_port()
    command = [sys.executable, "-m", "scheduler_project.web_server"]
    env = {**worker_env, "API_HOST": "127.0.0.1", "API_PORT": str(port), "WEB_CONCURRENCY": "1"}

    def start_web() -> subprocess.Popen:
        web = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=open(Path(RUN_DIR) / "web.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), timeout=30, what="the web server")
        return web

    body = (
        f'{{"id": "half-sent", "scheduleTo": "{iso(datetime.now(UTC))}", "payload": {{"id": "half-sent"}}, '
        f'"webhookUrl": "{service.url(hook_path)}"}}'
    ).encode()
    web = start_web()
    try:
        # Given a POST whose body is half sent
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(
                b"POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + settings.API_TOKEN.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body[: len(body) // 2]
            )
            # The server holds the half request, waiting for the rest
            nothing_more_arrives(lambda: _has_answered(client), within=0.5, what="an answer to the half-sent POST")
            # When the whole web server is killed with SIGKILL
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(timeout=10)
        # Then nothing of it was stored
        assert not Message.objects.filter(message_id="half-sent").exists()

        # And once it is back, the client's retry is accepted and delivered once
        restarted = time.monotonic()
        web = start_web()
        response = requests.post(
            f"http://127.0.0.1:{port}/messages",
            data=body,
            timeout=10,
            headers={"Authorization": f"Bearer {settings.API_TOKEN}", "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        print(f"\nweb SIGKILL: accepting again {time.monotonic() - restarted:.1f} s after restart")
        service.wait_for_calls(hook_path, 1, timeout=10)
        assert len(nothing_more_arrives(lambda: service.calls_to(hook_path), within=1.5, what="a second call")) == 1
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=10)


def _has_answered(client: socket.socket) -> bool:
    """Whether the server has written anything, or closed the connection."""
    readable, _, _ = select.select([client], [], [], 0)
    return bool(readable)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code in (200, 503)
    except requests.RequestException:
        return False
