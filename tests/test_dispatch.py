"""The dispatcher called directly: what enters the broker, when, and what is recovered."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from messages import dispatch, redis_keys
from messages.models import Message, MessageStatus
from messages.task_names import DELIVERY_QUEUE
from tests.factories import make_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_broker(redis_server):
    redis_server.client().flushdb()
    redis_keys.broker_lost_its_data()  # marks the epoch, as the first tick after start does


def queued_tasks(redis_server) -> list[dict]:
    """The delivery tasks sitting in Redis: their message pks and eta."""
    tasks = []
    for raw in redis_server.client().lrange(DELIVERY_QUEUE, 0, -1):
        envelope = json.loads(raw)
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        tasks.append({"pks": args[0], "eta": envelope["headers"]["eta"]})
    return tasks


def test_messages_within_the_horizon_are_enqueued_to_start_the_claim_lead_before_they_are_due(redis_server):
    now = timezone.now()
    soon = make_message(message_id="soon", due_at=now + timedelta(seconds=1, microseconds=123456))

    assert dispatch.enqueue_horizon(now=now) == 1

    [task] = queued_tasks(redis_server)
    assert task["pks"] == [soon.pk]
    lead = timedelta(milliseconds=settings.DELIVERY_CLAIM_LEAD_MS)
    assert lead > timedelta(0)
    assert soon.due_at is not None
    assert datetime.fromisoformat(task["eta"]) == soon.due_at - lead


def test_messages_beyond_the_horizon_stay_in_the_database(redis_server):
    now = timezone.now()
    make_message(due_at=now + timedelta(seconds=settings.SCHEDULER_HORIZON_SECONDS + 1))

    assert dispatch.enqueue_horizon(now=now) == 0
    assert queued_tasks(redis_server) == []


def test_an_enqueued_message_is_not_enqueued_again_while_it_waits(redis_server):
    now = timezone.now()
    make_message(due_at=now + timedelta(seconds=1))

    dispatch.enqueue_horizon(now=now)
    assert dispatch.enqueue_horizon(now=now + timedelta(milliseconds=500)) == 0
    assert len(queued_tasks(redis_server)) == 1


def test_an_overdue_message_whose_task_was_lost_is_enqueued_again(redis_server):
    now = timezone.now()
    message = make_message(due_at=now, enqueued_at=now)
    later = now + timedelta(seconds=settings.SCHEDULER_RECOVERY_SECONDS + 1)

    assert dispatch.enqueue_horizon(now=later) == 1
    assert queued_tasks(redis_server)[0]["pks"] == [message.pk]


def test_messages_due_at_one_moment_travel_in_one_task(redis_server):
    now = timezone.now()
    moment = now + timedelta(seconds=2)
    group = [make_message(message_id=f"same-{n}", due_at=moment) for n in range(3)]
    lone = make_message(message_id="lone", due_at=moment + timedelta(milliseconds=settings.DELIVERY_GROUP_WINDOW_MS + 1))

    dispatch.enqueue_horizon(now=now)

    tasks = queued_tasks(redis_server)
    assert sorted(map(sorted, (task["pks"] for task in tasks))) == sorted([sorted(message.pk for message in group), [lone.pk]])


def test_a_broker_that_lost_its_data_gets_every_waiting_message_again(redis_server):
    now = timezone.now()
    message = make_message(due_at=now + timedelta(seconds=2), enqueued_at=now)
    redis_server.client().flushall()

    dispatch.dispatch_due_messages(now=now)

    assert [task["pks"] for task in queued_tasks(redis_server)] == [[message.pk]]


def test_a_tick_records_the_heartbeat_that_health_reads(redis_server):
    redis_server.client().delete(redis_keys.HEARTBEAT_KEY)
    dispatch.dispatch_due_messages(now=timezone.now())
    since_heartbeat = redis_keys.seconds_since_heartbeat()
    assert since_heartbeat is not None
    assert since_heartbeat < 5


def test_a_second_dispatcher_skips_while_the_first_holds_the_lock(redis_server):
    now = timezone.now()
    make_message(due_at=now + timedelta(seconds=1))

    with redis_keys.dispatch_lock(ttl_seconds=10) as acquired:
        assert acquired
        assert dispatch.dispatch_due_messages(now=now) == 0
    assert dispatch.dispatch_due_messages(now=now) == 1


def test_a_lock_left_by_a_dispatcher_killed_mid_run_expires_within_seconds(redis_server):
    # A worker killed inside a dispatch never releases the lock: its expiry is how long every
    # recovery then waits. The fault tests allow 12 s from due to delivery.
    killed_mid_run = redis_keys.dispatch_lock(ttl_seconds=dispatch.dispatch_lock_ttl_seconds())
    assert killed_mid_run.__enter__()  # and never exited
    try:
        assert dispatch.dispatch_due_messages(now=timezone.now()) == 0
        assert 0 < redis_server.client().pttl(redis_keys.DISPATCH_LOCK_KEY) <= 5000
    finally:
        redis_server.client().delete(redis_keys.DISPATCH_LOCK_KEY)


def test_failed_and_delivered_messages_are_never_dispatched(redis_server):
    now = timezone.now()
    make_message(message_id="f", due_at=None, status=MessageStatus.FAILED)
    make_message(message_id="d", due_at=None, status=MessageStatus.DELIVERED)
    assert dispatch.enqueue_horizon(now=now) == 0
    assert Message.objects.count() == 2


def test_a_tick_that_fails_writes_no_heartbeat(redis_server, monkeypatch):
    # /health's "running" must mean messages are moving, not merely that a worker woke up
    redis_server.client().delete(redis_keys.HEARTBEAT_KEY)

    def broken(*, now):
        raise RuntimeError("the dispatch failed")

    monkeypatch.setattr(dispatch, "enqueue_horizon", broken)

    with pytest.raises(RuntimeError):
        dispatch.dispatch_due_messages(now=timezone.now())
    assert redis_keys.seconds_since_heartbeat() is None


def test_no_task_carries_more_payload_bytes_than_the_cap(redis_server, settings):
    settings.DELIVERY_TASK_MAX_BYTES = 25_000
    moment = timezone.now() + timedelta(seconds=2)
    big = [make_message(message_id=f"big-{n}", due_at=moment, payload={"blob": "x" * 10_000}) for n in range(5)]

    dispatch.enqueue_horizon(now=timezone.now())

    sizes = {message.pk: message.payload_bytes for message in big}
    tasks = queued_tasks(redis_server)
    assert sorted(pk for task in tasks for pk in task["pks"]) == sorted(sizes)
    assert all(sum(sizes[pk] for pk in task["pks"]) <= 25_000 for task in tasks)
    assert len(tasks) == 3
