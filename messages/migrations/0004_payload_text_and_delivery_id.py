"""The payload becomes the JSON text sent as it is, and each new message gets its own delivery id.

Existing rows keep no delivery id: their receivers have seen the client's id as Idempotency-Key
and webhook-id, and keep getting it, so a retry after the upgrade is still recognised. Their
payload is the text the old column held (on PostgreSQL, jsonb's own rendering and key order).
"""

from django.db import migrations, models

import messages.identifiers


def measure_payloads(apps, schema_editor):
    Message = apps.get_model("scheduler", "Message")
    size = "octet_length(payload_json)" if schema_editor.connection.vendor == "postgresql" else (
        "length(CAST(payload_json AS BLOB))")
    table = schema_editor.quote_name(Message._meta.db_table)
    schema_editor.execute(f"UPDATE {table} SET payload_bytes = {size}")  # noqa: S608 - no input


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0003_partial_indexes_for_finished_and_enqueued"),
    ]

    operations = [
        migrations.RenameField(model_name="message", old_name="payload", new_name="payload_json"),
        migrations.AlterField(model_name="message", name="payload_json", field=models.TextField()),
        migrations.AddField(
            model_name="message",
            name="payload_bytes",
            field=models.PositiveIntegerField(default=0, help_text="Size of the payload as sent, in bytes."),
        ),
        migrations.AddField(
            model_name="message",
            name="delivery_id",
            field=models.CharField(max_length=40, null=True, editable=False),
        ),
        migrations.RunPython(measure_payloads, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="message",
            name="delivery_id",
            field=models.CharField(
                max_length=40, unique=True, null=True, default=messages.identifiers.new_delivery_id, editable=False
            ),
        ),
        migrations.AlterField(
            model_name="message",
            name="claimed_at",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="When its worker last renewed its claim (claimed, or still holding it).",
            ),
        ),
    ]
