"""The real path: API -> database -> Redis -> Celery worker -> HTTP receiver on loopback."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from messages import health, redis_keys
from messages.models import Message, MessageStatus
from scheduler_project.procfile import (
    BEAT_SCHEDULE_FILE,
    CELERY,
    DELIVERY_WORKER_THREADS_FROM_ENV,
    LOG_LEVEL_FROM_ENV,
    small_worker_command,
)
from tests.support import processes
from tests.support.api_calls import LATENESS_BOUND_SECONDS, schedule
from tests.support.receiver import Reply
from tests.support.waits import nothing_more_arrives, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_message_is_delivered_once_at_its_time_not_before(api, service, hook_path):
    # Given a message due two seconds from now
    due = datetime.now(UTC) + timedelta(seconds=2)
    schedule(api, service, hook_path, message_id="at-its-time", at=due, payload={"hello": "world"})

    # When its time comes
    calls = service.wait_for_calls(hook_path, 1, timeout=15)

    # Then the webhook got the payload once, never before scheduleTo, soon after it
    assert len(calls) == 1
    lateness = calls[0].arrived_at - due.timestamp()
    assert 0 <= lateness < LATENESS_BOUND_SECONDS
    assert calls[0].json == {"hello": "world"}
    assert calls[0].headers["Content-Type"] == "application/json"
    delivery_id = Message.objects.get(message_id="at-its-time").delivery_id
    assert delivery_id is not None
    assert delivery_id.startswith("msg_")
    assert calls[0].headers["Idempotency-Key"] == calls[0].headers["webhook-id"] == delivery_id
    assert calls[0].headers["X-Message-Id"] == "at-its-time"
    assert calls[0].headers["User-Agent"].startswith("webhook-scheduler/")
    wait_until(lambda: not Message.objects.pending().exists(), timeout=5, what="the message to leave the pending set")
    assert len(nothing_more_arrives(lambda: service.calls_to(hook_path), within=1, what="a second call")) == 1
    assert api.delete("/messages/at-its-time").status_code == 404
    assert api.get("/messages").json()["count"] == 0


def test_message_due_beyond_the_horizon_is_delivered_by_beat(api, service, hook_path):
    # Given a message due after the (test) horizon of 3 s: it is not enqueued on POST
    due = datetime.now(UTC) + timedelta(seconds=5)
    schedule(api, service, hook_path, message_id="beyond-horizon", at=due)
    assert Message.objects.get(message_id="beyond-horizon").enqueued_at is None

    # When beat moves it into the horizon
    calls = service.wait_for_calls(hook_path, 1, timeout=20)

    # Then it is sent at its time, not at the next poll
    assert len(calls) == 1
    assert 0 <= calls[0].arrived_at - due.timestamp() < LATENESS_BOUND_SECONDS


def test_deleted_message_is_never_delivered(api, service, hook_path):
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    schedule(api, service, hook_path, message_id="to-cancel", at=due)

    assert api.delete("/messages/to-cancel").json() == {"status": "deleted", "messageId": "to-cancel"}

    # Not at its time, nor at a poll or a recovery after it
    assert nothing_more_arrives(lambda: service.calls_to(hook_path), within=1.5 + 2, what="a call") == []


def test_past_schedule_is_delivered_soon_and_not_inside_the_request(api, service, hook_path):
    # A receiver that takes 1.5 s to answer (within the call's timeout): a call made inside the
    # POST would hold it that long. The worker may well call before the POST's answer reaches
    # us, so the receiver's log cannot tell.
    service.reply(hook_path, Reply(delay=1.5))
    started = time.monotonic()
    schedule(api, service, hook_path, message_id="overdue", at=datetime.now(UTC) - timedelta(hours=1))
    assert time.monotonic() - started < 1
    calls = service.wait_for_calls(hook_path, 1, timeout=10)
    assert len(calls) == 1


def test_delivered_id_is_free_again(api, service, hook_path):
    schedule(api, service, hook_path, message_id="reused", at=datetime.now(UTC))
    service.wait_for_calls(hook_path, 1, timeout=10)
    wait_until(
        lambda: Message.objects.filter(message_id="reused", status=MessageStatus.DELIVERED).exists(),
        timeout=5,
        what="delivery to be recorded",
    )
    schedule(api, service, hook_path, message_id="reused", at=datetime.now(UTC))
    assert len(service.wait_for_calls(hook_path, 2, timeout=10)) == 2


def test_the_small_profile_s_one_celery_process_runs_beat_and_both_queues(
    no_background_processes, worker_env, receiver, api, hook_path, tmp_path
):
    # Given only the process `make run` starts by default (SERVICE_PROFILE=small): beat in a
    # thread of it, beat's ticks and the deliveries on its threads; the session's workers and
    # beat stopped
    words = small_worker_command()[len(CELERY) :]
    words[words.index(BEAT_SCHEDULE_FILE)] = str(tmp_path / "schedule")
    words[words.index(DELIVERY_WORKER_THREADS_FROM_ENV)] = "4"
    words[words.index(LOG_LEVEL_FROM_ENV)] = "INFO"
    small = processes.CeleryProcess("small-profile", words, env=worker_env, run_dir=str(tmp_path))
    small.restart()
    try:
        # When a message is due past the horizon (only beat's tick can queue it)
        due = datetime.now(UTC) + timedelta(seconds=5)
        schedule(api, receiver, hook_path, message_id="small-profile", at=due)
        assert Message.objects.get(message_id="small-profile").enqueued_at is None

        # Then it is sent once, at its time, and the heartbeat says the scheduler runs
        calls = receiver.wait_for_calls(hook_path, 1, timeout=20)
        assert 0 <= calls[0].arrived_at - due.timestamp() < LATENESS_BOUND_SECONDS
        assert len(nothing_more_arrives(lambda: receiver.calls_to(hook_path), within=1, what="a second call")) == 1
        assert health.scheduler_is_alive(redis_keys.seconds_since_heartbeat())
        # Beat is a thread of the worker, not a process beside it
        assert small.process is not None
        assert psutil.Process(small.process.pid).children() == []
    finally:
        assert small.stop() == 0, small.log_tail()


def test_a_small_profile_worker_whose_beat_thread_dies_stops_rather_than_run_without_beat(
    no_background_processes, worker_env, tmp_path
):
    # Given beat's schedule file where it cannot be written
    words = small_worker_command()[len(CELERY) :]
    words[words.index(BEAT_SCHEDULE_FILE)] = "/proc/no-such-directory/schedule"
    words[words.index(DELIVERY_WORKER_THREADS_FROM_ENV)] = "2"
    words[words.index(LOG_LEVEL_FROM_ENV)] = "INFO"
    broken = processes.CeleryProcess("beat-dies", words, env=worker_env, run_dir=str(tmp_path))

    # When the worker starts
    broken.start()
    try:
        assert broken.process is not None
        broken.process.wait(timeout=60)
    finally:
        broken.stop(grace=5)

    # Then it stopped on its own, saying why, instead of delivering with nothing to dispatch
    assert "beat's thread died: stopping the worker" in broken.log_tail(200)
