"""Django's SQLite backend, with writers taking turns through a lock file.

Every process of the service writes to one SQLite file, and SQLite lets one transaction write at
a time. A writer that finds the write lock taken waits in SQLite's busy handler, which sleeps
(1 ms, then 2, 5, 10 ... up to 100 ms) and tries again: it wakes late, and a writer that keeps
losing waits longer each time. Two web processes creating messages lost about a third of their
rate and most of their p99 to those sleeps (docs/benchmarks.md, issue 14). Here an outermost
transaction (every one is BEGIN IMMEDIATE: it takes the write lock at once) first takes an
exclusive flock on `<database>-writers.lock`, released at its commit or rollback, so the next
writer starts within a fraction of a millisecond of the previous one's commit.

It waits for the turn at most as long as SQLite's busy timeout (the connection's `timeout`, or
what delivery.bounded_transaction set), then fails as SQLite does: "database is locked".
Statements outside a transaction do not take a turn: they wait in SQLite's busy handler as
before, and are still serialised by SQLite's own lock, which stays the guarantee. So a BEGIN
that got the turn can still wait that busy timeout once more, behind such a statement: a
transaction waits at most twice the timeout in all.

Overrides three of Django's private hooks (_start_transaction_under_autocommit, _commit,
_rollback) and _close; tests/test_sqlite_backend.py fails, naming them, if Django stops calling them.
"""

from __future__ import annotations

import fcntl
import os
import time
import weakref
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

FIRST_WAIT_SECONDS = 0.00005
LONGEST_WAIT_SECONDS = 0.0005
# A writer still waiting after this (behind a long transaction: a bulk cancel, a dispatch of
# thousands) looks less often, so that many waiters do not take the holder's CPU.
PATIENT_AFTER_SECONDS = 0.02
LONGEST_PATIENT_WAIT_SECONDS = 0.005


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn_file: int | None = None
        self._close_turn_file: weakref.finalize | None = None
        self.holds_write_turn = False

    def write_turn_path(self) -> str | None:
        """The lock file beside the database; None in memory (one connection: nobody to wait for)."""
        if self.is_in_memory_db():
            return None
        return f"{os.fspath(self.settings_dict['NAME'])}-writers.lock"

    def _start_transaction_under_autocommit(self) -> None:
        self._take_write_turn()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private: not in django-stubs
        except BaseException:
            self._give_write_turn_back()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]  # private: not in django-stubs
        finally:
            self._give_write_turn_back()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]  # private: not in django-stubs
        finally:
            self._give_write_turn_back()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]  # private: not in django-stubs
        finally:
            self._give_write_turn_back()
            if self._close_turn_file is not None:
                self._close_turn_file()  # closes it once, here or when this wrapper is collected
            self._turn_file = self._close_turn_file = None

    def _take_write_turn(self) -> None:
        path = self.write_turn_path()
        if path is None or self.holds_write_turn:
            return
        if self._turn_file is None:
            self._turn_file = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            # A connection of a thread that ended is collected without _close: its file with it.
            self._close_turn_file = weakref.finalize(self, os.close, self._turn_file)
        # SQLite's own busy timeout, in milliseconds: the settings' or bounded_transaction's.
        timeout = self.connection.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
        started = time.monotonic()
        wait = FIRST_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(self._turn_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout:
                    raise OperationalError(f"database is locked (no write turn within {timeout:g} s)") from None
                time.sleep(wait)
                longest = LONGEST_WAIT_SECONDS if waited < PATIENT_AFTER_SECONDS else LONGEST_PATIENT_WAIT_SECONDS
                wait = min(wait * 2, longest)
                continue
            self.holds_write_turn = True
            return

    def _give_write_turn_back(self) -> None:
        if self.holds_write_turn and self._turn_file is not None:
            fcntl.flock(self._turn_file, fcntl.LOCK_UN)
        self.holds_write_turn = False
