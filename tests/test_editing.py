"""PATCH /messages/{id}: a waiting message changed in place, guarded by its version (If-Match)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from django.db import connection

from messages import message_states, redis_keys, scheduling
from messages.confidential import open_headers
from messages.models import API_TOKEN_KEY_ID, ApiKey, DeliveryAttempt, Message, MessageStatus
from tests.factories import make_message
from tests.support.api_calls import LATENESS_BOUND_SECONDS, iso, schedule
from tests.support.waits import nothing_more_arrives, wait_until

FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
BODY = {"scheduleTo": iso(FAR_FUTURE), "payload": {"v": 1}, "webhookUrl": "https://example.com/hook"}


def create(api, message_id: str = "plan", **overrides) -> None:
    response = api.post("/messages", {**BODY, "id": message_id, **overrides})
    assert response.status_code == 200, response.content


def stored(message_id: str = "plan") -> Message:
    return Message.objects.get(message_id=message_id)


# --- What a PATCH changes -----------------------------------------------------------------


@pytest.mark.django_db
def test_patch_changes_each_field_given_and_answers_the_message_as_get_shows_it(api):
    # Given a scheduled message, read once
    create(api)
    before = stored()
    read = api.get("/messages/plan")
    assert (read["ETag"], read.json()["version"]) == ('"1"', 1)

    # When every field that can change is changed
    new_time = FAR_FUTURE + timedelta(days=1)
    response = api.patch(
        "/messages/plan",
        {
            "scheduleTo": iso(new_time),
            "payload": {"v": 2},
            "webhookUrl": "https://example.com/v2",
            "headers": {"X-Tenant": "acme"},
            "maxAttempts": 3,
            "timeoutSeconds": 7,
        },
        HTTP_IF_MATCH=read["ETag"],
    )

    # Then the answer is the message as GET shows it, one version on, in the same row
    assert response.status_code == 200, response.content
    assert response.json() == api.get("/messages/plan").json()
    body = response.json()
    assert (response["ETag"], body["version"]) == ('"2"', 2)
    assert (body["scheduleTo"], body["nextRun"]) == (new_time.isoformat(), new_time.isoformat())
    assert (body["payload"], body["webhookUrl"], body["headers"]) == ({"v": 2}, "https://example.com/v2", {"X-Tenant": "********"})
    assert (body["maxAttempts"], body["timeoutSeconds"]) == (3, 7)
    after = stored()
    assert (after.pk, after.delivery_id, after.created_at) == (before.pk, before.delivery_id, before.created_at)
    assert (after.payload_json, after.payload_bytes) == ('{"v":2}', len('{"v":2}'))
    assert open_headers(after.headers_sealed) == {"X-Tenant": "acme"}


@pytest.mark.django_db
def test_patch_leaves_the_fields_not_given_as_they_were(api):
    create(api, headers={"X-Key": "secret"}, maxAttempts=5)

    response = api.patch("/messages/plan", {"payload": {"v": 2}})

    assert response.status_code == 200
    message = stored()
    assert (message.webhook_url, message.max_attempts, message.schedule_to) == ("https://example.com/hook", 5, FAR_FUTURE)
    assert open_headers(message.headers_sealed) == {"X-Key": "secret"}


@pytest.mark.django_db
def test_a_retrying_message_can_be_moved_and_keeps_its_attempts(api):
    message = make_message(message_id="again", status=MessageStatus.RETRYING, due_at=FAR_FUTURE, attempt_count=1)
    DeliveryAttempt.objects.create(message=message, number=1, started_at=datetime.now(UTC), duration_ms=3, status_code=503)

    response = api.patch("/messages/again", {"scheduleTo": iso(FAR_FUTURE + timedelta(hours=1))})

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["attemptCount"], len(body["attempts"])) == ("retrying", 1, 1)
    assert body["nextRun"] == (FAR_FUTURE + timedelta(hours=1)).isoformat()


# --- What a PATCH refuses, changing nothing -----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scheduleTo": "2099-01-01T00:00:00"}, "scheduleTo"),
        ({"webhookUrl": "ftp://example.com/"}, "webhookUrl"),
        ({"payload": 3}, "payload"),
        ({"maxAttempts": 0}, "maxAttempts"),
        ({"headers": {"Content-Type": "text/plain"}}, "headers"),
        ({"id": "renamed"}, "id"),
        ({"expiresAt": "2099-01-01T00:00:00Z"}, "expiresAt"),
        ({}, "non_field_errors"),
        ([], "non_field_errors"),
    ],
)
def test_an_invalid_patch_is_a_400_and_changes_nothing(api, body, field):
    create(api)
    before = Message.objects.filter(message_id="plan").values().get()

    response = api.patch("/messages/plan", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert response.json()["detail"]
    assert Message.objects.filter(message_id="plan").values().get() == before


@pytest.mark.django_db
def test_patch_of_an_unknown_id_or_another_key_s_message_is_a_404(api):
    make_message(message_id="theirs", owner_id=_other_key())

    assert api.patch("/messages/never-created", {"payload": {}}).status_code == 404
    assert api.patch("/messages/theirs", {"payload": {}}).status_code == 404
    assert (stored("theirs").payload, stored("theirs").version) == ({"n": 1}, 1)


def _other_key() -> int:
    return ApiKey.objects.create(name="other", prefix="other", key_hash=uuid4().hex).pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "due_at"),
    [(MessageStatus.SENDING, FAR_FUTURE), (MessageStatus.FAILED, None), (MessageStatus.DELIVERED, None)],
)
def test_patch_of_a_message_in_flight_or_finished_is_a_409(api, status, due_at):
    make_message(message_id="busy", status=status, due_at=due_at)
    before = Message.objects.filter(message_id="busy").values().get()

    response = api.patch("/messages/busy", {"payload": {"v": 2}})

    assert response.status_code == 409, response.content
    assert "busy" in response.json()["detail"]
    assert Message.objects.filter(message_id="busy").values().get() == before


@pytest.mark.django_db
@pytest.mark.parametrize("if_match", ['"2"', "2", 'W/"7"', "nonsense", '"-1"'])
def test_patch_with_an_if_match_that_does_not_match_is_a_412_and_changes_nothing(api, if_match):
    create(api)

    response = api.patch("/messages/plan", {"payload": {"v": 2}}, HTTP_IF_MATCH=if_match)

    assert response.status_code == 412, response.content
    assert response.json()["detail"]
    assert (stored().payload, stored().version) == ({"v": 1}, 1)


@pytest.mark.django_db
@pytest.mark.parametrize("if_match", ['"1"', "1", 'W/"1"', "*"])
def test_patch_with_a_matching_if_match_or_a_star_is_made(api, if_match):
    create(api)

    assert api.patch("/messages/plan", {"payload": {"v": 2}}, HTTP_IF_MATCH=if_match).status_code == 200
    assert stored().payload == {"v": 2}


@pytest.mark.django_db
def test_two_patches_with_the_same_if_match_one_wins_the_other_is_a_412(api):
    create(api)
    etag = api.get("/messages/plan")["ETag"]

    first = api.patch("/messages/plan", {"payload": {"by": "first"}}, HTTP_IF_MATCH=etag)
    second = api.patch("/messages/plan", {"payload": {"by": "second"}}, HTTP_IF_MATCH=etag)

    assert (first.status_code, second.status_code) == (200, 412)
    assert stored().payload == {"by": "first"}


@pytest.mark.django_db
def test_the_version_moves_with_what_a_client_can_see_not_with_the_service_s_bookkeeping():
    # Given a message at version 1
    message = make_message(message_id="counted", due_at=datetime.now(UTC))
    now = datetime.now(UTC)

    # When the service queues and forgets its task, then claims it, then records a retry
    message_states.mark_enqueued([message.pk], now=now)
    message_states.forget_enqueued([message.pk])
    assert stored("counted").version == 1
    token = uuid4()
    message_states.claim([message.pk], token=token, due_by=now + timedelta(seconds=1))
    message_states.renew([token])
    assert stored("counted").version == 2
    message_states.record_outcome(
        [message.pk], status_code=503, error="", retry_at=now + timedelta(minutes=1), finished=None, now=now
    )

    # Then the claim and the attempt each moved it, the queueing and the renewal did not
    assert stored("counted").version == 3


# --- Races: one winner, never two sends ---------------------------------------------------


@pytest.mark.django_db
def test_a_claim_before_the_patch_makes_it_a_409_and_the_claimed_plan_is_what_is_sent(api):
    create(api, scheduleTo=iso(datetime.now(UTC)))
    message = stored()
    assert message_states.claim([message.pk], token=uuid4(), due_by=datetime.now(UTC) + timedelta(seconds=1)) == 1

    response = api.patch("/messages/plan", {"payload": {"v": 2}})

    assert response.status_code == 409
    assert stored().payload == {"v": 1}


@pytest.mark.django_db
def test_a_message_moved_later_is_not_claimed_at_its_old_time(api):
    # Given a message due now, whose task is already queued, moved an hour later
    now = datetime.now(UTC)
    create(api, scheduleTo=iso(now))
    api.patch("/messages/plan", {"scheduleTo": iso(now + timedelta(hours=1))})

    # When the old task tries to claim it at the old time
    claimed = message_states.claim([stored().pk], token=uuid4(), due_by=now + timedelta(seconds=1))

    # Then nothing is claimed, and beat will queue it again within the horizon of its new time
    assert claimed == 0
    assert (stored().status, stored().enqueued_at) == (MessageStatus.SCHEDULED, None)


def _race(*actions):
    """Runs each action in its own thread and connection, released together."""
    barrier = threading.Barrier(len(actions))
    results: list[object] = [None] * len(actions)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = actions[index]()
        except Exception as error:  # noqa: BLE001 - the outcome under test
            results[index] = error
        finally:
            connection.close()  # this thread's own; the test database is dropped after

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def _edit(version: int | None, payload: str):
    return lambda: scheduling.edit_message(
        owner_id=API_TOKEN_KEY_ID, message_id="raced", expected_version=version, payload_json=payload
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(5))
def test_two_concurrent_patches_with_the_same_version_have_one_winner(rounds):
    make_message(message_id="raced", due_at=FAR_FUTURE)

    results = _race(_edit(1, '{"by":"a"}'), _edit(1, '{"by":"b"}'))

    winners = [result for result in results if isinstance(result, Message)]
    losers = [result for result in results if isinstance(result, scheduling.VersionMismatch)]
    assert (len(winners), len(losers)) == (1, 1), results
    assert (stored("raced").payload_json, stored("raced").version) == (winners[0].payload_json, 2)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(5))
def test_a_concurrent_claim_and_patch_have_one_winner(rounds):
    # Due an hour ahead, claimed as if that hour had come: the session's worker and beat (running
    # for the end-to-end tests) only take messages within their horizon of seconds.
    due = datetime.now(UTC) + timedelta(hours=1)
    message = make_message(message_id="raced", due_at=due)
    claim = lambda: message_states.claim([message.pk], token=uuid4(), due_by=due + timedelta(seconds=5))  # noqa: E731

    claimed, edited = _race(claim, _edit(None, '{"by":"patch"}'))

    # Then the claim always holds it (the edit kept it due), and what the claim holds is one
    # plan whole: the old one, the PATCH refused as in flight, or the new one, the PATCH first
    final = stored("raced")
    assert (claimed, final.status) == (1, MessageStatus.SENDING), edited
    if isinstance(edited, scheduling.MessageInFlight):
        assert (final.payload_json, final.version) == ('{"n":1}', 2)
    else:
        assert isinstance(edited, Message), edited
        assert (final.payload_json, final.version) == ('{"by":"patch"}', 3)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(5))
def test_a_concurrent_patch_and_delete_have_one_outcome(rounds):
    make_message(message_id="raced", due_at=FAR_FUTURE)
    delete = lambda: scheduling.cancel_message(owner_id=API_TOKEN_KEY_ID, message_id="raced")  # noqa: E731

    edited, deleted = _race(_edit(None, '{"by":"patch"}'), delete)

    # The delete always ends it; the PATCH either came first or found it gone
    assert deleted is None, deleted
    assert isinstance(edited, Message | scheduling.MessageNotFound), edited
    assert not Message.objects.filter(message_id="raced").exists()


# --- The real path ------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("lead_seconds", [0.8, 2.5], ids=["queued-by-the-post", "queued-by-beat"])
def test_a_message_moved_later_is_sent_once_at_its_new_time_with_its_new_payload(api, service, hook_path, lead_seconds):
    # Given a message whose task is already in the broker: queued by its POST (due within two
    # polls) or by beat (due within the horizon)
    due = datetime.now(UTC) + timedelta(seconds=lead_seconds)
    schedule(api, service, hook_path, message_id="moved", at=due, payload={"v": 1})
    wait_until(lambda: stored("moved").enqueued_at is not None, timeout=5, what="its task to be queued")

    # When it is moved 2 s later with a new payload
    later = due + timedelta(seconds=2)
    assert api.patch("/messages/moved", {"scheduleTo": iso(later), "payload": {"v": 2}}).status_code == 200

    # Then nothing comes at the old time, and the new payload comes once at the new one
    calls = service.wait_for_calls(hook_path, 1, timeout=15)
    assert calls[0].json == {"v": 2}
    assert 0 <= calls[0].arrived_at - later.timestamp() < LATENESS_BOUND_SECONDS
    assert len(nothing_more_arrives(lambda: service.calls_to(hook_path), within=1.5, what="a second call")) == 1


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_message_moved_into_the_past_is_sent_once_at_once(api, service, hook_path):
    # Given a message due in an hour
    schedule(api, service, hook_path, message_id="sooner", at=datetime.now(UTC) + timedelta(hours=1))

    # When it is moved into the past
    moved_at = datetime.now(UTC)
    assert api.patch("/messages/sooner", {"scheduleTo": iso(moved_at - timedelta(minutes=5))}).status_code == 200

    # Then it is sent once, as soon as possible
    calls = service.wait_for_calls(hook_path, 1, timeout=15)
    assert calls[0].arrived_at - moved_at.timestamp() < LATENESS_BOUND_SECONDS
    assert len(nothing_more_arrives(lambda: service.calls_to(hook_path), within=1.5, what="a second call")) == 1


@pytest.mark.django_db
def test_moving_a_message_later_revokes_the_task_it_had_not_one_queued_since(api, monkeypatch):
    # Given a message whose lone task's id is kept
    create(api)
    message = stored()
    redis_keys.remember_task_id(message.pk, "the-old-task", ttl_seconds=60)
    revoked: list[str] = []
    monkeypatch.setattr(redis_keys.celery_app.control, "revoke", revoked.append)

    # When it is moved later, and beat queues it again under a new id before the revoke runs
    real_revoke = redis_keys.revoke_task

    def beat_first(message_pk: int, task_id: str) -> None:
        redis_keys.remember_task_id(message_pk, "the-new-task", ttl_seconds=60)
        real_revoke(message_pk, task_id)

    monkeypatch.setattr(redis_keys, "revoke_task", beat_first)
    assert api.patch("/messages/plan", {"scheduleTo": iso(FAR_FUTURE + timedelta(days=1))}).status_code == 200

    # Then the old task is revoked, and the new one's id is kept for a later cancel
    assert revoked == ["the-old-task"]
    assert redis_keys.task_id_of(message.pk) == "the-new-task"
