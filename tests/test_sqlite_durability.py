"""On SQLite a commit is on disk before the request that made it answers (issue 11)."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_a_commit_on_sqlite_waits_for_the_disk():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: PostgreSQL's commits wait for its WAL flush by default")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        [(journal_mode,)] = cursor.fetchall()
        cursor.execute("PRAGMA synchronous")
        [(synchronous,)] = cursor.fetchall()
    # WAL with NORMAL (1) syncs only at checkpoints: a power cut could undo commits already
    # answered 200. FULL (2) syncs the WAL at every commit.
    assert (journal_mode, synchronous) == ("wal", 2)
