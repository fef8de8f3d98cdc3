"""POST /messages/cancel at scale, in the Django app alone: time and memory of one bulk cancel.

    .venv/bin/python -m bench.bulk_cancel [N] [--postgres URL]

Migrates a throwaway SQLite file (or, with --postgres, a database bench_scheduler created on that
server and dropped afterwards), loads N scheduled messages (default 1,000,000) with one
executemany, then cancels them all through scheduling.cancel_messages with a filter, as the
endpoint does, and prints the wall time, the rate and this process's peak RSS before and after.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.service import ROOT, Database, PostgresDatabase, SQLiteDatabase


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    args = sys.argv[1:]
    postgres = args[args.index("--postgres") + 1] if "--postgres" in args else None
    if postgres:
        args.remove("--postgres")
        args.remove(postgres)
    n = int(args[0]) if args else 1_000_000
    database: Database
    if postgres:
        database = PostgresDatabase(postgres)
        database.create()
    else:
        database = SQLiteDatabase(Path(tempfile.mkdtemp(prefix="bulk-cancel-")) / "db.sqlite3")
    os.environ.update(DJANGO_SETTINGS_MODULE="scheduler_project.settings", READ_DOT_ENV="false",
                      API_TOKEN="bench-token-" + "x" * 20, SECRET_KEY="bench-" * 10, DATABASE_URL=database.url,
                      LOG_LEVEL="WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from messages import scheduling
    from messages.listing import MessageFilter
    from messages.models import API_TOKEN_KEY_ID, Message

    call_command("migrate", verbosity=0)
    start = datetime(2099, 1, 1, tzinfo=UTC)
    loaded = database.insert_messages(
        (f"bulk-{number}", start + timedelta(milliseconds=number), "https://old.example.com/hook") for number in range(n)
    )
    before = peak_rss_mb()
    started = time.monotonic()
    result = scheduling.cancel_messages(
        owner_id=API_TOKEN_KEY_ID, status="scheduled", narrowed_by=MessageFilter(webhook_url_prefix="https://old.")
    )
    seconds = time.monotonic() - started
    left = Message.objects.count()
    print(f"loaded {loaded:,}; cancelled {result.cancelled:,} in {seconds:.1f} s ({result.cancelled / seconds:,.0f}/s); "  # noqa: T201
          f"{left} left; peak RSS {before:.0f} MB before, {peak_rss_mb():.0f} MB after")
    database.drop()


if __name__ == "__main__":
    main()
