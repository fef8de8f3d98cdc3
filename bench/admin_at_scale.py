"""The admin's message list, /metrics, /health and GET /messages at N pending (default 1,000,000).

    .venv/bin/python -m bench.admin_at_scale [N]

Loads N far-future rows into a fresh SQLite file (bulk SQL, as `pending` does), then times each
page in-process with Django's test client: the median of 5, after one warm-up request.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.scenarios import FAR_FUTURE
from bench.service import ROOT, Service, SQLiteDatabase

PAGES = [
    ("admin list", "/admin/scheduler/message/"),
    ("admin list, page 50", "/admin/scheduler/message/?p=50"),
    ("admin status filter", "/admin/scheduler/message/?status__exact=scheduled"),
    ("admin search by id", "/admin/scheduler/message/?q=m-500000"),
    ("GET /metrics", "/metrics"),
    ("GET /health", "/health"),
    ("GET /messages", "/messages"),
]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    run_dir = Path(tempfile.mkdtemp(prefix="admin-at-scale-"))
    database = SQLiteDatabase(run_dir / "scale.sqlite3")
    database.create()
    Service(database=database, run_dir=run_dir).migrate()
    database.insert_messages(
        (f"m-{n}", FAR_FUTURE + datetime.timedelta(seconds=n), "http://127.0.0.1:9/x") for n in range(count)
    )
    os.environ.update(DJANGO_SETTINGS_MODULE="scheduler_project.settings", READ_DOT_ENV="false",
                      SECRET_KEY="bench-" * 10, API_TOKEN="bench-token-" * 4, ALLOWED_HOSTS="testserver",
                      DATABASE_URL=database.url)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    # The admin's pages name their static files through the manifest, as `make run` leaves it.
    call_command("collectstatic", interactive=False, verbosity=0)
    from django.contrib.auth.models import User
    from django.test import Client

    admin = User.objects.create_superuser("bench-admin", "bench@example.com", "bench-password-1")
    client = Client(HTTP_AUTHORIZATION="Bearer " + "bench-token-" * 4)
    client.force_login(admin)
    print(f"{count:,} pending messages in {database.url}")
    for label, url in PAGES:
        assert client.get(url).status_code == 200, url
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
        print(f"{label}: median {statistics.median(timings):.1f} ms (min {min(timings):.1f}, max {max(timings):.1f})")


if __name__ == "__main__":
    main()
