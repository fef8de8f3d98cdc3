"""What happens after an attempt: delivered, retry at a given time, or failed for good."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import Enum

from messages.webhook_client import WebhookResult

RETRYABLE_STATUS_CODES = frozenset({408, 429})
# Errors that the same call will meet again: the target or the request itself is wrong.
FINAL_ERRORS = frozenset({"BlockedTarget", "InvalidURL", "InvalidRequest"})
RETRY_AFTER_STATUS_CODES = frozenset({429, 503})
JITTER = 0.2


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class RetryDecision:
    outcome: Outcome
    retry_at: datetime | None = None


def is_retryable(result: WebhookResult) -> bool:
    """Network errors, timeouts, 408, 429 and 5xx may pass; 3xx, other 4xx and a refused target will not."""
    if result.status_code is None:
        return result.error not in FINAL_ERRORS
    return result.status_code in RETRYABLE_STATUS_CODES or result.status_code >= 500


def decide_after_attempt(
    *,
    result: WebhookResult,
    attempt_number: int,
    max_attempts: int,
    retry_schedule: Sequence[float],
    now: datetime,
    rng: random.Random | None = None,
) -> RetryDecision:
    if result.is_success:
        return RetryDecision(Outcome.DELIVERED)
    if not is_retryable(result) or attempt_number >= max_attempts or not retry_schedule:
        return RetryDecision(Outcome.FAILED)
    step = retry_schedule[min(attempt_number, len(retry_schedule)) - 1]
    delay = step * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    server_delay = _retry_after_seconds(result, now=now)
    if server_delay is not None and server_delay > delay:
        delay = min(server_delay, max(retry_schedule))
    return RetryDecision(Outcome.RETRY, retry_at=now + timedelta(seconds=delay))


def _retry_after_seconds(result: WebhookResult, *, now: datetime) -> float | None:
    """Retry-After on 429 or 503, as delta-seconds or an HTTP date; None when absent or bad."""
    if result.status_code not in RETRY_AFTER_STATUS_CODES or not result.retry_after:
        return None
    value = result.retry_after.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max((moment - now).total_seconds(), 0.0)
