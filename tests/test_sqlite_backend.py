"""scheduler_project/sqlite_backend: an outermost transaction takes the write turn (an flock
beside the database) before SQLite's write lock and gives it back at its commit or rollback; the
next writer starts at once, and one kept waiting past the busy timeout fails as SQLite would."""

from __future__ import annotations

import fcntl
import gc
import os
import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest
from django.db import OperationalError, connections, transaction
from django.db import connection as default_connection

from messages.models import Message
from scheduler_project.sqlite_backend.base import DatabaseWrapper
from tests.factories import make_message

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(default_connection.vendor != "sqlite", reason="SQLite only: PostgreSQL has writers of its own"),
]
# The default connection, as the backend this file tests (the proxy is typed as the base class).
connection = cast(DatabaseWrapper, default_connection)

HOOKS = "Django no longer calls DatabaseWrapper._start_transaction_under_autocommit / _commit / _rollback"


@pytest.fixture
def turn_held_elsewhere() -> Iterator[int]:
    """Another process's view of the lock file: its own open file, as another connection's."""
    path = connection.write_turn_path()
    assert path is not None
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    yield descriptor
    os.close(descriptor)


def turn_is_free(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    return True


def test_a_transaction_holds_the_turn_until_its_commit_and_a_nested_one_takes_nothing_more(turn_held_elsewhere):
    assert turn_is_free(turn_held_elsewhere)

    with transaction.atomic():
        assert connection.holds_write_turn, HOOKS
        assert not turn_is_free(turn_held_elsewhere)
        with transaction.atomic():
            make_message(message_id="inside")
        assert not turn_is_free(turn_held_elsewhere)

    assert not connection.holds_write_turn
    assert turn_is_free(turn_held_elsewhere)
    assert Message.objects.filter(message_id="inside").exists()


def test_a_rolled_back_or_failed_transaction_gives_the_turn_back(turn_held_elsewhere):
    def failing_view() -> None:
        with transaction.atomic():
            make_message(message_id="rolled-back")
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        failing_view()

    assert not connection.holds_write_turn, HOOKS
    assert turn_is_free(turn_held_elsewhere)
    assert not Message.objects.filter(message_id="rolled-back").exists()


def test_a_connection_closed_inside_its_transaction_gives_the_turn_back(turn_held_elsewhere):
    atomic = transaction.atomic()
    atomic.__enter__()
    assert not turn_is_free(turn_held_elsewhere)

    connection.close()  # as Django does with a connection found broken

    assert turn_is_free(turn_held_elsewhere)
    atomic.__exit__(None, None, None)
    assert not connection.holds_write_turn


def test_the_next_writer_starts_as_soon_as_the_turn_is_given_back():
    # Given a writer in another thread that holds its transaction open for 0.3 s
    committed_at: list[float] = []
    holding = threading.Event()

    def first_writer() -> None:
        try:
            with transaction.atomic():
                make_message(message_id="first")
                holding.set()
                time.sleep(0.3)
            committed_at.append(time.monotonic())
        finally:
            connections.close_all()

    thread = threading.Thread(target=first_writer)
    thread.start()
    assert holding.wait(5)

    # When this one begins meanwhile
    with transaction.atomic():
        started_at = time.monotonic()
        make_message(message_id="second")
    thread.join()

    # Then it began within a couple of milliseconds of the other's commit, not at SQLite's next
    # busy retry (sleeps of 1, 2, 5 ... 100 ms)
    assert 0 <= started_at - committed_at[0] < 0.005
    assert Message.objects.filter(message_id__in=["first", "second"]).count() == 2


def test_a_writer_kept_waiting_past_the_busy_timeout_fails_as_sqlite_does(turn_held_elsewhere):
    fcntl.flock(turn_held_elsewhere, fcntl.LOCK_EX)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        configured = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout = 200")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), transaction.atomic():
            make_message(message_id="never")
        waited = time.monotonic() - started
    finally:
        fcntl.flock(turn_held_elsewhere, fcntl.LOCK_UN)
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {configured}")

    assert 0.2 <= waited < 2
    assert not connection.holds_write_turn
    assert not Message.objects.filter(message_id="never").exists()


def test_the_lock_file_is_private():
    with transaction.atomic():
        pass
    path = connection.write_turn_path()
    assert path is not None
    assert os.stat(path).st_mode & 0o077 == 0


def test_a_thread_s_connection_left_unclosed_does_not_keep_its_lock_file_open():
    path = connection.write_turn_path()
    assert path is not None

    def open_lock_files() -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{fd}") == path
            except OSError:
                pass  # the listing's own descriptor, closed by now
        return count

    def one_write(number: int) -> None:
        with transaction.atomic():
            make_message(message_id=f"thread-{number}")
        # No close: a thread that ends with its connection open, as a thread pool's may

    before = open_lock_files()
    for number in range(20):
        thread = threading.Thread(target=one_write, args=(number,))
        thread.start()
        thread.join()
    gc.collect()

    assert open_lock_files() - before <= 1
