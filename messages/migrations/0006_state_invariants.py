"""The state machine's invariants as check constraints (messages/models.py STATE_INVARIANTS).

Rows that break one (none should: every write went through guarded transitions, but a database
restored by hand may hold anything) are first brought back to the nearest state that holds,
with a warning: a stray claim or enqueue mark is cleared (recovery and the dispatcher take it
from there), a missing due_at of a pending message is its scheduleTo, a missing finished_at of
a finished one its creation time.
"""

import logging
import uuid

from django.db import migrations, models
from django.db.models import F, Q

from messages.migration_operations import AddCheckConstraintNotValid

logger = logging.getLogger(__name__)

PENDING = ("scheduled", "retrying", "sending")
WAITING = ("scheduled", "retrying")
FINISHED = ("delivered", "failed")


def repair_states(apps, schema_editor):
    Message = apps.get_model("scheduler", "Message")
    repairs = {
        "pending without due_at": Message.objects.filter(status__in=PENDING, due_at__isnull=True).update(
            due_at=F("schedule_to")),
        "finished with due_at": Message.objects.exclude(status__in=PENDING).filter(due_at__isnull=False).update(
            due_at=None),
        "finished without finished_at": Message.objects.filter(status__in=FINISHED, finished_at__isnull=True).update(
            finished_at=F("created_at")),
        "unfinished with finished_at": Message.objects.exclude(status__in=FINISHED).filter(
            finished_at__isnull=False).update(finished_at=None),
        "a claim while not sending": Message.objects.exclude(status="sending").filter(
            Q(claim_token__isnull=False) | Q(claimed_at__isnull=False)).update(claim_token=None, claimed_at=None),
        "enqueued while not waiting": Message.objects.exclude(status__in=WAITING).filter(
            enqueued_at__isnull=False).update(enqueued_at=None),
    }
    # Sending without its claim: a claim long stale, so that recovery counts the call as lost.
    half_claimed = 0
    for message in Message.objects.filter(status="sending").filter(Q(claim_token__isnull=True) | Q(claimed_at__isnull=True)):
        half_claimed += Message.objects.filter(pk=message.pk).update(
            claim_token=message.claim_token or uuid.uuid4(), claimed_at=message.claimed_at or message.created_at)
    repairs["sending without its claim"] = half_claimed
    for what, count in repairs.items():
        if count:
            logger.warning("migration 0006: %d messages %s, repaired", count, what)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0005_tenancy_and_sealed_headers"),
    ]

    operations = [
        migrations.RunPython(repair_states, migrations.RunPython.noop),
        AddCheckConstraintNotValid(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(models.Q(("due_at__isnull", False), ("status__in", PENDING)),
                                   models.Q(models.Q(("status__in", PENDING), _negated=True), ("due_at__isnull", True)),
                                   _connector="OR"),
                name="due_at_set_exactly_while_pending",
            ),
        ),
        AddCheckConstraintNotValid(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(models.Q(("finished_at__isnull", False), ("status__in", FINISHED)),
                                   models.Q(models.Q(("status__in", FINISHED), _negated=True),
                                            ("finished_at__isnull", True)),
                                   _connector="OR"),
                name="finished_at_set_exactly_once_finished",
            ),
        ),
        AddCheckConstraintNotValid(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(models.Q(("claim_token__isnull", False), ("claimed_at__isnull", False),
                                            ("status", "sending")),
                                   models.Q(models.Q(("status", "sending"), _negated=True),
                                            ("claim_token__isnull", True), ("claimed_at__isnull", True)),
                                   _connector="OR"),
                name="claim_held_exactly_while_sending",
            ),
        ),
        AddCheckConstraintNotValid(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(("enqueued_at__isnull", True), ("status__in", WAITING), _connector="OR"),
                name="enqueued_only_while_waiting",
            ),
        ),
    ]
