"""POST /messages/cancel (by ids or by filter), the same filter on GET /messages, and the admin's
cancel of a filtered queryset (scheduling.cancel_matching)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from django.db import connection

from messages import message_states, scheduling
from messages.api_keys import create_api_key
from messages.models import API_TOKEN_KEY_ID, DeliveryAttempt, Message, MessageStatus
from tests.factories import make_message

T0 = datetime(2099, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso_q(moment: datetime) -> str:
    return moment.isoformat().replace("+", "%2B")  # a + in a query string is a space


def remaining() -> set[str]:
    return set(Message.objects.values_list("message_id", flat=True))


@pytest.fixture
def cast():
    """Four waiting messages an hour apart, two targets, one failed, one being sent, one of another key's."""
    other, _ = create_api_key(name="other")
    for minute, host in [(0, "a"), (60, "a"), (120, "b"), (180, "b")]:
        make_message(message_id=f"m{minute}", due_at=at(minute), webhook_url=f"https://{host}.example.com/hook")
    make_message(message_id="failed", status=MessageStatus.FAILED, due_at=None, webhook_url="https://a.example.com/hook")
    make_message(message_id="sending", status=MessageStatus.SENDING, due_at=at(30), webhook_url="https://a.example.com/hook")
    make_message(message_id="theirs", due_at=at(0), owner_id=other.pk, webhook_url="https://a.example.com/hook")


@pytest.mark.django_db
def test_cancel_by_ids_cancels_those_reports_the_one_in_flight_and_ignores_the_rest(api, cast):
    DeliveryAttempt.objects.create(message=Message.objects.get(message_id="failed"), number=1, started_at=T0, duration_ms=1)

    response = api.post("/messages/cancel", {"ids": ["m0", "failed", "sending", "theirs", "never-was"]}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"cancelled": 2, "inFlight": ["sending"]}
    assert remaining() == {"m60", "m120", "m180", "sending", "theirs"}
    assert not DeliveryAttempt.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("narrowing", "cancelled", "in_flight", "left"),
    [
        ({"status": "scheduled", "dueBefore": at(120).isoformat()}, 2, [], {"m120", "m180", "failed", "sending", "theirs"}),
        ({"dueAfter": at(60).isoformat(), "dueBefore": at(180).isoformat()}, 2, [], {"m0", "m180", "failed", "sending", "theirs"}),
        ({"webhookUrlPrefix": "https://a."}, 3, ["sending"], {"m120", "m180", "sending", "theirs"}),
        ({"status": "failed"}, 1, [], {"m0", "m60", "m120", "m180", "sending", "theirs"}),
        ({}, 5, ["sending"], {"sending", "theirs"}),
    ],
)
def test_cancel_by_filter_cancels_only_the_caller_s_matching_messages(api, cast, narrowing, cancelled, in_flight, left):
    response = api.post("/messages/cancel", {"filter": narrowing}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"cancelled": cancelled, "inFlight": in_flight}
    assert remaining() == left


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": ["a"], "filter": {}},
        {"ids": []},
        {"ids": "m0"},
        {"ids": [1]},
        {"filter": {"dueBefore": "2099-01-01T00:00:00"}},
        {"filter": {"status": "delivered"}},
        {"filter": "all"},
    ],
)
def test_a_bad_cancel_is_a_400_and_cancels_nothing(api, cast, body):
    response = api.post("/messages/cancel", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert len(remaining()) == 7


@pytest.mark.django_db
def test_a_message_whose_id_is_cancel_is_still_read_changed_and_deleted_at_its_path(api):
    make_message(message_id="cancel", due_at=at(0))

    assert api.get("/messages/cancel").json()["messageId"] == "cancel"
    assert api.patch("/messages/cancel", {"payload": {"v": 2}}, format="json").status_code == 200
    assert api.delete("/messages/cancel").json() == {"status": "deleted", "messageId": "cancel"}


@pytest.mark.django_db
def test_the_filter_narrows_get_messages_too(api, cast):
    page = api.get(f"/messages?dueAfter={iso_q(at(60))}&webhookUrlPrefix=https://b.").json()

    assert [job["messageId"] for job in page["scheduledJobs"]] == ["m120", "m180"]
    assert page["count"] == 2
    assert api.get("/messages?dueBefore=soon").status_code == 400


@pytest.mark.django_db
def test_a_cancel_across_many_batches_cancels_them_all(api, monkeypatch):
    monkeypatch.setattr(scheduling, "CANCEL_BATCH", 7)
    for number in range(50):
        make_message(message_id=f"n{number}", due_at=at(number))

    response = api.post("/messages/cancel", {"filter": {"status": "scheduled"}}, format="json")

    assert response.json() == {"cancelled": 50, "inFlight": []}
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_cancel_walks_past_rows_it_leaves_and_rows_that_share_a_due_time(api, monkeypatch):
    # Given 30 messages due at one instant, every third being sent, and 12 failed at one instant
    monkeypatch.setattr(scheduling, "CANCEL_BATCH", 4)
    for number in range(30):
        status = MessageStatus.SENDING if number % 3 == 0 else MessageStatus.SCHEDULED
        make_message(message_id=f"same{number}", due_at=T0, status=status)
    for number in range(12):
        make_message(message_id=f"gone{number}", status=MessageStatus.FAILED, due_at=None, finished_at=T0)

    # When everything is cancelled, four rows a batch
    response = api.post("/messages/cancel", {"filter": {}}, format="json")

    # Then each batch started where the last ended: all cancelled but the ten in flight, each listed once
    assert response.json()["cancelled"] == 32
    assert sorted(response.json()["inFlight"]) == sorted(f"same{number}" for number in range(0, 30, 3))
    assert remaining() == {f"same{number}" for number in range(0, 30, 3)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(4))
def test_a_cancel_racing_claims_of_the_same_messages_leaves_each_either_cancelled_or_claimed(rounds):
    # Given forty messages falling due (an hour ahead: beyond the horizon of the session's worker
    # and beat, which run for the end-to-end tests and would claim messages due now themselves)
    now = datetime.now(UTC) + timedelta(hours=1)
    pks = [make_message(message_id=f"due{number}", due_at=now).pk for number in range(40)]
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def claim() -> None:
        barrier.wait()
        try:
            results["claimed"] = sum(
                message_states.claim([pk], token=uuid4(), due_by=now + timedelta(seconds=5)) for pk in reversed(pks)
            )
        finally:
            connection.close()

    def cancel() -> None:
        barrier.wait()
        try:
            results["cancel"] = scheduling.cancel_messages(owner_id=API_TOKEN_KEY_ID, status=MessageStatus.SCHEDULED)
        finally:
            connection.close()

    # When a worker claims them one by one while a bulk cancel runs
    threads = [threading.Thread(target=claim), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then each is either gone or being sent, never both, and the counts say which
    bulk, claimed = results["cancel"], results["claimed"]
    assert isinstance(bulk, scheduling.BulkCancel)
    assert isinstance(claimed, int)
    left = Message.objects.filter(pk__in=pks)
    assert set(left.values_list("status", flat=True)) <= {MessageStatus.SENDING}
    assert bulk.cancelled + claimed == 40
    assert left.count() == claimed


@pytest.mark.django_db
def test_the_url_prefix_is_compared_with_its_case_on_both_databases(api):
    make_message(message_id="lower", due_at=at(0), webhook_url="https://hooks.example.com/tenanta/1")
    make_message(message_id="upper", due_at=at(0), webhook_url="https://hooks.example.com/TenantA/1")

    listed = api.get("/messages?webhookUrlPrefix=https://hooks.example.com/tenanta/").json()
    response = api.post("/messages/cancel", {"filter": {"webhookUrlPrefix": "https://hooks.example.com/tenanta/"}}, format="json")

    assert [job["messageId"] for job in listed["scheduledJobs"]] == ["lower"]
    assert response.json() == {"cancelled": 1, "inFlight": []}
    assert remaining() == {"upper"}


def moved_away_after_each_batch_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch, once read and before it is locked, sees "moved-away" edited out of the a. target."""
    read_batches = scheduling._in_batches

    def read_then_edit(matching, order_field):
        for batch in read_batches(matching, order_field):
            Message.objects.filter(message_id="moved-away").update(webhook_url="https://b.example.com/hook")
            yield batch

    monkeypatch.setattr(scheduling, "_in_batches", read_then_edit)


@pytest.mark.django_db
def test_a_message_changed_out_of_the_filter_after_its_batch_was_read_is_not_cancelled(api, monkeypatch):
    # Given a message that matches when its batch is read, and is edited away before the lock
    make_message(message_id="moved-away", due_at=at(0), webhook_url="https://a.example.com/hook")
    moved_away_after_each_batch_is_read(monkeypatch)

    # When the bulk cancel locks and deletes the batch
    response = api.post("/messages/cancel", {"filter": {"webhookUrlPrefix": "https://a."}}, format="json")

    # Then the filter is read again under the lock: the message stays
    assert response.json() == {"cancelled": 0, "inFlight": []}
    assert remaining() == {"moved-away"}


@pytest.mark.django_db
def test_cancel_matching_cancels_the_waiting_and_failed_messages_of_a_queryset_of_any_owner(cast, monkeypatch):
    # Given the cast and a delivered message to the same target, two rows a batch
    monkeypatch.setattr(scheduling, "CANCEL_BATCH", 2)
    make_message(message_id="history", status=MessageStatus.DELIVERED, due_at=None, webhook_url="https://a.example.com/hook")

    # When every message to a. is cancelled, whoever owns it
    result = scheduling.cancel_matching(matching=Message.objects.filter(webhook_url__startswith="https://a."))

    # Then the waiting and failed ones of both owners are gone; the one being sent and history stay
    assert result == scheduling.BulkCancel(cancelled=4, in_flight=["sending"])
    assert remaining() == {"m120", "m180", "sending", "history"}


@pytest.mark.django_db
def test_cancel_matching_leaves_a_message_changed_out_of_its_queryset_after_its_batch_was_read(monkeypatch):
    make_message(message_id="moved-away", due_at=at(0), webhook_url="https://a.example.com/hook")
    moved_away_after_each_batch_is_read(monkeypatch)

    result = scheduling.cancel_matching(matching=Message.objects.filter(webhook_url__startswith="https://a."))

    assert result == scheduling.BulkCancel(cancelled=0, in_flight=[])
    assert remaining() == {"moved-away"}
