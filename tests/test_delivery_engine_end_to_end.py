"""A worker's delivery engine on the real path: claims that wait for a call slot stay alive,
slow receivers hold no Celery thread, and a stopping worker sends nothing twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from messages import delivery, redis_keys
from messages.models import DeliveryAttempt, Message, MessageStatus
from tests.support import processes
from tests.support.api_calls import LATENESS_BOUND_SECONDS, post_message, wait_until_finished
from tests.support.processes import RUN_DIR
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.hostile, pytest.mark.django_db(transaction=True)]

SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # tests/settings.py's
CALL_TIMEOUT_SECONDS = 3
SHORT_LIVED_CLAIMS = {
    "DELIVERY_RECORD_RETRY_SECONDS": "3",
    "DELIVERY_CLAIM_GRACE_SECONDS": "6",
    "DELIVERY_CLAIM_RENEW_SECONDS": "0.5",
    "DELIVERY_DATABASE_TIMEOUT_SECONDS": "1",
}
# A claim that waits longer than this for a slot survives only by being renewed.
UNRENEWED_LIFETIME_SECONDS = (
    CALL_TIMEOUT_SECONDS
    + float(SHORT_LIVED_CLAIMS["DELIVERY_RECORD_RETRY_SECONDS"])
    + float(SHORT_LIVED_CLAIMS["DELIVERY_CLAIM_GRACE_SECONDS"])
)


def short_lived_claims(worker_env: dict[str, str], *, slots: int) -> dict[str, str]:
    return {**worker_env, **SHORT_LIVED_CLAIMS, "DELIVERY_MAX_CONCURRENT_CALLS": str(slots)}


@pytest.fixture
def narrow(celery_worker, celery_beat, _session_maintenance, worker_env) -> Iterator[processes.CeleryProcess]:
    """The only delivery worker, with 4 call slots; recovery judges claims by the short lifetimes.
    The session's worker and maintenance consumer are restarted by their fixtures afterwards."""
    celery_worker.stop()
    _session_maintenance.stop()
    env = short_lived_claims(worker_env, slots=4)
    worker = processes.worker("narrow", env=env, run_dir=RUN_DIR)
    maintenance = processes.maintenance_worker("narrow-maintenance", env=env, run_dir=RUN_DIR)
    worker.restart()
    maintenance.restart()
    yield worker
    worker.stop()
    maintenance.stop()


def test_claims_waiting_for_a_call_slot_are_never_recovered_and_verify_when_sent(api, narrow, hostile, hook_path):
    # Given twelve times more messages due at once than the worker has call slots, most of them
    # on a receiver that holds each call almost to its timeout: the last wait ~20 s for a slot
    run = hook_path.rsplit("/", 1)[1]
    hostile.configure(f"/slow-ok/{run}", delay=2.5)
    due = datetime.now(UTC) + timedelta(seconds=2)
    slow = [f"slow-{n}-{run}" for n in range(32)]
    fast = [f"fast-{n}-{run}" for n in range(16)]
    for message_id in slow:
        post_message(api, message_id, hostile.url(f"/slow-ok/{run}"), at=due, timeoutSeconds=CALL_TIMEOUT_SECONDS)
    for message_id in fast:
        post_message(api, message_id, hostile.url(f"/ok/{message_id}"), at=due, timeoutSeconds=CALL_TIMEOUT_SECONDS)

    wait_until_finished(slow + fast, timeout=60)

    # Then each was delivered exactly once, none recovered as lost, none given back for want of renewal
    assert "could not be renewed" not in narrow.log_path.read_text()
    attempts = DeliveryAttempt.objects.filter(message__message_id__in=slow + fast)
    assert not attempts.filter(error=delivery.WORKER_LOST).exists()
    assert set(Message.objects.filter(message_id__in=slow + fast).values_list("status", flat=True)) == {MessageStatus.DELIVERED}
    calls = [call for call in hostile.calls if call.path == f"/slow-ok/{run}" or call.path.startswith("/ok/fast-")]
    received = Counter(call.json["id"] for call in calls)
    assert received == Counter({message_id: 1 for message_id in slow + fast})
    # And every signature verifies, made when the call was sent, not when it was claimed
    waited = max(call.arrived_at for call in calls) - due.timestamp()
    assert waited > UNRENEWED_LIFETIME_SECONDS, "the test needs claims to outwait their unrenewed lifetime"
    for call in calls:
        headers = {name.lower(): value for name, value in call.headers.items()}
        assert Webhook(SIGNING_SECRET).verify(call.body, headers) == {"id": call.json["id"]}
        assert abs(int(headers["webhook-timestamp"]) - call.arrived_at) < 1.5


def test_a_stopping_worker_finishes_its_calls_and_gives_back_the_rest_uncounted(
    api, celery_worker, celery_beat, worker_env, hostile, hook_path
):
    # Given the only delivery worker, with two call slots, holding six slow messages: two in
    # their calls, four claimed and waiting for a slot
    celery_worker.stop()
    worker = processes.worker("two-slots", env=short_lived_claims(worker_env, slots=2), run_dir=RUN_DIR)
    worker.restart()
    run = hook_path.rsplit("/", 1)[1]
    hostile.configure(f"/slow-ok/{run}", delay=2.0)
    ids = [f"stopping-{n}-{run}" for n in range(6)]
    for message_id in ids:
        post_message(api, message_id, hostile.url(f"/slow-ok/{run}"), at=datetime.now(UTC), timeoutSeconds=10)
    assert len(hostile.wait_for_calls(f"/slow-ok/{run}", 2, timeout=15)) == 2
    wait_until(
        lambda: Message.objects.filter(message_id__in=ids, status=MessageStatus.SENDING).count() == 6,
        timeout=10,
        what="all six to be claimed",
    )

    # When it gets SIGTERM
    exit_code = worker.stop(grace=60)

    # Then it exits by itself (not killed) once its two calls are recorded, the other four
    # waiting again, uncounted
    assert exit_code == 0, worker.log_tail()
    statuses = Counter(Message.objects.filter(message_id__in=ids).values_list("status", flat=True))
    assert statuses == Counter({MessageStatus.DELIVERED: 2, MessageStatus.SCHEDULED: 4})
    assert DeliveryAttempt.objects.filter(message__message_id__in=ids).count() == 2

    # And another worker delivers those four, each once
    celery_worker.restart()
    wait_until_finished(ids, timeout=30)
    received = Counter(call.json["id"] for call in hostile.calls_to(f"/slow-ok/{run}"))
    assert received == Counter({message_id: 1 for message_id in ids})
    assert not DeliveryAttempt.objects.filter(message__message_id__in=ids, error=delivery.WORKER_LOST).exists()


def test_receivers_that_never_answer_stall_neither_other_messages_nor_beat(api, celery_worker, celery_beat, hostile, hook_path):
    # Given 20 messages, each its own task, to receivers that accept and never answer
    run = hook_path.rsplit("/", 1)[1]
    hanging = [f"hang-{n}-{run}" for n in range(20)]
    for message_id in hanging:
        post_message(api, message_id, hostile.url(f"/hang/{message_id}"), at=datetime.now(UTC), timeoutSeconds=12, maxAttempts=1)
    for message_id in hanging:
        assert hostile.wait_for_calls(f"/hang/{message_id}", 1, timeout=10), message_id

    # When ordinary messages fall due while all 20 calls hang (beat must enqueue these)
    due = datetime.now(UTC) + timedelta(seconds=2.5)
    ordinary = [f"beside-hang-{n}-{run}" for n in range(5)]
    for message_id in ordinary:
        post_message(api, message_id, hostile.url(f"/ok/{message_id}"), at=due)

    # Then they arrive on time, and beat's ticks keep running throughout
    for message_id in ordinary:
        [call] = hostile.wait_for_calls(f"/ok/{message_id}", 1, timeout=10)
        assert 0 <= call.arrived_at - due.timestamp() < LATENESS_BOUND_SECONDS
        since_heartbeat = redis_keys.seconds_since_heartbeat()
        assert since_heartbeat is not None
        assert since_heartbeat < 3
    assert Message.objects.filter(message_id__in=hanging, status=MessageStatus.SENDING).count() == 20
    wait_until_finished(hanging, timeout=30)
