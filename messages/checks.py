"""Start-up checks for settings that would make delivery wrong rather than fail loudly, and the
gate that runs every system check in the processes manage.py does not start."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.checks import Error, register, run_checks
from django.core.checks import Warning as CheckWarning  # not the builtin
from django.core.checks.registry import registry

logger = logging.getLogger(__name__)


# Ours, so that a run of chosen tags can include them (run_checks with tags skips untagged checks).
SCHEDULER_TAG = "scheduler"


def exit_on_system_check_errors(*, except_tags: frozenset[str] = frozenset()) -> None:
    """What manage.py does before a command, for the web server, the workers and beat: every
    system check runs (Django's and ours), and an error stops the process. SystemExit, because
    Celery logs an Exception raised by a signal handler and starts anyway.

    except_tags: the workers and beat leave out the checks that import the web app (the URLconf
    and every view; the admin's, every middleware class), DRF with it (docs/benchmarks.md,
    issue 14)."""
    tags = None if not except_tags else sorted(set(registry.tags_available()) - except_tags)
    errors = [error for error in run_checks(tags=tags) if error.is_serious() and not error.is_silenced()]
    for error in errors:
        logger.critical("refusing to start: %s", error)
    if errors:
        raise SystemExit(1)


@register(SCHEDULER_TAG)
def check_client_address_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckWarning]:
    if settings.HTTPS and settings.TRUSTED_PROXY_COUNT == 0:
        return [
            CheckWarning(
                "Behind a TLS proxy every client shares its address for the per-address limits; set TRUSTED_PROXY_COUNT.",
                hint="HTTPS=true means a TLS proxy in front; with TRUSTED_PROXY_COUNT=0 all clients share one budget of "
                "failed authentications and public requests, so one client's wrong tokens block everyone's API keys.",
                id="scheduler.W001",
            )
        ]
    return []


@register(SCHEDULER_TAG)
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
    errors.extend(_claim_lease_errors())
    errors.extend(_memory_bound_errors())
    return errors


def _claim_lease_errors() -> list[Error]:
    """Why these bounds: a worker calls only while its last renewal is under half the grace old
    (that keeps it safe whatever the timing: recovery waits for the whole grace and more). So
    that a live worker keeps calling, renewals must come well within that half: one interval,
    plus a statement that waits its bound, twice over for a renewal that fails once."""
    renew = settings.DELIVERY_CLAIM_RENEW_SECONDS
    statement = settings.DELIVERY_DATABASE_TIMEOUT_SECONDS
    if renew <= 0 or 2 * renew + statement >= settings.DELIVERY_CLAIM_GRACE_SECONDS / 2:
        return [
            Error(
                "2 × DELIVERY_CLAIM_RENEW_SECONDS + DELIVERY_DATABASE_TIMEOUT_SECONDS must stay below half of "
                "DELIVERY_CLAIM_GRACE_SECONDS (and the renew interval above 0).",
                hint="Otherwise a live worker's claims would go stale between renewals, and it would stop calling them.",
                id="scheduler.E004",
            )
        ]
    return []


def _memory_bound_errors() -> list[Error]:
    if not settings.PAYLOAD_MAX_BYTES <= settings.DELIVERY_TASK_MAX_BYTES <= settings.DELIVERY_MAX_HELD_BYTES:
        return [
            Error(
                "PAYLOAD_MAX_BYTES <= DELIVERY_TASK_MAX_BYTES <= DELIVERY_MAX_HELD_BYTES must hold.",
                hint="A task must fit one payload, and a worker one task.",
                id="scheduler.E005",
            )
        ]
    return []
