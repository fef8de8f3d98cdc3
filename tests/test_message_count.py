"""GET /messages' count: exact for ordinary sizes; PostgreSQL's planner estimate past a threshold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from messages import listing
from messages.models import API_TOKEN_KEY_ID, Message, MessageStatus
from messages.row_counts import count_rows, planner_row_estimate
from tests.factories import make_message

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner estimate")
on_sqlite = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite, which has no estimate")


def store_pending_and_delivered(*, pending: int, delivered: int) -> None:
    for n in range(pending):
        make_message(message_id=f"pending-{n}")
    for n in range(delivered):
        make_message(message_id=f"delivered-{n}", status=MessageStatus.DELIVERED, due_at=None)


def analyze_messages() -> None:
    # What autovacuum does after enough writes: the planner's statistics catch up with the rows.
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Message._meta.db_table)}")


@pytest.fixture
def fresh_statistics() -> Iterator[None]:
    """ANALYZE's statistics outlive the test's rollback: leave them as an empty table's."""
    yield
    Message.objects.all().delete()
    analyze_messages()


def test_count_below_the_threshold_is_exact_and_says_so():
    store_pending_and_delivered(pending=3, delivered=2)

    page = listing.list_messages(owner_id=API_TOKEN_KEY_ID, status=None, limit=1000, cursor=None)

    assert page.count == 3
    assert page.count_is_estimate is False


def test_count_of_a_status_below_the_threshold_is_exact():
    store_pending_and_delivered(pending=2, delivered=0)
    make_message(message_id="again", status=MessageStatus.RETRYING)

    page = listing.list_messages(owner_id=API_TOKEN_KEY_ID, status=MessageStatus.RETRYING, limit=1000, cursor=None)

    assert (page.count, page.count_is_estimate) == (1, False)


@on_sqlite
def test_sqlite_counts_exactly_whatever_the_threshold(monkeypatch):
    store_pending_and_delivered(pending=4, delivered=1)
    monkeypatch.setattr(listing, "EXACT_COUNT_UP_TO", 0)

    page = listing.list_messages(owner_id=API_TOKEN_KEY_ID, status=None, limit=2, cursor=None)

    assert (page.count, page.count_is_estimate) == (4, False)
    assert planner_row_estimate(Message.objects.pending()) is None


@on_postgresql
def test_postgresql_answers_the_planners_estimate_past_the_threshold(monkeypatch, fresh_statistics):
    # Given 30 pending among 40 rows, and statistics that have seen them
    store_pending_and_delivered(pending=30, delivered=10)
    analyze_messages()
    monkeypatch.setattr(listing, "EXACT_COUNT_UP_TO", 5)

    page = listing.list_messages(owner_id=API_TOKEN_KEY_ID, status=None, limit=2, cursor=None)

    # The estimate comes from null_frac of due_at: 40 rows, a quarter of them finished
    assert (page.count, page.count_is_estimate) == (30, True)
    assert len(page.messages) == 2


@on_postgresql
def test_the_api_says_when_its_count_is_an_estimate(api, monkeypatch, fresh_statistics):
    store_pending_and_delivered(pending=30, delivered=10)
    analyze_messages()

    exact = api.get("/messages").json()
    monkeypatch.setattr(listing, "EXACT_COUNT_UP_TO", 5)
    estimated = api.get("/messages").json()

    assert (exact["count"], "countIsEstimate" in exact) == (30, False)
    assert (estimated["count"], estimated["countIsEstimate"]) == (30, True)


@on_postgresql
def test_postgresql_counts_exactly_when_the_estimate_is_at_the_threshold(fresh_statistics):
    store_pending_and_delivered(pending=30, delivered=10)
    analyze_messages()
    # A row the statistics have not seen: only an exact count can include it
    make_message(message_id="after-analyze")

    # The threshold is the planner's own figure (30 or so: it scales the analyzed count by the
    # table's pages, which the extra row may have grown)
    estimate = planner_row_estimate(Message.objects.pending())
    assert estimate is not None
    counted = count_rows(Message.objects.pending(), exact_up_to=estimate)

    assert (counted.value, counted.is_estimate) == (31, False)


@on_postgresql
def test_planner_estimate_of_the_whole_table_follows_analyze(fresh_statistics):
    store_pending_and_delivered(pending=30, delivered=10)
    analyze_messages()

    assert planner_row_estimate(Message.objects.all()) == 40


def test_listed_page_leaves_the_payload_unread():
    make_message(message_id="large", payload={"blob": "x" * 10_000})

    page = listing.list_messages(owner_id=API_TOKEN_KEY_ID, status=None, limit=10, cursor=None)

    assert page.messages[0].message_id == "large"
    assert not hasattr(page.messages[0], "payload")
    assert not hasattr(page.messages[0], "headers")


@on_postgresql
def test_postgresql_counts_exactly_while_the_statistics_have_seen_no_rows(fresh_statistics):
    # Given statistics taken of an empty table, then rows written since
    analyze_messages()
    store_pending_and_delivered(pending=3, delivered=1)

    counted = count_rows(Message.objects.pending(), exact_up_to=0)

    assert (counted.value, counted.is_estimate) == (3, False)
