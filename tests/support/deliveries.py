"""What a receiver got, checked against the service's two promises after a fault: no message
lost, none sent twice."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from messages.models import Message
from tests.support.processes import RedisServer
from tests.support.waits import nothing_more_arrives, wait_until

# Recovery after a fault waits for SCHEDULER_RECOVERY_SECONDS (2 s in tests) and a beat tick.
RECOVERY_BOUND_SECONDS = 12.0
# Long enough for a duplicate to show itself: a recovery cycle and a beat tick.
DUPLICATE_WINDOW_SECONDS = 3.0


def deliveries_by_id(receiver, path: str) -> Counter:
    """How many calls reached `path` for each message id (the payloads carry it)."""
    return Counter(call.json["id"] for call in receiver.calls_to(path))


def assert_each_delivered_once(receiver, path: str, ids: list[str], *, due: datetime, bound: float) -> None:
    """Each of `ids` reached `path` once, between `due` and `bound` seconds after it, and none is left pending."""
    receiver.wait_for_calls(path, len(ids), timeout=bound + 10)
    nothing_more_arrives(lambda: receiver.calls_to(path), within=DUPLICATE_WINDOW_SECONDS, what=f"a call to {path}")
    assert deliveries_by_id(receiver, path) == Counter({message_id: 1 for message_id in ids})
    for call in receiver.calls_to(path):
        assert 0 <= call.arrived_at - due.timestamp() < bound
    wait_until(lambda: not Message.objects.pending().exists(), timeout=5, what="nothing left pending")


def wait_until_held_by_the_worker(redis_server: RedisServer, ids: list[str]) -> None:
    """Beat has queued them (one task: they are due together) and the worker holds that task."""
    wait_until(
        lambda: (
            Message.objects.filter(message_id__in=ids, enqueued_at__isnull=False).count() == len(ids)
            and redis_server.client().hlen("unacked") >= 1
        ),
        timeout=10,
        what="the worker to reserve the task",
    )
