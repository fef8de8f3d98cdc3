"""What happens after an attempt: delivered, retry at a given time, or failed for good."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import Enum

from messages.webhook_client import WebhookResult

RETRYABLE_STATUS_CODES = frozenset({408, 429})
# Errors that the same call will meet again: the target or the request itself is wrong, or its
# headers were sealed with a key no longer configured (restore it, then retry the message).
FINAL_ERRORS = frozenset({"BlockedTarget", "InvalidURL", "InvalidRequest", "HeadersUnreadable"})
RETRY_AFTER_STATUS_CODES = frozenset({429, 503})
RETRY_AFTER_MAX_DIGITS = 10  # over 300 years; the delay is capped by the schedule anyway
JITTER = 0.2

logger = logging.getLogger(__name__)


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    EXPIRED = "expired"  # its retry would start at or after its expires_at


@dataclass(frozen=True)
class RetryDecision:
    verdict: Verdict
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
    expires_at: datetime | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    if result.is_success:
        return RetryDecision(Verdict.DELIVERED)
    if not is_retryable(result) or attempt_number >= max_attempts or not retry_schedule:
        return RetryDecision(Verdict.FAILED)
    step = retry_schedule[min(attempt_number, len(retry_schedule)) - 1]
    delay = step * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    server_delay = _retry_after_seconds(result, now=now)
    if server_delay is not None and server_delay > delay:
        delay = min(server_delay, max(retry_schedule))
    retry_at = now + timedelta(seconds=delay)
    if expires_at is not None and retry_at >= expires_at:
        return RetryDecision(Verdict.EXPIRED)
    return RetryDecision(Verdict.RETRY, retry_at=retry_at)


def _retry_after_seconds(result: WebhookResult, *, now: datetime) -> float | None:
    """Retry-After on 429 or 503, as delta-seconds or an HTTP date; None when absent or bad.

    The receiver writes this value: anything but ASCII digits or a date that parses and fits
    is ignored (and logged), never allowed to raise while a whole batch waits to be recorded."""
    if result.status_code not in RETRY_AFTER_STATUS_CODES or not result.retry_after:
        return None
    value = result.retry_after.strip()
    if value.isascii() and value.isdigit():
        # A bound before float(): a thousand digits would still parse, to inf.
        return float(value) if len(value) <= RETRY_AFTER_MAX_DIGITS else None
    try:
        moment = parsedate_to_datetime(value)
        seconds = (moment - now).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):
        logger.info("Retry-After %r ignored: neither delta-seconds nor an HTTP date", value[:100])
        return None
    return max(seconds, 0.0)
