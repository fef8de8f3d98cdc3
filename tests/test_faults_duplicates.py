"""Faults that double the work, on the real path: two beats and two workers at once, the same
message's task queued three more times, the same id POSTed by eight clients at once. Each
message must still be accepted once and delivered once.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from messages.models import Message
from messages.queueing import enqueue_group
from tests.support import processes
from tests.support.api_calls import LATENESS_BOUND_SECONDS, schedule
from tests.support.deliveries import DUPLICATE_WINDOW_SECONDS, deliveries_by_id
from tests.support.processes import RUN_DIR
from tests.support.waits import nothing_more_arrives

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


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
            schedule(
                api, service, hook_path, message_id=message_id, at=now + timedelta(seconds=1 + n * 0.3), payload={"id": message_id}
            )
            ids.append(message_id)
        service.wait_for_calls(hook_path, 20, timeout=30)
        nothing_more_arrives(lambda: service.calls_to(hook_path), within=DUPLICATE_WINDOW_SECONDS, what="a duplicate")
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
        enqueue_group([message.pk], eta=due, payload_bytes=message.payload_bytes)

    service.wait_for_calls(hook_path, 1, timeout=10)
    assert len(nothing_more_arrives(lambda: service.calls_to(hook_path), within=2, what="a second call")) == 1


def test_concurrent_posts_of_one_id_give_one_200_and_one_delivery(service, hook_path):
    statuses: list[int] = []
    barrier = threading.Barrier(8)
    # Due after the race is over: once delivered, the id would rightly be free again.
    body = {
        "id": "race",
        "scheduleTo": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        "payload": {"id": "race"},
        "webhookUrl": service.url(hook_path),
    }

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
    assert len(nothing_more_arrives(lambda: service.calls_to(hook_path), within=2, what="a second call")) == 1
