"""The outbound call itself (messages.webhook_client), against the real receiver on loopback."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from messages import webhook_client
from messages.retry_policy import is_retryable
from messages.webhook_client import RESPONSE_EXCERPT_BYTES, WebhookCall, send_webhook, send_webhooks
from tests.support.receiver import Reply


def test_only_an_excerpt_of_a_large_response_is_kept(settings, receiver, hook_path):
    settings.WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS = True  # the receiver is on loopback
    receiver.reply(hook_path, Reply(status=200, body=b"x" * 100_000))

    result = send_webhook(url=receiver.url(hook_path), body=b"{}", message_id="m", timeout_seconds=2)

    assert result.status_code == 200
    assert result.response_excerpt == "x" * RESPONSE_EXCERPT_BYTES


def test_a_literal_address_is_checked_at_send_time_too(settings, receiver, hook_path):
    settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS = True

    result = send_webhook(url=receiver.url(hook_path), body=b"{}", message_id="m", timeout_seconds=2)

    assert result.error == "BlockedTarget"
    assert receiver.calls_to(hook_path) == []


def test_an_unexpected_error_fails_that_call_only(monkeypatch, receiver, hook_path):
    def broken(hostname: str) -> str | None:
        if hostname == "broken.invalid":
            raise RuntimeError("a bug")
        return None

    monkeypatch.setattr(webhook_client, "host_block_reason", broken)
    calls = [
        WebhookCall(url="http://broken.invalid/x", body=b"{}", message_id="a", timeout_seconds=2),
        WebhookCall(url=receiver.url(hook_path), body=b"{}", message_id="b", timeout_seconds=2),
    ]

    broken_result, good_result = send_webhooks(calls)

    assert broken_result.error == "RuntimeError"
    assert good_result.status_code == 200


def test_calls_wait_for_their_moment_and_run_side_by_side(receiver, hook_path):
    receiver.reply(hook_path, Reply(delay=0.3), then=Reply(delay=0.3))
    not_before = timezone.now() + timedelta(milliseconds=200)
    calls = [
        WebhookCall(url=receiver.url(hook_path), body=b"{}", message_id=f"m{n}", timeout_seconds=5, not_before=not_before)
        for n in range(20)
    ]

    started = timezone.now()
    results = send_webhooks(calls)
    elapsed = (timezone.now() - started).total_seconds()

    assert [result.status_code for result in results] == [200] * 20
    assert all(arrived.arrived_at >= not_before.timestamp() for arrived in receiver.calls_to(hook_path))
    # 20 calls of 0.3 s each, one after the other, would take 6 s
    assert elapsed < 3


def test_a_request_the_client_refuses_to_send_fails_for_good(receiver, hook_path):
    result = send_webhook(
        url=receiver.url(hook_path), body=b"{}", message_id="m", timeout_seconds=2, extra_headers={"X-Split": "a\r\nInjected: yes"}
    )

    assert result.error == "InvalidRequest"
    assert not is_retryable(result)
    assert receiver.calls_to(hook_path) == []
