"""DeliveryAttempt.due_at, so that GET /messages/{id} can say how late each attempt started.

A nullable column without a default: catalog-only on PostgreSQL, under a lock_timeout (as 0007).
"""

from django.db import migrations, models

from messages.migration_operations import WithLockTimeout


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("scheduler", "0008_message_time_zone")]

    operations = [
        WithLockTimeout([
            migrations.AddField(model_name="deliveryattempt", name="due_at", field=models.DateTimeField(blank=True, null=True)),
        ]),
    ]
