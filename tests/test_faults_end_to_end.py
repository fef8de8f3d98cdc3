"""Faults on the real path: killed workers, an emptied Redis, duplicate beats and tasks.

Each test checks the two promises: no message lost, none sent twice by the service.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from messages import delivery
from messages.models import DeliveryAttempt, Message, MessageStatus
from messages.queueing import enqueue_group
from tests.conftest import RUN_DIR
from tests.support import processes
from tests.support.processes import wait_until
from tests.support.receiver import Reply
from tests.test_delivery_end_to_end import LATENESS_BOUND_SECONDS, schedule

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

# Recovery after a fault waits for SCHEDULER_RECOVERY_SECONDS (2 s in tests) and a beat tick.
RECOVERY_BOUND_SECONDS = 12.0


@pytest.fixture
def service(celery_worker, celery_beat, receiver):
    return receiver


def schedule_batch(api, receiver, path, *, count: int, at: datetime, prefix: str) -> list[str]:
    ids = [f"{prefix}-{n}" for n in range(count)]
    for message_id in ids:
        schedule(api, receiver, path, message_id=message_id, at=at, payload={"id": message_id})
    return ids


def deliveries_by_id(receiver, path) -> Counter:
    return Counter(call.json["id"] for call in receiver.calls_to(path))


def assert_each_delivered_once(receiver, path, ids, *, due: datetime, bound: float) -> None:
    receiver.wait_for_calls(path, len(ids), timeout=bound + 10)
    # Give any duplicate time to show itself: a recovery cycle and a beat tick.
    time.sleep(3)
    counts = deliveries_by_id(receiver, path)
    assert counts == Counter({message_id: 1 for message_id in ids})
    for call in receiver.calls_to(path):
        assert 0 <= call.arrived_at - due.timestamp() < bound
    wait_until(lambda: not Message.objects.pending().exists(), timeout=5, what="nothing left pending")


def unacked_count(redis_server) -> int:
    return redis_server.client().hlen("unacked")


def wait_until_held_by_the_worker(redis_server, ids: list[str]) -> None:
    """Beat has queued them (one task: they are due together) and the worker holds that task."""
    wait_until(
        lambda: Message.objects.filter(message_id__in=ids, enqueued_at__isnull=False).count() == len(ids)
        and unacked_count(redis_server) >= 1,
        timeout=10, what="the worker to reserve the task",
    )


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
        timeout=40, what="the message to be delivered after recovery",
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
    time.sleep(2)
    assert len(service.calls_to(hook_path)) == len(calls) == 1
    wait_until(
        lambda: Message.objects.get(pk=message.pk).status == MessageStatus.DELIVERED,
        timeout=5, what="delivery to be recorded",
    )


def test_redis_emptied_with_flushall_loses_and_duplicates_nothing(api, service, redis_server, hook_path):
    due = datetime.now(UTC) + timedelta(seconds=2.5)
    ids = schedule_batch(api, service, hook_path, count=5, at=due, prefix="flushed")
    wait_until_held_by_the_worker(redis_server, ids)

    redis_server.client().flushall()

    assert_each_delivered_once(service, hook_path, ids, due=due, bound=RECOVERY_BOUND_SECONDS)


def test_redis_restarted_empty_loses_and_duplicates_nothing(api, service, redis_server, hook_path):
    due = datetime.now(UTC) + timedelta(seconds=2.5)
    ids = schedule_batch(api, service, hook_path, count=5, at=due, prefix="restarted")
    wait_until_held_by_the_worker(redis_server, ids)

    started = time.monotonic()
    redis_server.restart_empty()

    assert_each_delivered_once(service, hook_path, ids, due=due, bound=RECOVERY_BOUND_SECONDS)
    print(f"\nrecovered after Redis restart in {time.monotonic() - started:.1f} s")


def test_two_beats_and_two_workers_deliver_each_message_once(api, service, worker_env, hook_path):
    second_worker = processes.worker("worker-2", env=worker_env, run_dir=RUN_DIR)
    second_beat = processes.beat("beat-2", env=worker_env, run_dir=RUN_DIR)
    second_worker.restart()
    second_beat.start()
    try:
        now = datetime.now(UTC)
        ids = []
        # Some inside the 3 s horizon, some beyond it: both paths, both beats, both workers.
        for n in range(20):
            message_id = f"pair-{n}"
            schedule(api, service, hook_path, message_id=message_id, at=now + timedelta(seconds=1 + n * 0.3),
                     payload={"id": message_id})
            ids.append(message_id)
        service.wait_for_calls(hook_path, 20, timeout=30)
        time.sleep(3)
        assert deliveries_by_id(service, hook_path) == Counter({message_id: 1 for message_id in ids})
        for call in service.calls_to(hook_path):
            due = now + timedelta(seconds=1 + int(call.json["id"].split("-")[1]) * 0.3)
            assert 0 <= call.arrived_at - due.timestamp() < LATENESS_BOUND_SECONDS
    finally:
        second_beat.stop()
        second_worker.stop()


def test_duplicate_tasks_for_one_message_deliver_it_once(api, service, hook_path):
    due = datetime.now(UTC) + timedelta(seconds=1)
    schedule(api, service, hook_path, message_id="twice-queued", at=due, payload={"id": "twice-queued"})
    message = Message.objects.get(message_id="twice-queued")

    for _ in range(3):
        enqueue_group([message.pk], eta=due, message_ids=["twice-queued"], payload_bytes=message.payload_bytes)

    service.wait_for_calls(hook_path, 1, timeout=10)
    time.sleep(2)
    assert len(service.calls_to(hook_path)) == 1


def test_concurrent_posts_of_one_id_give_one_200_and_one_delivery(service, hook_path):
    statuses: list[int] = []
    barrier = threading.Barrier(8)
    # Due after the race is over: once delivered, the id would rightly be free again.
    body = {"id": "race", "scheduleTo": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(), "payload": {"id": "race"},
            "webhookUrl": service.url(hook_path)}

    def post() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}")
        barrier.wait()
        try:
            statuses.append(client.post("/messages", body).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [409] * 7
    service.wait_for_calls(hook_path, 1, timeout=10)
    time.sleep(2)
    assert len(service.calls_to(hook_path)) == 1
