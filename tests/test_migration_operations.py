"""messages/migration_operations.py: concurrent index builds that a rerun finishes, a lock
timeout that steps aside for the queries queued behind it, and plain operations off PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.apps import apps
from django.db import IntegrityError, NotSupportedError, connection, models
from django.db.migrations.state import ProjectState

from messages.migration_operations import (
    LOCK_TIMEOUT_MS,
    AddIndexConcurrently,
    add_index_concurrently,
    add_unique_constraint_concurrently,
    remove_index_concurrently,
    remove_unique_constraint_concurrently,
    run_with_lock_timeout,
)
from messages.models import Message
from tests.factories import make_message

pytestmark = pytest.mark.django_db(transaction=True)

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL only (CI's second pass): SQLite has no concurrent DDL"
)


def conninfo() -> str:
    settings = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"],
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
    )


def index_state(name: str) -> str:
    """'valid', 'invalid' or 'missing', as PostgreSQL's catalog has it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
        row = cursor.fetchone()
    return "missing" if row is None else "valid" if row[0] else "invalid"


@pytest.fixture
def probe_table() -> Iterator[str]:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE lock_probe (id integer)")
    yield "lock_probe"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS lock_probe")


@needs_postgresql
def test_a_schema_change_behind_a_long_read_steps_aside_until_the_read_is_over(probe_table, caplog):
    # Given a long read holding the table (3 s), and a service reading it all along
    holding, done = threading.Event(), threading.Event()
    longest = [0.0]

    def long_read() -> None:
        with psycopg.connect(conninfo()) as db:
            db.execute("LOCK TABLE lock_probe IN ACCESS SHARE MODE")
            holding.set()
            time.sleep(3)

    def service() -> None:
        with psycopg.connect(conninfo(), autocommit=True) as db:
            while not done.is_set():
                started = time.monotonic()
                db.execute("SELECT count(*) FROM lock_probe")
                longest[0] = max(longest[0], time.monotonic() - started)
                time.sleep(0.02)

    threads = [threading.Thread(target=long_read), threading.Thread(target=service)]
    for thread in threads:
        thread.start()
    assert holding.wait(timeout=5)

    # When a migration step needs its ACCESS EXCLUSIVE lock
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="messages.migration_operations"), connection.schema_editor(atomic=False) as editor:
        run_with_lock_timeout(editor, lambda: editor.execute("ALTER TABLE lock_probe ADD COLUMN added integer"))
    took = time.monotonic() - started
    done.set()
    for thread in threads:
        thread.join(timeout=10)

    # Then it waited for the long read, but the service never waited much longer than a lock timeout
    with connection.cursor() as cursor:
        assert "added" in [column.name for column in connection.introspection.get_table_description(cursor, "lock_probe")]
    assert took > 2
    assert "gave way" in caplog.text
    print(f"\nthe step went through after {took:.1f} s; the longest read took {longest[0] * 1000:.0f} ms")
    assert longest[0] < LOCK_TIMEOUT_MS / 1000 + 0.8  # without the timeout: the whole 3 s


@needs_postgresql
@pytest.mark.parametrize("condition", [None, models.Q(status="scheduled")], ids=["constraint", "partial-index"])
def test_a_rerun_after_a_failed_concurrent_build_replaces_the_invalid_index(condition):
    # Given two messages that break the unique constraint about to be added
    first = make_message(message_id="a", webhook_url="https://example.com/same")
    make_message(message_id="b", webhook_url="https://example.com/same")
    constraint = models.UniqueConstraint(fields=["webhook_url"], condition=condition, name="probe_unique_url")

    # When the build fails halfway, it leaves an INVALID index
    with connection.schema_editor(atomic=False) as editor, pytest.raises(IntegrityError):
        add_unique_constraint_concurrently(editor, Message, constraint)
    assert index_state("probe_unique_url") == "invalid"

    # Then, once the data is put right, a rerun builds it anew, and it can be removed again
    first.delete()
    with connection.schema_editor(atomic=False) as editor:
        add_unique_constraint_concurrently(editor, Message, constraint)
    assert index_state("probe_unique_url") == "valid"
    with connection.cursor() as cursor:
        assert "probe_unique_url" in connection.introspection.get_constraints(cursor, Message._meta.db_table)
    with connection.schema_editor(atomic=False) as editor:
        remove_unique_constraint_concurrently(editor, Message, constraint)
    assert index_state("probe_unique_url") == "missing"


def test_an_index_is_added_and_removed_on_every_database():
    index = models.Index(fields=["webhook_url"], name="probe_by_url")
    table = Message._meta.db_table

    with connection.schema_editor(atomic=False) as editor:
        add_index_concurrently(editor, Message, index)
    with connection.cursor() as cursor:
        assert "probe_by_url" in connection.introspection.get_constraints(cursor, table)

    with connection.schema_editor(atomic=False) as editor:
        remove_index_concurrently(editor, Message, index)
    with connection.cursor() as cursor:
        assert "probe_by_url" not in connection.introspection.get_constraints(cursor, table)


def test_a_concurrent_operation_in_an_atomic_migration_is_refused_on_every_database():
    # SQLite would take it, PostgreSQL would not: refused on both, so the SQLite pass catches it.
    operation = AddIndexConcurrently("message", models.Index(fields=["webhook_url"], name="probe_by_url"))
    before = ProjectState.from_apps(apps)
    after = before.clone()
    operation.state_forwards("scheduler", after)

    with connection.schema_editor(atomic=True) as editor, pytest.raises(NotSupportedError, match="atomic = False"):
        operation.database_forwards("scheduler", editor, before, after)
