"""A POST whose message is committed answers 200 whatever Redis does next: the task id kept for
revoking is best effort, and a broker that refuses the task leaves the message to the dispatcher.

The POST's transaction commits for real here (transactional tests), so its on_commit enqueue
runs inside the request, as in production: an exception there would turn into a 500 for a
message that is stored, and the client's retry into a 409.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import redis
from kombu.exceptions import OperationalError as BrokerError

from messages import redis_keys
from messages.models import Message
from messages.task_names import DELIVER_TASK, DELIVERY_QUEUE
from scheduler_project.celery import app as celery_app
from tests.support.api_calls import iso
from tests.support.ports import free_port
from tests.support.processes import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


class RedisFailingSet:
    """The real client, except that SET fails as Redis does when the connection drops."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def set(self, *args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Connection closed by server.")

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def post_due_now(api, receiver, hook_path: str, message_id: str):
    # Due within two polls of the POST: enqueued by the POST itself, after its commit.
    due = datetime.now(UTC) + timedelta(milliseconds=300)
    return api.post(
        "/messages",
        {"id": message_id, "scheduleTo": iso(due), "payload": {"id": message_id}, "webhookUrl": receiver.url(hook_path)},
    )


@pytest.fixture
def no_rate_limit(settings):
    """The rate limit counts in Redis too; what it does without Redis is its own tests' business."""
    settings.API_RATE_LIMIT = None


def test_redis_failing_to_keep_the_task_id_costs_only_the_revoke(
    api, celery_worker, receiver, hook_path, monkeypatch, caplog, no_rate_limit
):
    # Given a Redis that takes the task but then fails the SET of its id
    failing = RedisFailingSet(redis_keys.redis_client())
    monkeypatch.setattr(redis_keys, "redis_client", lambda: failing)

    # When a message due now is POSTed
    with caplog.at_level(logging.WARNING, logger="messages.redis_keys"):
        response = post_due_now(api, receiver, hook_path, "task-id-lost")

    # Then the POST answers 200, and the task sent before the SET delivers the message
    assert response.status_code == 200, response.content
    assert "task id of message" in caplog.text
    calls = receiver.wait_for_calls(hook_path, 1, timeout=15)
    assert [call.json for call in calls] == [{"id": "task-id-lost"}]


def test_a_broker_that_is_down_leaves_the_posted_message_to_the_dispatcher(
    api, celery_worker, celery_beat, receiver, redis_server, hook_path, caplog, no_rate_limit
):
    # Given Redis is down
    redis_server.stop()
    try:
        # When a message due now is POSTed
        with caplog.at_level(logging.WARNING, logger="messages.queueing"):
            response = post_due_now(api, receiver, hook_path, "broker-down")

        # Then the POST answers 200, and the message is stored, not marked as waiting in the broker
        assert response.status_code == 200, response.content
        assert Message.objects.get(message_id="broker-down").enqueued_at is None
        assert "left for the dispatcher" in caplog.text
    finally:
        redis_server.start()

    # and once Redis is back, beat's dispatcher sends it
    calls = receiver.wait_for_calls(hook_path, 1, timeout=30)
    assert [call.json for call in calls] == [{"id": "broker-down"}]


@pytest.fixture
def scratch_redis(tmp_path):
    """A Redis of this test's own, to break at will."""
    server = RedisServer(port=free_port(), run_dir=str(tmp_path))
    server.start()
    yield server
    server.stop()


def refuse_writes(client: redis.Redis) -> None:
    client.config_set("maxmemory", "1")
    client.config_set("maxmemory-policy", "noeviction")


def become_a_replica(client: redis.Redis) -> None:
    client.replicaof("127.0.0.1", "1")  # of nothing: READONLY for every write


@pytest.mark.parametrize(
    "fault",
    [refuse_writes, become_a_replica, lambda client: client.shutdown(nosave=True)],
    ids=["out-of-memory", "read-only-replica", "down"],
)
def test_what_redis_answers_a_task_with_reaches_the_caller_as_a_kombu_error(scratch_redis, fault):
    # Given a broker that refuses writes (a ResponseError), is a replica (another one), or is gone
    client = scratch_redis.client()
    try:
        fault(client)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection it came on

    # When a task is sent, as enqueue_group sends it
    with celery_app.connection_for_write(url=scratch_redis.url) as connection, pytest.raises(BrokerError) as raised:
        celery_app.send_task(DELIVER_TASK, args=[[1]], queue=DELIVERY_QUEUE, connection=connection)

    # Then kombu has wrapped redis-py's error: catching its OperationalError catches them all
    assert isinstance(raised.value.__cause__, redis.RedisError | OSError)
