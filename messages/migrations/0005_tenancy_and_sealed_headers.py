"""Every message gets an owner, the API key that created it, and ids become unique per owner;
header values are sealed (messages/confidential.py) instead of stored as plain JSON.

Existing messages belong to API_TOKEN, which becomes the key row with the fixed id 0: the new
column's default fills them without an UPDATE of every row (PostgreSQL adds a column with a
constant default without rewriting the table).

On PostgreSQL, where web and worker processes of the previous version may still be running on
other hosts while this runs, nothing holds the table locked for long (messages/migration_operations.py)
and their writes keep working: owner_id keeps its DEFAULT 0 in the database, and the old `headers`
column stays, with a DEFAULT '{}', until a later release drops it. On SQLite (one host, migrated
before its processes start) each table rebuild runs in a transaction of its own.
"""

from django.db import migrations, models, transaction

import django.db.models.deletion
from messages.confidential import open_headers, seal_headers
from messages.migration_operations import (
    AddConstraintConcurrently,
    AddIndexConcurrently,
    RemoveConstraintConcurrently,
    RemoveIndexConcurrently,
    WithLockTimeout,
    is_postgresql,
    run_with_lock_timeout,
    without_timeouts,
)

API_TOKEN_KEY_ID = 0  # messages.models.API_TOKEN_KEY_ID, frozen here as migrations must be
SEAL_BATCH = 2000
OWNER_FOREIGN_KEY = "scheduler_message_owner_id_fk_scheduler_apikey_id"


def create_api_token_key(apps, schema_editor):
    ApiKey = apps.get_model("scheduler", "ApiKey")
    ApiKey.objects.get_or_create(
        pk=API_TOKEN_KEY_ID, defaults={"name": "API_TOKEN", "prefix": "API_TOKEN", "key_hash": "API_TOKEN"}
    )


def _in_batches(queryset, write):
    """Batch by batch by id, each its own short transaction: rows stay writable in between."""
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(queryset.filter(pk__gt=last_pk).order_by("pk")[:SEAL_BATCH])
            for row in batch:
                write(row)
        if not batch:
            return
        last_pk = batch[-1][0]


def seal_existing_headers(apps, schema_editor):
    Message = apps.get_model("scheduler", "Message")

    def seal(row):
        pk, headers = row
        if headers:
            Message.objects.filter(pk=pk).update(headers_sealed=seal_headers(headers))

    _in_batches(Message.objects.values_list("pk", "headers"), seal)


def open_sealed_headers(apps, schema_editor):
    """Backwards: the previous version reads headers in the clear."""
    Message = apps.get_model("scheduler", "Message")

    def unseal(row):
        pk, sealed = row
        Message.objects.filter(pk=pk).update(headers=open_headers(sealed))

    _in_batches(Message.objects.exclude(headers_sealed="").values_list("pk", "headers_sealed"), unseal)


def refuse_to_reverse_shared_ids(apps, schema_editor):
    """Before anything is undone: the previous version's ids are global, and two keys may now
    hold the same one, which its unique constraint would refuse halfway through."""
    Message = apps.get_model("scheduler", "Message")
    shared = (
        Message.objects.exclude(status="delivered").values("message_id")
        .annotate(owners=models.Count("owner_id", distinct=True)).filter(owners__gt=1)
    )
    if shared.exists():
        raise RuntimeError(
            f"Cannot unapply 0005: {shared.count()} ids are used by more than one key "
            "(e.g. " + ", ".join(repr(row["message_id"]) for row in shared[:5]) + "). Cancel or rename them first."
        )


OWNER = models.ForeignKey(
    on_delete=django.db.models.deletion.PROTECT, related_name="messages", to="scheduler.apikey", db_index=False,
)


class AddOwner(migrations.AddField):
    """AddField of Message.owner. On PostgreSQL: the column with a lasting DEFAULT 0 (a catalog
    change under a short lock timeout), the foreign key added NOT VALID (a moment's lock) and
    validated afterwards, a scan that blocks no read or write."""

    def __init__(self) -> None:
        super().__init__(model_name="message", name="owner", field=OWNER.clone())

    def deconstruct(self):
        return (self.__class__.__qualname__, [], {})

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if not is_postgresql(schema_editor):
            with_default = migrations.AddField(
                model_name="message", name="owner", field=OWNER.clone(), preserve_default=False)
            with_default.field.default = API_TOKEN_KEY_ID
            run_with_lock_timeout(
                schema_editor,
                lambda: with_default.database_forwards(app_label, schema_editor, from_state, to_state),
                what="Add field owner to message",
            )
            return
        table = schema_editor.quote_name(to_state.apps.get_model(app_label, "message")._meta.db_table)
        keys = schema_editor.quote_name(to_state.apps.get_model(app_label, "apikey")._meta.db_table)
        run_with_lock_timeout(schema_editor, lambda: schema_editor.execute(
            f"ALTER TABLE {table} ADD COLUMN owner_id bigint NOT NULL DEFAULT {API_TOKEN_KEY_ID}"),
            what="Add column owner_id")
        run_with_lock_timeout(schema_editor, lambda: schema_editor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {OWNER_FOREIGN_KEY} FOREIGN KEY (owner_id) REFERENCES {keys} (id) "
            "DEFERRABLE INITIALLY DEFERRED NOT VALID"), what="Add the foreign key of owner_id")
        with without_timeouts(schema_editor):
            schema_editor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {OWNER_FOREIGN_KEY}")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        run_with_lock_timeout(
            schema_editor, lambda: super(AddOwner, self).database_backwards(app_label, schema_editor, from_state, to_state),
            what="Remove field owner from message",
        )


class RetireHeadersColumn(migrations.RemoveField):
    """RemoveField of Message.headers; on PostgreSQL the column stays for the previous version's
    processes (DEFAULT '{}' so that new rows need not name it)."""

    def __init__(self) -> None:
        super().__init__(model_name="message", name="headers")

    def deconstruct(self):
        return (self.__class__.__qualname__, [], {})

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if is_postgresql(schema_editor):
            table = schema_editor.quote_name(from_state.apps.get_model(app_label, "message")._meta.db_table)
            run_with_lock_timeout(schema_editor, lambda: schema_editor.execute(
                f"ALTER TABLE {table} ALTER COLUMN headers SET DEFAULT '{{}}'::jsonb"), what="Retire column headers")
            return
        run_with_lock_timeout(
            schema_editor, lambda: super(RetireHeadersColumn, self).database_forwards(
                app_label, schema_editor, from_state, to_state),
            what="Remove field headers from message",
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if is_postgresql(schema_editor):
            table = schema_editor.quote_name(to_state.apps.get_model(app_label, "message")._meta.db_table)
            run_with_lock_timeout(schema_editor, lambda: schema_editor.execute(
                f"ALTER TABLE {table} ALTER COLUMN headers DROP DEFAULT"), what="Restore column headers")
            return
        run_with_lock_timeout(
            schema_editor, lambda: super(RetireHeadersColumn, self).database_backwards(
                app_label, schema_editor, from_state, to_state),
            what="Add field headers to message",
        )


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
        WithLockTimeout([
            migrations.AddField(
                model_name="apikey",
                name="read_only",
                field=models.BooleanField(default=False, help_text="May list and read messages, nothing else."),
            ),
        ]),
        migrations.RunPython(create_api_token_key, migrations.RunPython.noop),
        AddOwner(),
        WithLockTimeout([
            migrations.AddField(
                model_name="message", name="headers_sealed", field=models.TextField(blank=True, default="", db_default=""),
            ),
        ]),
        migrations.RunPython(seal_existing_headers, open_sealed_headers),
        RetireHeadersColumn(),
        # The new uniqueness first: ids are never unguarded in between.
        AddConstraintConcurrently(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "delivered"), _negated=True),
                fields=("owner", "message_id"), name="unique_owner_message_id_until_delivered",
            ),
        ),
        RemoveConstraintConcurrently(model_name="message", name="unique_message_id_until_delivered"),
        AddIndexConcurrently(
            model_name="message",
            index=models.Index(fields=["owner", "message_id", "-created_at"], name="by_owner_message_id_created"),
        ),
        RemoveIndexConcurrently(model_name="message", name="by_message_id_created"),
        AddIndexConcurrently(
            model_name="message",
            index=models.Index(fields=["owner", "due_at", "id"], name="by_owner_due_at_id"),
        ),
        # Last, so that it is the first step of an unapply.
        migrations.RunPython(migrations.RunPython.noop, refuse_to_reverse_shared_ids),
    ]
