"""Message.time_zone: the IANA zone a local scheduleTo was given in.

A column with a constant default and no constraint: catalog-only on PostgreSQL 11+, under a
lock_timeout (as 0007).
"""

from django.db import migrations, models

from messages.migration_operations import WithLockTimeout


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("scheduler", "0007_message_version")]

    operations = [
        WithLockTimeout([
            migrations.AddField(
                model_name="message",
                name="time_zone",
                field=models.CharField(blank=True, db_default="", default="", max_length=64),
            ),
        ]),
    ]
