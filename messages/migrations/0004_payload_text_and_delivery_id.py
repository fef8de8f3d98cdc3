"""The payload becomes the JSON text sent as it is, and each new message gets its own delivery id.

Existing rows keep no delivery id: their receivers have seen the client's id as Idempotency-Key
and webhook-id, and keep getting it, so a retry after the upgrade is still recognised. Their
payload is the text the old column held (on PostgreSQL, jsonb's own rendering and key order).

On PostgreSQL no step holds the table locked for longer than a catalog change. The first
version ran in one transaction: ALTER COLUMN payload TYPE text rewrote the table and rebuilt
every index under an ACCESS EXCLUSIVE lock, ADD COLUMN payload_bytes ... CHECK scanned it to
check the constraint, the UPDATE measuring every payload then ran inside that lock, and so did
the two index builds for delivery_id (UNIQUE, and the _like index): at a million rows, the
service stood still for the whole migration. Now the text column is filled in batches beside
the old one and swapped in, the constraints are validated without blocking writes, and the
indexes are built CONCURRENTLY (messages/migration_operations.py). The end state is the same
(only the column order differs: payload_json comes after the columns that existed before);
databases that applied the first version are not touched again. Elsewhere (SQLite) it runs the
original operations, all or nothing.
"""

from django.db import migrations, models, transaction
from django.db.migrations.operations.base import Operation

import messages.identifiers
from messages.migration_operations import (
    WithLockTimeout,
    add_index_concurrently,
    add_unique_constraint_concurrently,
    is_postgresql,
    run_with_lock_timeout,
    without_timeouts,
)

BACKFILL_BATCH = 5000
# The names Django gave them in the first version (its sqlmigrate), frozen as a migration must be.
DELIVERY_ID_UNIQUE = "scheduler_message_delivery_id_54a7e4e4_uniq"
DELIVERY_ID_LIKE = "scheduler_message_delivery_id_54a7e4e4_like"
PAYLOAD_BYTES_CHECK = "scheduler_message_payload_bytes_check"

PAYLOAD_AS_TEXT = [
    migrations.RenameField(model_name="message", old_name="payload", new_name="payload_json"),
    migrations.AlterField(model_name="message", name="payload_json", field=models.TextField()),
    migrations.AddField(
        model_name="message",
        name="payload_bytes",
        field=models.PositiveIntegerField(default=0, help_text="Size of the payload as sent, in bytes."),
    ),
]

# PostgreSQL, step by step; each step may run again after a failure of a later one.
# 1. The new columns (a constant default: no rewrite; the CHECK comes later, NOT VALID, so no
#    scan) and a trigger that fills them for rows written meanwhile by the running version.
ADD_COLUMNS = [
    'ALTER TABLE "scheduler_message" ADD COLUMN IF NOT EXISTS "payload_text" text NULL, '
    'ADD COLUMN IF NOT EXISTS "payload_bytes" integer DEFAULT 0 NOT NULL',
    """CREATE OR REPLACE FUNCTION "scheduler_message_payload_as_text"() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW."payload_text" := NEW."payload"::text;
        NEW."payload_bytes" := octet_length(NEW."payload"::text);
        RETURN NEW;
    END $$""",
    'DROP TRIGGER IF EXISTS "payload_as_text" ON "scheduler_message"',
    'CREATE TRIGGER "payload_as_text" BEFORE INSERT OR UPDATE OF "payload" ON "scheduler_message" '
    'FOR EACH ROW EXECUTE FUNCTION "scheduler_message_payload_as_text"()',
]
# 2. The existing rows, a batch of ids per transaction: only those rows are locked, briefly.
BACKFILL = (
    'UPDATE "scheduler_message" SET "payload_text" = "payload"::text, "payload_bytes" = octet_length("payload"::text) '
    'WHERE "id" > %s AND "id" <= %s AND "payload_text" IS NULL'
)
# 3. CHECKs added NOT VALID (no scan under the lock), then validated: a scan under a SHARE UPDATE
#    EXCLUSIVE lock, which lets reads and writes through.
ADD_CHECKS = [
    'ALTER TABLE "scheduler_message" DROP CONSTRAINT IF EXISTS "payload_text_not_null", '
    'ADD CONSTRAINT "payload_text_not_null" CHECK ("payload_text" IS NOT NULL) NOT VALID, '
    f'DROP CONSTRAINT IF EXISTS "{PAYLOAD_BYTES_CHECK}", '
    f'ADD CONSTRAINT "{PAYLOAD_BYTES_CHECK}" CHECK ("payload_bytes" >= 0) NOT VALID',
]
VALIDATE_CHECKS = [
    'ALTER TABLE "scheduler_message" VALIDATE CONSTRAINT "payload_text_not_null"',
    f'ALTER TABLE "scheduler_message" VALIDATE CONSTRAINT "{PAYLOAD_BYTES_CHECK}"',
]
# 4. The swap, one transaction of catalog changes: SET NOT NULL finds the validated CHECK and
#    skips its scan (PostgreSQL 12 and later).
SWAP = [
    'ALTER TABLE "scheduler_message" ALTER COLUMN "payload_text" SET NOT NULL',
    'ALTER TABLE "scheduler_message" DROP CONSTRAINT "payload_text_not_null", ALTER COLUMN "payload_bytes" DROP DEFAULT',
    'DROP TRIGGER "payload_as_text" ON "scheduler_message"',
    'DROP FUNCTION "scheduler_message_payload_as_text"()',
    'ALTER TABLE "scheduler_message" DROP COLUMN "payload"',
    'ALTER TABLE "scheduler_message" RENAME COLUMN "payload_text" TO "payload_json"',
]


def measure_payloads(apps, schema_editor):
    Message = apps.get_model("scheduler", "Message")
    size = "octet_length(payload_json)" if schema_editor.connection.vendor == "postgresql" else (
        "length(CAST(payload_json AS BLOB))")
    table = schema_editor.quote_name(Message._meta.db_table)
    schema_editor.execute(f"UPDATE {table} SET payload_bytes = {size}")  # noqa: S608 - no input


class PayloadAsText(Operation):
    """PAYLOAD_AS_TEXT and the payloads measured; on PostgreSQL, without rewriting the table."""

    def state_forwards(self, app_label, state):
        for operation in PAYLOAD_AS_TEXT:
            operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if is_postgresql(schema_editor):
            convert_on_postgresql(schema_editor)
            return
        with transaction.atomic(using=schema_editor.connection.alias):
            for operation in PAYLOAD_AS_TEXT:
                after = from_state.clone()
                operation.state_forwards(app_label, after)
                operation.database_forwards(app_label, schema_editor, from_state, after)
                from_state = after
            measure_payloads(to_state.apps, schema_editor)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        # Back to jsonb the plain way (a rewrite under lock): a rollback is no routine deploy.
        states = [to_state]
        for operation in PAYLOAD_AS_TEXT[:-1]:
            states.append(states[-1].clone())
            operation.state_forwards(app_label, states[-1])
        with transaction.atomic(using=schema_editor.connection.alias):
            for operation, before in zip(reversed(PAYLOAD_AS_TEXT), reversed(states), strict=True):
                operation.database_backwards(app_label, schema_editor, from_state, before)
                from_state = before

    def describe(self):
        return "Payload as text (payload_json, payload_bytes), filled in batches on PostgreSQL"


def convert_on_postgresql(schema_editor):
    if is_converted(schema_editor):
        return  # an earlier run got this far and failed later on
    run_with_lock_timeout(schema_editor, lambda: execute_all(schema_editor, ADD_COLUMNS),
                          what="Adding payload_text, payload_bytes and their trigger")
    with without_timeouts(schema_editor):
        backfill(schema_editor)
    run_with_lock_timeout(schema_editor, lambda: execute_all(schema_editor, ADD_CHECKS), what="Adding the CHECKs")
    with without_timeouts(schema_editor):
        execute_all(schema_editor, VALIDATE_CHECKS)
    run_with_lock_timeout(schema_editor, lambda: execute_all(schema_editor, SWAP),
                          what="Swapping payload_text in for payload")


def is_converted(schema_editor):
    if schema_editor.collect_sql:
        return False
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'scheduler_message' AND column_name = 'payload'"
        )
        return cursor.fetchone() is None


def backfill(schema_editor):
    if schema_editor.collect_sql:
        schema_editor.collected_sql.append(f"-- for each range of {BACKFILL_BATCH} ids, in a transaction of its own:")
        schema_editor.execute(BACKFILL, [0, BACKFILL_BATCH])
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute('SELECT min("id"), max("id") FROM "scheduler_message"')
        [(first, last)] = cursor.fetchall()
    if first is None:
        return
    # Autocommit: each batch is a transaction of its own (the migration is not atomic).
    for low in range(first - 1, last, BACKFILL_BATCH):
        schema_editor.execute(BACKFILL, [low, low + BACKFILL_BATCH])


def execute_all(schema_editor, statements):
    for sql in statements:
        schema_editor.execute(sql, params=None)


class DeliveryIdUnique(migrations.AlterField):
    """delivery_id becomes unique; on PostgreSQL its two indexes are built CONCURRENTLY."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if not is_postgresql(schema_editor):
            with transaction.atomic(using=schema_editor.connection.alias):  # SQLite copies the table
                super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        add_unique_constraint_concurrently(
            schema_editor, model, models.UniqueConstraint(fields=["delivery_id"], name=DELIVERY_ID_UNIQUE)
        )
        add_index_concurrently(
            schema_editor, model,
            models.Index(fields=["delivery_id"], name=DELIVERY_ID_LIKE, opclasses=["varchar_pattern_ops"]),
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0003_partial_indexes_for_finished_and_enqueued"),
    ]

    operations = [
        PayloadAsText(),
        WithLockTimeout([
            migrations.AddField(
                model_name="message",
                name="delivery_id",
                field=models.CharField(max_length=40, null=True, editable=False),
            ),
        ]),
        DeliveryIdUnique(
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
