"""Start-up checks for settings that would make delivery wrong rather than fail loudly."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_scheduler_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    if settings.SCHEDULER_HORIZON_SECONDS * 4 > settings.BROKER_VISIBILITY_TIMEOUT_SECONDS:
        errors.append(
            Error(
                "SCHEDULER_HORIZON_SECONDS must be at most a quarter of BROKER_VISIBILITY_TIMEOUT_SECONDS.",
                hint="A task held longer than the visibility timeout is given to a second worker.",
                id="scheduler.E001",
            )
        )
    if settings.SCHEDULER_HORIZON_SECONDS < 2 * settings.SCHEDULER_POLL_SECONDS:
        errors.append(
            Error(
                "SCHEDULER_HORIZON_SECONDS must be at least twice SCHEDULER_POLL_SECONDS.",
                hint="Otherwise a message can come due before beat has enqueued it.",
                id="scheduler.E002",
            )
        )
    claim_lifetime = settings.WEBHOOK_TIMEOUT_SECONDS + settings.DELIVERY_RECORD_RETRY_SECONDS
    if claim_lifetime + settings.DELIVERY_CLAIM_GRACE_SECONDS >= settings.BROKER_VISIBILITY_TIMEOUT_SECONDS:
        errors.append(
            Error(
                "WEBHOOK_TIMEOUT_SECONDS + DELIVERY_RECORD_RETRY_SECONDS + DELIVERY_CLAIM_GRACE_SECONDS "
                "must stay below BROKER_VISIBILITY_TIMEOUT_SECONDS.",
                hint="Redis would hand a task still running to a second worker.",
                id="scheduler.E003",
            )
        )
    return errors
