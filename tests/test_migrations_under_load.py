"""`manage.py migrate` on a populated PostgreSQL table, while the table stays readable and writable.

A scratch database of the test's own is migrated to 0002, filled with 200,000 messages, and then
migrated to the latest while a thread inserts a message and reads it back by message_id, again
and again, each statement with a 2 s statement_timeout, as the web server would; and while a
long read (a report, a pg_dump) holds the table for a few seconds when the migration begins. A
migration that takes an ACCESS EXCLUSIVE lock for an index build, a rewrite or a scan, or one
that queues for it behind the long read, stops that thread for seconds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from django.db import connection
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.processes import ROOT, process_env

pytestmark = pytest.mark.migrations

ROWS = 200_000
STATEMENT_TIMEOUT_S = 2.0
LONG_READ_S = 5.0
# Before 0003: the state every install that predates the concurrent index builds was in.
START = ("scheduler", "0002_ops_group")

# 0002's columns (payload still jsonb): 9 in 10 delivered, the rest scheduled, 1 in 20 enqueued.
POPULATE = """
INSERT INTO scheduler_message (message_id, status, schedule_to, due_at, webhook_url, payload, headers,
    attempt_count, attempt_count_at_resend, last_status_code, last_error, created_at, enqueued_at, finished_at)
SELECT 'seed-' || n,
       CASE WHEN n %% 10 = 0 THEN 'scheduled' ELSE 'delivered' END,
       now() - interval '1 day' + n * interval '1 second',
       CASE WHEN n %% 10 = 0 THEN now() + n * interval '1 second' END,
       'https://receiver.example/hooks/' || (n %% 100),
       jsonb_build_object('order', n, 'customer', 'c-' || (n %% 1000), 'note', repeat('x', 200)),
       '{}'::jsonb, 1, 0, 200, '', now() - interval '1 day',
       CASE WHEN n %% 20 = 0 THEN now() END,
       CASE WHEN n %% 10 <> 0 THEN now() - interval '1 hour' END
FROM generate_series(1, %s) AS n
"""

# The columns come from the table as it is at that moment (jsonb_populate_record ignores the
# keys it has no column for), so one statement writes a valid row before, during and after each
# migration: payload as jsonb or as payload_json text, payload_bytes once it exists, and the
# owner (API_TOKEN's key row, 0) and sealed headers of 0005.
INSERT = """
INSERT INTO scheduler_message
SELECT (jsonb_populate_record(NULL::scheduler_message,
        %s::jsonb || jsonb_build_object('id', nextval(pg_get_serial_sequence('scheduler_message', 'id'))))).*
"""
SELECT_BY_ID = "SELECT id, status FROM scheduler_message WHERE message_id = %s"

# Django sets up the executor itself here rather than `manage.py migrate scheduler 0002`: the
# post_migrate handlers of later code may expect the latest schema.
MIGRATE_TO_START = (
    "import django; django.setup(); from django.db import connection; "
    "from django.db.migrations.executor import MigrationExecutor; "
    f"MigrationExecutor(connection).migrate([{START!r}])"
)


@dataclass
class Service:
    """INSERT a message, SELECT it by message_id, over and over, each within the timeout."""

    conninfo: str
    longest_s: float = 0.0
    slowest: str = ""
    statements: int = 0
    timed_out: int = 0
    refused: Counter = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=None) as db:
            db.execute(f"SET statement_timeout = '{int(STATEMENT_TIMEOUT_S * 1000)}ms'")
            n = 0
            while not self.stop.is_set():
                message_id = f"load-{n}"
                self.timed(db, "INSERT", INSERT, [Jsonb(new_message(message_id))])
                self.timed(db, "SELECT", SELECT_BY_ID, [message_id])
                n += 1

    def timed(self, db: psycopg.Connection, what: str, statement: str, params: list) -> None:
        started = time.monotonic()
        try:
            db.execute(statement, params)
        except psycopg.errors.QueryCanceled:
            self.timed_out += 1
        except psycopg.Error as error:  # the schema refused the row; no lock was waited for
            self.refused[f"{what}: {type(error).__name__}"] += 1
        took = time.monotonic() - started
        self.statements += 1
        if took > self.longest_s:
            self.longest_s, self.slowest = took, f"{what} at statement {self.statements}"


def new_message(message_id: str) -> dict:
    payload = {"message": message_id}
    payload_json = f'{{"message":"{message_id}"}}'
    return {
        "message_id": message_id,
        "status": "scheduled",
        "schedule_to": "2099-01-01T00:00:00Z",
        "due_at": "2099-01-01T00:00:00Z",
        "webhook_url": "https://receiver.example/load",
        "payload": payload,
        "payload_json": payload_json,
        "payload_bytes": len(payload_json),
        "headers": {},
        "headers_sealed": "",
        "owner_id": 0,
        "attempt_count": 0,
        "attempt_count_at_resend": 0,
        "last_error": "",
        "created_at": "2026-01-01T00:00:00Z",
    }


def hold_the_table(conninfo: str, seconds: float, holding: threading.Event) -> None:
    """A long read, as a report or pg_dump makes: its ACCESS SHARE lock stays until it ends."""
    with psycopg.connect(conninfo) as db:
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        db.execute("SELECT count(*) FROM scheduler_message")
        holding.set()
        time.sleep(seconds)


@pytest.fixture
def scratch_database(django_db_setup: None, django_db_blocker) -> Iterator[tuple[str, str]]:
    """(name, conninfo) of an empty database of this test's own, dropped afterwards."""
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.skip(
                "needs PostgreSQL (CI's second pass: DATABASE_URL=postgres://...): SQLite has no "
                "concurrent DDL to test, and a migration locks the whole file there anyway"
            )
        settings = connection.settings_dict
    name = f"migrations_under_load_{uuid.uuid4().hex[:12]}"
    server: dict[str, Any] = {
        "host": settings["HOST"] or None,
        "port": settings["PORT"] or None,
        "user": settings["USER"] or None,
        "password": settings["PASSWORD"] or None,
    }
    admin = psycopg.conninfo.make_conninfo(dbname=settings["NAME"], **server)
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name, psycopg.conninfo.make_conninfo(dbname=name, **server)
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migrations_keep_a_populated_table_readable_and_writable(scratch_database):
    # Given a database at 0002 holding 200,000 messages
    name, conninfo = scratch_database
    env = process_env(SCHEDULER_TEST_DATABASE_NAME=name)
    subprocess.run([sys.executable, "-c", MIGRATE_TO_START], cwd=ROOT, env=env, check=True, timeout=120)
    with psycopg.connect(conninfo, autocommit=True) as db:
        db.execute(POPULATE, [ROWS])

    # and a service reading and writing it, and a long read that has just begun
    service = Service(conninfo)
    serving = threading.Thread(target=service.run, daemon=True)
    serving.start()
    holding = threading.Event()
    long_read = threading.Thread(target=hold_the_table, args=(conninfo, LONG_READ_S, holding), daemon=True)
    long_read.start()
    assert holding.wait(timeout=10)

    # When manage.py migrate takes it to the latest migration
    started = time.monotonic()
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100
    )
    took = time.monotonic() - started
    time.sleep(0.5)  # the service keeps going a moment after the last step
    service.stop.set()
    serving.join(timeout=10)
    long_read.join(timeout=10)

    # Then it succeeded, and no read or write of the table waited anywhere near its timeout
    print(
        f"\nmigrate took {took:.1f} s; the service ran {service.statements} statements, the longest "
        f"{service.longest_s * 1000:.0f} ms ({service.slowest}); {service.timed_out} timed out"
        f"{'; refused by the schema: ' + str(dict(service.refused)) if service.refused else ''}"
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert service.statements > 100, "the service thread did not get going"
    assert service.timed_out == 0
    assert service.longest_s < STATEMENT_TIMEOUT_S
    with psycopg.connect(conninfo) as db:
        invalid = db.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid").fetchall()
        row = db.execute("SELECT count(*) FROM scheduler_message WHERE payload_bytes > 0").fetchone()
    assert row is not None
    stored = row[0]
    assert invalid == []
    assert stored >= ROWS
