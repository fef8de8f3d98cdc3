"""Faults that empty Redis while a worker holds eta tasks, on the real path: FLUSHALL, and a
restart of a Redis that keeps nothing on disk. Every queued task and the worker's unacked
copies are gone; the messages in the database must still arrive, each once.

(What happens when Redis fails right after a POST's commit: test_redis_faults_after_commit.py.)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.api_calls import schedule_batch
from tests.support.deliveries import RECOVERY_BOUND_SECONDS, assert_each_delivered_once, wait_until_held_by_the_worker

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


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
