"""Message.expires_at and the `expired` status: a message whose next attempt would start at or
after its expiresAt ends `expired`, kept as history like a delivered one.

- expires_at: a nullable column without a default, catalog-only on PostgreSQL, under a
  lock_timeout (as 0009).
- The id is held while scheduled, retrying, sending or failed: the new unique index says so
  (built CONCURRENTLY on PostgreSQL) before the old one, which freed it only once delivered,
  is dropped (CONCURRENTLY too). No row is expired yet, so both hold meanwhile.
- finished_at is set exactly once delivered, failed or expired: the check is dropped and added
  again with `expired`, NOT VALID then validated without a lock on PostgreSQL (as 0006).

Going back to 0010 is refused while expired messages exist: 0010's check and id index have no
place for them (delete them first, or keep 0011).
"""

from django.db import migrations, models
from django.db.migrations.exceptions import IrreversibleError

from messages.migration_operations import (
    AddCheckConstraintNotValid,
    AddConstraintConcurrently,
    RemoveConstraintConcurrently,
    WithLockTimeout,
)

HOLDING = ("scheduled", "retrying", "sending", "failed")
FINISHED = ("delivered", "expired", "failed")


def refuse_to_forget_expired_messages(apps, schema_editor):
    expired = apps.get_model("scheduler", "Message").objects.filter(status="expired").count()
    if expired:
        raise IrreversibleError(f"{expired} messages are expired, a status 0010 does not know: delete them to go back")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("scheduler", "0010_idempotent_requests")]

    operations = [
        WithLockTimeout([
            migrations.AddField(model_name="message", name="expires_at", field=models.DateTimeField(blank=True, null=True)),
            migrations.AlterField(
                model_name="message",
                name="status",
                field=models.CharField(
                    choices=[("scheduled", "Scheduled"), ("sending", "Sending"), ("retrying", "Retrying"), ("failed", "Failed"),
                             ("delivered", "Delivered"), ("expired", "Expired")],
                    default="scheduled",
                    max_length=10,
                ),
            ),
        ]),
        AddConstraintConcurrently(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", HOLDING)),
                fields=("owner", "message_id"),
                name="unique_owner_message_id_while_held",
            ),
        ),
        RemoveConstraintConcurrently(model_name="message", name="unique_owner_message_id_until_delivered"),
        WithLockTimeout([
            migrations.RemoveConstraint(model_name="message", name="finished_at_set_exactly_once_finished"),
        ]),
        AddCheckConstraintNotValid(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(models.Q(("finished_at__isnull", False), ("status__in", FINISHED)),
                                   models.Q(models.Q(("status__in", FINISHED), _negated=True), ("finished_at__isnull", True)),
                                   _connector="OR"),
                name="finished_at_set_exactly_once_finished",
            ),
        ),
        # Last, so that going back runs it first.
        migrations.RunPython(migrations.RunPython.noop, refuse_to_forget_expired_messages),
    ]
