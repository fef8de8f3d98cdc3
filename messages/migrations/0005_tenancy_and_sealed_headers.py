"""Every message gets an owner, the API key that created it, and ids become unique per owner;
header values are sealed (messages/confidential.py) instead of stored as plain JSON.

Existing messages belong to API_TOKEN, which becomes the key row with the fixed id 0: the new
column's default fills them without an UPDATE of every row (PostgreSQL adds a column with a
constant default without rewriting the table).
"""

from django.db import migrations, models, transaction

import django.db.models.deletion
from messages.confidential import seal_headers

API_TOKEN_KEY_ID = 0  # messages.models.API_TOKEN_KEY_ID, frozen here as migrations must be
SEAL_BATCH = 2000


def create_api_token_key(apps, schema_editor):
    ApiKey = apps.get_model("scheduler", "ApiKey")
    ApiKey.objects.get_or_create(
        pk=API_TOKEN_KEY_ID, defaults={"name": "API_TOKEN", "prefix": "API_TOKEN", "key_hash": "API_TOKEN"}
    )


def seal_existing_headers(apps, schema_editor):
    """Batch by batch, each its own short transaction: rows stay writable in between."""
    Message = apps.get_model("scheduler", "Message")
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(Message.objects.filter(pk__gt=last_pk).order_by("pk").values_list("pk", "headers")[:SEAL_BATCH])
            if not batch:
                return
            for pk, headers in batch:
                if headers:
                    Message.objects.filter(pk=pk).update(headers_sealed=seal_headers(headers))
        last_pk = batch[-1][0]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0004_payload_text_and_delivery_id"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="apikey",
            options={"permissions": [("revoke_apikey", "Can revoke API keys")], "verbose_name": "API key"},
        ),
        migrations.AddField(
            model_name="apikey",
            name="read_only",
            field=models.BooleanField(default=False, help_text="May list and read messages, nothing else."),
        ),
        migrations.RunPython(create_api_token_key, migrations.RunPython.noop),
        migrations.AddField(
            model_name="message",
            name="owner",
            field=models.ForeignKey(
                default=API_TOKEN_KEY_ID, on_delete=django.db.models.deletion.PROTECT,
                related_name="messages", to="scheduler.apikey", db_index=False,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="message",
            name="headers_sealed",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.RunPython(seal_existing_headers, migrations.RunPython.noop),
        migrations.RemoveField(model_name="message", name="headers"),
        # The new uniqueness first: ids are never unguarded in between.
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "delivered"), _negated=True),
                fields=("owner", "message_id"), name="unique_owner_message_id_until_delivered",
            ),
        ),
        migrations.RemoveConstraint(model_name="message", name="unique_message_id_until_delivered"),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["owner", "message_id", "-created_at"], name="by_owner_message_id_created"),
        ),
        migrations.RemoveIndex(model_name="message", name="by_message_id_created"),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["owner", "due_at", "id"], name="by_owner_due_at_id"),
        ),
    ]
