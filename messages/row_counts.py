"""Counting rows of a table of a million: exact where that is cheap, else PostgreSQL's estimate."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, QuerySet


@dataclass(frozen=True)
class RowCount:
    value: int
    is_estimate: bool


def count_rows(queryset: QuerySet, *, exact_up_to: int) -> RowCount:
    """Exact while the planner expects at most `exact_up_to` rows; past that, its estimate.

    An exact COUNT(*) on PostgreSQL reads every matching row (docs/benchmarks.md: its cost). The
    estimate costs an EXPLAIN; it is as fresh as the last ANALYZE (autovacuum runs one after
    10% of the table changed). Where there is no planner estimate (SQLite), always exact.
    """
    estimate = planner_row_estimate(queryset)
    if estimate is None or estimate <= exact_up_to:
        return RowCount(queryset.count(), is_estimate=False)
    return RowCount(estimate, is_estimate=True)


def planner_row_estimate(queryset: QuerySet) -> int | None:
    """The rows PostgreSQL's planner expects the queryset to select (EXPLAIN, nothing run).

    None on other databases, and while the table's statistics have seen no rows: the planner
    would then guess from the file's size and an assumed row width.
    """
    connection = connections[queryset.db]
    if connection.vendor != "postgresql" or not _statistics_have_rows(connection, queryset.model):
        return None
    # EXPLAIN (FORMAT JSON) answers a list of one plan; its top node's rows are the query's.
    plans = json.loads(queryset.order_by().values("pk").explain(format="json"))
    return int(plans[0]["Plan"]["Plan Rows"])


def _statistics_have_rows(connection: BaseDatabaseWrapper, model: type[Model]) -> bool:
    with connection.cursor() as cursor:
        # reltuples is what ANALYZE/autovacuum last saw: -1 (PG 14+) before the first one.
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(model._meta.db_table)],
        )
        row = cursor.fetchone()
    return row is not None and row[0] > 0
