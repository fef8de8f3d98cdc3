"""The retry policy alone: a result and an attempt number in, a decision out. No network."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from messages.retry_policy import Verdict, decide_after_attempt, is_retryable
from messages.webhook_client import WebhookResult

NOW = datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0)


def result(status_code: int | None = None, *, error: str = "", retry_after: str | None = None) -> WebhookResult:
    return WebhookResult(started_at=NOW, duration_ms=5, status_code=status_code, error=error, retry_after=retry_after)


def decide(res: WebhookResult, attempt_number: int = 1, max_attempts: int = 4):
    return decide_after_attempt(
        result=res,
        attempt_number=attempt_number,
        max_attempts=max_attempts,
        retry_schedule=SCHEDULE,
        now=NOW,
        rng=random.Random(7),
    )


@pytest.mark.parametrize("status_code", [200, 201, 204, 299])
def test_any_2xx_is_delivered(status_code):
    assert decide(result(status_code)).verdict is Verdict.DELIVERED


@pytest.mark.parametrize(
    "res",
    [
        result(500),
        result(502),
        result(503),
        result(599),
        result(408),
        result(429),
        result(error="ConnectionError"),
        result(error="ReadTimeout"),
        result(error="WorkerLost"),
    ],
)
def test_network_errors_timeouts_408_429_and_5xx_are_retried(res):
    assert is_retryable(res)
    assert decide(res).verdict is Verdict.RETRY


@pytest.mark.parametrize("status_code", [301, 302, 307, 308, 400, 401, 403, 404, 410, 422])
def test_redirects_and_other_4xx_fail_at_once(status_code):
    assert decide(result(status_code)).verdict is Verdict.FAILED


def test_retry_waits_the_schedule_step_within_twenty_percent_jitter():
    for attempt_number, step in enumerate(SCHEDULE, start=1):
        decision = decide(result(500), attempt_number=attempt_number)
        delay = (decision.retry_at - NOW).total_seconds()
        assert step * 0.8 <= delay <= step * 1.2


def test_last_attempt_fails_for_good():
    assert decide(result(500), attempt_number=4, max_attempts=4).verdict is Verdict.FAILED


def test_attempts_beyond_the_schedule_reuse_its_last_step():
    decision = decide(result(500), attempt_number=6, max_attempts=10)
    assert 1800 * 0.8 <= (decision.retry_at - NOW).total_seconds() <= 1800 * 1.2


def test_longer_retry_after_on_429_is_honoured():
    decision = decide(result(429, retry_after="60"))
    assert decision.retry_at == NOW + timedelta(seconds=60)


def test_retry_after_as_http_date_on_503_is_honoured():
    decision = decide(result(503, retry_after="Wed, 15 Apr 2026 02:43:45 GMT"))
    assert decision.retry_at == NOW + timedelta(seconds=120)


def test_retry_after_is_capped_at_the_largest_step():
    decision = decide(result(429, retry_after="86400"))
    assert decision.retry_at == NOW + timedelta(seconds=max(SCHEDULE))


def test_shorter_retry_after_does_not_shorten_the_schedule():
    delay = (decide(result(429, retry_after="1")).retry_at - NOW).total_seconds()
    assert delay >= 5 * 0.8


@pytest.mark.parametrize("header", ["soon", "-5", "", "Thu, 99 Foo 2026"])
def test_unreadable_retry_after_is_ignored(header):
    delay = (decide(result(429, retry_after=header)).retry_at - NOW).total_seconds()
    assert 5 * 0.8 <= delay <= 5 * 1.2


def test_retry_after_on_a_500_is_not_a_reason_to_wait_longer():
    delay = (decide(result(500, retry_after="600")).retry_at - NOW).total_seconds()
    assert delay <= 5 * 1.2
