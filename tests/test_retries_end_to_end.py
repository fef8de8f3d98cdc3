"""Retries, failed messages and attempt history on the real path (retry schedule 0.3s, 0.3s, 1.5s)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from messages.models import Message, MessageStatus
from tests.support.api_calls import schedule
from tests.support.receiver import Reply
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_for_status(api, message_id: str, status: str, *, timeout: float = 20) -> dict:
    def has_status() -> bool:
        return api.get(f"/messages/{message_id}").json().get("status") == status

    wait_until(has_status, timeout=timeout, what=f"{message_id} to be {status}")
    return api.get(f"/messages/{message_id}").json()


def test_a_receiver_failing_twice_gets_exactly_three_attempts(api, service, hook_path):
    service.reply(hook_path, Reply(status=500, body=b"oops"), Reply(status=502), then=Reply(status=200))

    schedule(api, service, hook_path, message_id="third-time", at=datetime.now(UTC))

    detail = wait_for_status(api, "third-time", "delivered")
    assert [attempt["statusCode"] for attempt in detail["attempts"]] == [500, 502, 200]
    assert detail["attempts"][0]["responseExcerpt"] == "oops"
    assert len(service.calls_to(hook_path)) == 3
    delivery_id = Message.objects.get(message_id="third-time").delivery_id
    assert {call.headers["Idempotency-Key"] for call in service.calls_to(hook_path)} == {delivery_id}
    # Delivered: out of the pending set, its id free again, its history still readable
    assert api.get("/messages").json()["count"] == 0
    assert api.delete("/messages/third-time").status_code == 404


def test_a_receiver_that_always_fails_leaves_the_message_failed_after_the_whole_schedule(api, service, hook_path):
    service.reply(hook_path, then=Reply(status=500))

    schedule(api, service, hook_path, message_id="always-500", at=datetime.now(UTC))

    detail = wait_for_status(api, "always-500", "failed")
    assert [attempt["statusCode"] for attempt in detail["attempts"]] == [500, 500, 500, 500]
    assert detail["lastOutcome"] == "HTTP 500"
    listed = api.get("/messages?status=failed").json()
    assert [job["messageId"] for job in listed["scheduledJobs"]] == ["always-500"]
    # Its id stays taken until it is deleted
    assert (
        api.post(
            "/messages",
            {"id": "always-500", "scheduleTo": "2030-01-01T00:00:00Z", "payload": {}, "webhookUrl": service.url(hook_path)},
        ).status_code
        == 409
    )
    assert api.delete("/messages/always-500").status_code == 200


def test_a_failed_message_can_be_sent_again(api, service, hook_path):
    service.reply(hook_path, Reply(status=400), then=Reply(status=200))
    schedule(api, service, hook_path, message_id="retry-me", at=datetime.now(UTC))
    wait_for_status(api, "retry-me", "failed")

    response = api.post("/messages/retry-me/retry")

    assert response.status_code == 200
    detail = wait_for_status(api, "retry-me", "delivered")
    assert detail["attempts"][-1]["statusCode"] == 200
    assert len(service.calls_to(hook_path)) == 2


def test_a_400_fails_after_one_attempt(api, service, hook_path):
    service.reply(hook_path, then=Reply(status=400))

    schedule(api, service, hook_path, message_id="bad-request", at=datetime.now(UTC))

    detail = wait_for_status(api, "bad-request", "failed")
    assert len(detail["attempts"]) == 1
    assert len(service.calls_to(hook_path)) == 1


def test_retry_after_is_honoured(api, service, hook_path):
    service.reply(hook_path, Reply(status=429, headers={"Retry-After": "1"}), then=Reply(status=200))

    schedule(api, service, hook_path, message_id="slow-down", at=datetime.now(UTC))

    wait_for_status(api, "slow-down", "delivered")
    first, second = service.calls_to(hook_path)
    # The schedule's first step is 0.3 s (at most 0.36 s with jitter); the receiver asked for 1 s.
    assert second.arrived_at - first.arrived_at >= 0.95


def test_a_receiver_that_hangs_costs_one_attempt_by_timeout(api, service, hook_path):
    service.reply(hook_path, Reply(delay=3), then=Reply(status=200))

    response = api.post(
        "/messages",
        {
            "id": "hangs",
            "scheduleTo": datetime.now(UTC).isoformat(),
            "payload": {"a": 1},
            "webhookUrl": service.url(hook_path),
            "timeoutSeconds": 1,
        },
    )
    assert response.status_code == 200

    detail = wait_for_status(api, "hangs", "delivered")
    assert detail["attempts"][0]["error"] == "ReadTimeout"
    assert 900 <= detail["attempts"][0]["durationMs"] < 3000
    assert detail["attempts"][1]["statusCode"] == 200


def test_a_redirect_is_not_followed_and_fails(api, service, hook_path):
    service.reply(hook_path, then=Reply(status=302, headers={"Location": service.url(hook_path + "/elsewhere")}))

    schedule(api, service, hook_path, message_id="redirected", at=datetime.now(UTC))

    detail = wait_for_status(api, "redirected", "failed")
    assert detail["attempts"][0]["statusCode"] == 302
    assert service.calls_to(hook_path + "/elsewhere") == []


def test_a_refused_connection_is_retried_until_the_receiver_is_back(api, service, hook_path):
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    response = api.post(
        "/messages",
        {
            "id": "nobody-home",
            "scheduleTo": datetime.now(UTC).isoformat(),
            "payload": {},
            "webhookUrl": "http://127.0.0.1:9/hook",
            "maxAttempts": 2,
        },
    )
    assert response.status_code == 200

    detail = wait_for_status(api, "nobody-home", "failed")
    assert [attempt["error"] for attempt in detail["attempts"]] == ["ConnectionError", "ConnectionError"]
    assert Message.objects.get(message_id="nobody-home").status == MessageStatus.FAILED
