"""The API contract of API.md, point by point, through the in-process DRF client.

No worker runs here: requests go API -> database only (on_commit enqueues never fire inside
the test transaction), so these tests say nothing about delivery, only about what clients see.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from messages import redis_keys
from messages.models import API_TOKEN_KEY_ID, Message, MessageStatus
from tests.factories import consistent_state

pytestmark = pytest.mark.django_db

CONTRACT_SCHEDULE_TO = "2026-04-15T02:41:45.000Z"
FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
REDIRECT_STATUSES = {301, 302, 303, 307, 308}


def message_body(message_id: str = "unique-message-id", **overrides) -> dict:
    body = {
        "id": message_id,
        "scheduleTo": CONTRACT_SCHEDULE_TO,
        "payload": {"data": "your webhook payload"},
        "webhookUrl": "https://your-webhook-endpoint.com",
    }
    body.update(overrides)
    return body


def schedule(api, message_id: str, **overrides) -> None:
    response = api.post("/messages", message_body(message_id, **overrides))
    assert response.status_code == 200, response.content


def stored_message(message_id: str, status: str, **fields) -> Message:
    """A row as the worker would have left it: finished messages have no due_at."""
    is_finished = status in {MessageStatus.FAILED, MessageStatus.DELIVERED}
    moment = datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)
    defaults = {
        "schedule_to": moment,
        "due_at": None if is_finished else moment,
        "finished_at": moment if is_finished else None,
        "webhook_url": "https://your-webhook-endpoint.com",
        "payload": {"data": 1},
        "owner_id": API_TOKEN_KEY_ID,
        **consistent_state(status),
    }
    defaults.update(fields)
    return Message.objects.create(message_id=message_id, status=status, **defaults)


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def listed_ids(response) -> list[str]:
    return [job["messageId"] for job in response.json()["scheduledJobs"]]


# --- POST /messages ------------------------------------------------------------------------


def test_post_answers_exactly_scheduled_and_the_message_id(api):
    response = api.post("/messages", message_body("unique-message-id"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"status": "scheduled", "messageId": "unique-message-id"}
    assert Message.objects.filter(message_id="unique-message-id", status=MessageStatus.SCHEDULED).count() == 1


def test_post_with_a_past_schedule_to_is_accepted(api):
    past = iso_z(datetime.now(UTC) - timedelta(hours=1))

    response = api.post("/messages", message_body("overdue", scheduleTo=past))

    assert response.status_code == 200
    assert response.json() == {"status": "scheduled", "messageId": "overdue"}


def test_duplicate_id_is_refused_with_409_and_a_detail(api):
    schedule(api, "twice")

    response = api.post("/messages", message_body("twice", payload={"second": True}))

    assert response.status_code == 409
    assert isinstance(response.json()["detail"], str)
    assert response.json()["detail"]
    assert Message.objects.filter(message_id="twice").count() == 1
    assert Message.objects.get(message_id="twice").payload == {"data": "your webhook payload"}


@pytest.mark.parametrize("status", [MessageStatus.FAILED, MessageStatus.RETRYING, MessageStatus.SENDING])
def test_id_of_a_failed_retrying_or_sending_message_is_still_taken(api, status):
    # Given a message with this id that has not been delivered
    stored_message("held", status)

    # When a client schedules the same id again
    response = api.post("/messages", message_body("held"))

    # Then it is refused and the existing message stays as it was
    assert response.status_code == 409
    assert response.json()["detail"]
    assert list(Message.objects.filter(message_id="held").values_list("status", flat=True)) == [status]


def test_id_delivered_earlier_is_free_again(api):
    stored_message("reused", MessageStatus.DELIVERED)

    response = api.post("/messages", message_body("reused"))

    assert response.status_code == 200
    assert response.json() == {"status": "scheduled", "messageId": "reused"}
    assert sorted(Message.objects.filter(message_id="reused").values_list("status", flat=True)) == [
        MessageStatus.DELIVERED,
        MessageStatus.SCHEDULED,
    ]


# --- GET /messages -------------------------------------------------------------------------


def test_list_shows_the_contract_schedule_in_utc_with_its_trigger(api):
    schedule(api, "unique-message-id", scheduleTo="2026-04-15T02:41:45.000Z")

    response = api.get("/messages")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    [job] = body["scheduledJobs"]
    assert job["messageId"] == "unique-message-id"
    assert job["nextRun"] == "2026-04-15T02:41:45+00:00"
    assert job["trigger"] == "date[2026-04-15 02:41:45 UTC]"


def test_schedule_with_an_offset_is_stored_and_listed_in_utc(api):
    schedule(api, "paris", scheduleTo="2026-04-15T04:41:45+02:00")

    [job] = api.get("/messages").json()["scheduledJobs"]

    assert job["nextRun"] == "2026-04-15T02:41:45+00:00"
    assert job["trigger"] == "date[2026-04-15 02:41:45 UTC]"
    assert Message.objects.get(message_id="paris").schedule_to == datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)


def test_list_is_ordered_by_next_run_earliest_first(api):
    # Given messages created in an order unlike their schedule
    schedule(api, "third", scheduleTo="2030-01-03T00:00:00Z")
    schedule(api, "first", scheduleTo="2030-01-01T00:00:00+05:00")  # 2029-12-31T19:00Z
    schedule(api, "second", scheduleTo="2030-01-01T00:00:00Z")

    response = api.get("/messages")

    assert listed_ids(response) == ["first", "second", "third"]
    assert [job["nextRun"] for job in response.json()["scheduledJobs"]] == [
        "2029-12-31T19:00:00+00:00",
        "2030-01-01T00:00:00+00:00",
        "2030-01-03T00:00:00+00:00",
    ]
    assert response.json()["count"] == 3


def test_empty_list_has_no_jobs_and_count_zero(api):
    response = api.get("/messages")

    assert response.status_code == 200
    assert response.json() == {"scheduledJobs": [], "count": 0}


def test_list_leaves_out_delivered_and_failed_messages_by_default(api):
    stored_message("done", MessageStatus.DELIVERED)
    stored_message("broken", MessageStatus.FAILED)
    schedule(api, "waiting")

    response = api.get("/messages")

    assert listed_ids(response) == ["waiting"]
    assert response.json()["count"] == 1


@pytest.mark.parametrize(
    ("status", "expected_ids"),
    [("failed", ["broken"]), ("scheduled", ["waiting"]), ("retrying", ["again"])],
)
def test_status_filter_lists_only_that_status(api, status, expected_ids):
    stored_message("broken", MessageStatus.FAILED)
    stored_message("again", MessageStatus.RETRYING, due_at=FAR_FUTURE)
    stored_message("done", MessageStatus.DELIVERED)
    schedule(api, "waiting")

    response = api.get(f"/messages?status={status}")

    assert response.status_code == 200
    assert listed_ids(response) == expected_ids
    assert response.json()["count"] == len(expected_ids)


@pytest.mark.parametrize("status", ["delivered", "sending", "bogus"])
def test_status_filter_outside_the_listable_ones_is_refused(api, status):
    response = api.get("/messages", {"status": status})

    assert response.status_code == 400
    assert response.json()["detail"]
    assert "status" in response.json()["errors"]


def test_cursor_paging_walks_every_message_once_with_a_steady_count(api):
    # Given five messages, three of them due at the same moment (the cursor must break ties)
    for index, schedule_to in enumerate(
        ["2030-01-02T00:00:00Z", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "2029-12-31T00:00:00Z"]
    ):
        schedule(api, f"paged-{index}", scheduleTo=schedule_to)

    # When a client walks the pages two at a time
    seen: list[str] = []
    page_sizes: list[int] = []
    response = api.get("/messages", {"limit": 2})
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["count"] == 5
        seen += listed_ids(response)
        page_sizes.append(len(body["scheduledJobs"]))
        if "next" not in body:
            break
        response = api.get("/messages", {"limit": 2, "cursor": body["next"]})

    # Then it sees every message exactly once, in next-run order
    assert page_sizes == [2, 2, 1]
    assert sorted(seen) == [f"paged-{index}" for index in range(5)]
    assert seen[0] == "paged-4"
    assert seen[-1] == "paged-0"
    assert set(seen[1:4]) == {"paged-1", "paged-2", "paged-3"}


def test_last_page_has_no_next_cursor(api):
    schedule(api, "only-one")

    response = api.get("/messages", {"limit": 1})

    assert listed_ids(response) == ["only-one"]
    assert "next" not in response.json()


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not-a-cursor", id="garbage"),
        pytest.param("%%%", id="not-base64"),
        pytest.param(b64("2030-01-01T00:00:00|1"), id="naive-moment"),
        pytest.param(b64("2030-01-01T00:00:00+00:00|one"), id="pk-not-a-number"),
        pytest.param(b64("yesterday|1"), id="moment-not-iso"),
        pytest.param(b64("2030-01-01T00:00:00+00:00"), id="no-pk"),
        pytest.param("x" * 600, id="too-long"),
        pytest.param(b64("9999-12-31T23:59:59-01:00|1"), id="moment-beyond-year-9999-in-utc"),
    ],
)
def test_bad_cursor_is_refused_with_400_and_a_detail(api, cursor):
    schedule(api, "some-message")

    response = api.get("/messages", {"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["detail"]
    assert "cursor" in response.json()["errors"]


@pytest.mark.parametrize("limit", ["0", "10001", "-1", "two"])
def test_limit_outside_1_to_10000_is_refused(api, limit):
    response = api.get("/messages", {"limit": limit})

    assert response.status_code == 400
    assert response.json()["detail"]
    assert "limit" in response.json()["errors"]


@pytest.mark.parametrize("limit", ["1", "10000"])
def test_limit_at_its_bounds_is_accepted(api, limit):
    schedule(api, "listed")

    response = api.get("/messages", {"limit": limit})

    assert response.status_code == 200
    assert listed_ids(response) == ["listed"]


# --- DELETE /messages/{id} -----------------------------------------------------------------


def test_delete_answers_deleted_and_the_message_no_longer_lists(api):
    schedule(api, "to-cancel")
    schedule(api, "to-keep")

    response = api.delete("/messages/to-cancel")

    assert response.status_code == 200
    assert response.json() == {"status": "deleted", "messageId": "to-cancel"}
    assert listed_ids(api.get("/messages")) == ["to-keep"]
    assert api.get("/messages").json()["count"] == 1
    assert not Message.objects.filter(message_id="to-cancel").exists()


def test_second_delete_of_the_same_message_is_404(api):
    schedule(api, "to-cancel")
    assert api.delete("/messages/to-cancel").status_code == 200

    response = api.delete("/messages/to-cancel")

    assert response.status_code == 404
    assert response.json()["detail"]


def test_delete_of_an_unknown_message_is_404(api):
    response = api.delete("/messages/never-created")

    assert response.status_code == 404
    assert response.json()["detail"]


def test_delete_of_a_delivered_message_is_404(api):
    stored_message("already-sent", MessageStatus.DELIVERED)

    response = api.delete("/messages/already-sent")

    assert response.status_code == 404
    assert response.json()["detail"]
    assert Message.objects.filter(message_id="already-sent").exists()


def test_delete_of_a_failed_message_removes_it(api):
    stored_message("gave-up", MessageStatus.FAILED)

    response = api.delete("/messages/gave-up")

    assert response.status_code == 200
    assert response.json() == {"status": "deleted", "messageId": "gave-up"}
    assert not Message.objects.filter(message_id="gave-up").exists()


def test_delete_of_a_message_in_flight_is_refused_with_409(api):
    # Given a message a worker is calling right now
    stored_message("in-flight", MessageStatus.SENDING)

    # When a client cancels it
    response = api.delete("/messages/in-flight")

    # Then it is refused, with a reason, and the message stays
    assert response.status_code == 409
    assert response.json()["detail"]
    assert Message.objects.get(message_id="in-flight").status == MessageStatus.SENDING


def test_deleted_id_is_free_again(api):
    schedule(api, "recycled")
    api.delete("/messages/recycled")

    response = api.post("/messages", message_body("recycled"))

    assert response.status_code == 200


# --- GET /messages/{id} --------------------------------------------------------------------


def test_message_detail_shows_the_message_in_full(api):
    schedule(
        api,
        "detailed",
        scheduleTo="2026-04-15T04:41:45+02:00",
        payload={"a": [1, 2]},
        webhookUrl="https://example.com/hook?x=1",
    )

    response = api.get("/messages/detailed")

    assert response.status_code == 200
    body = response.json()
    assert body["messageId"] == "detailed"
    assert body["status"] == "scheduled"
    assert body["scheduleTo"] == "2026-04-15T02:41:45+00:00"
    assert body["webhookUrl"] == "https://example.com/hook?x=1"
    assert body["payload"] == {"a": [1, 2]}
    assert body["attempts"] == []
    assert body["attemptCount"] == 0
    created_at = datetime.fromisoformat(body["createdAt"])
    assert created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)


def test_message_detail_of_a_failed_message_shows_its_status(api):
    stored_message("gave-up", MessageStatus.FAILED)

    body = api.get("/messages/gave-up").json()

    assert body["status"] == "failed"
    assert body["nextRun"] is None


def test_message_detail_of_an_unknown_id_is_404(api):
    response = api.get("/messages/never-created")

    assert response.status_code == 404
    assert response.json()["detail"]


# --- GET /health ---------------------------------------------------------------------------


def test_health_needs_no_token_and_reports_a_stopped_scheduler_as_degraded(anonymous_api, api):
    # Given no worker or beat (no heartbeat in Redis) and one scheduled message. pytest-django
    # runs these non-transactional tests before the end-to-end ones that start beat.
    redis_keys.redis_client().delete(redis_keys.HEARTBEAT_KEY)
    schedule(api, "pending-one")

    response = anonymous_api.get("/health")

    # Then health still answers 200, and says what is missing
    assert response.status_code == 200
    body = response.json()
    assert {"status", "redis", "scheduler", "scheduled_jobs", "database"} <= set(body)
    assert body["status"] == "degraded"
    assert body["scheduler"] == "stopped"
    assert body["redis"] == "connected"
    assert body["database"] == "connected"
    assert body["scheduled_jobs"] == 1


def test_health_ignores_a_wrong_token(anonymous_api):
    anonymous_api.credentials(HTTP_AUTHORIZATION="Bearer wrong")

    response = anonymous_api.get("/health")

    assert response.status_code == 200
    assert response.json()["redis"] == "connected"


# --- Authentication ------------------------------------------------------------------------

PROTECTED_ENDPOINTS = [
    ("get", "/messages"),
    ("post", "/messages"),
    ("get", "/messages/some-id"),
    ("delete", "/messages/some-id"),
    ("post", "/messages/some-id/retry"),
]
BAD_CREDENTIALS = {
    "missing": None,
    "basic-scheme": "Basic " + base64.b64encode(f"user:{settings.API_TOKEN}".encode()).decode(),
    "wrong-token": "Bearer not-the-token",
    "bearer-without-token": "Bearer ",
    "token-without-scheme": settings.API_TOKEN,
}


@pytest.mark.parametrize(("method", "path"), PROTECTED_ENDPOINTS)
@pytest.mark.parametrize("authorization", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_every_endpoint_but_health_refuses_a_request_without_the_token(anonymous_api, method, path, authorization):
    # Given a message the request could touch
    stored_message("some-id", MessageStatus.FAILED)
    if authorization:
        anonymous_api.credentials(HTTP_AUTHORIZATION=authorization)

    response = getattr(anonymous_api, method)(path, message_body("new-id"))

    assert response.status_code == 401
    assert response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert list(Message.objects.values_list("message_id", "status")) == [("some-id", "failed")]


# --- Paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/messages", "/messages/"])
def test_post_with_or_without_trailing_slash_keeps_its_body_and_never_redirects(api, path):
    response = api.post(path, message_body("slash-test", payload={"kept": "body"}))

    assert response.status_code == 200
    assert response.json() == {"status": "scheduled", "messageId": "slash-test"}
    assert Message.objects.get(message_id="slash-test").payload == {"kept": "body"}


@pytest.mark.parametrize(
    ("method", "path", "expected_status"),
    [
        ("get", "/messages", 200),
        ("get", "/messages/", 200),
        ("get", "/messages/slashes", 200),
        ("get", "/messages/slashes/", 200),
        ("get", "/health", 200),
        ("get", "/health/", 200),
        ("delete", "/messages/slashes", 200),
        ("delete", "/messages/slashes/", 200),
    ],
)
def test_paths_answer_with_and_without_trailing_slash_never_redirecting(api, method, path, expected_status):
    schedule(api, "slashes")

    response = getattr(api, method)(path)

    assert response.status_code not in REDIRECT_STATUSES
    assert response.status_code == expected_status, response.content


@pytest.mark.parametrize(
    "path",
    ["/nothing-here", "/message", "/messages/a/b", "/messages/a/b/c", "/healthz", "/api/messages", "/messages//"],
)
def test_unknown_paths_give_404_as_json_with_a_detail(api, path):
    response = api.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]


def test_every_domain_refusal_maps_to_one_status_in_one_place():
    from messages import listing, scheduling
    from messages.api.errors import domain_error

    statuses = {
        scheduling.MessageNotFound("x"): 404,
        scheduling.MessageIdTaken("x"): 409,
        scheduling.MessageInFlight("x"): 409,
        scheduling.MessageNotFailed("x"): 409,
        listing.InvalidCursor("c"): 400,
    }
    for refusal, status in statuses.items():
        mapped = domain_error(refusal)
        assert mapped is not None, refusal
        assert (mapped.status_code, bool(str(mapped.detail))) == (status, True)
    assert domain_error(ValueError("not ours")) is None
