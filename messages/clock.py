"""How far this process's clock is from the database's: a worker that runs fast sends early."""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone


def database_clock_skew_seconds() -> float:
    """This process's clock minus the database server's (positive: we are ahead)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
        else:
            # SQLite runs in this process, on this clock: what it reads is the same time source.
            cursor.execute("SELECT (julianday('now') - 2440587.5) * 86400.0")
        database_now = float(cursor.fetchone()[0])
    return timezone.now().timestamp() - database_now


def database_now() -> datetime:
    """The database server's time: what claims are written and judged by, whichever host asks."""
    if connection.vendor != "postgresql":
        # SQLite runs in this process, on this host's clock: the file cannot span two hosts.
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]
