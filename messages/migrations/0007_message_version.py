"""Message.version, the ETag of GET and PATCH /messages/{id}.

A column with a constant default and no constraint: on PostgreSQL 11+ adding it changes only the
catalog (no rewrite, no scan), under a lock_timeout so that it never queues behind a long query
with every other statement queued behind it.
"""

from django.db import migrations, models

from messages.migration_operations import WithLockTimeout


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("scheduler", "0006_state_invariants")]

    operations = [
        WithLockTimeout([
            migrations.AddField(
                model_name="message",
                name="version",
                field=models.IntegerField(db_default=1, default=1),
            ),
        ]),
    ]
