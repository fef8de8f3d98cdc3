"""A fault under the service, on the real path: PostgreSQL restarted while messages fall due.
Nothing is lost and nothing sent twice. Needs the local PostgreSQL cluster (CI's PostgreSQL
pass); skipped on SQLite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from messages.models import Message
from tests.support.api_calls import schedule
from tests.support.deliveries import DUPLICATE_WINDOW_SECONDS, deliveries_by_id
from tests.support.waits import nothing_more_arrives, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def _postgres_cluster() -> str | None:
    if connection.vendor != "postgresql" or not shutil.which("pg_ctlcluster"):
        return None
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return versions[-1] if versions else None


def test_postgresql_restarted_under_load_loses_and_duplicates_nothing(api, service, hook_path):
    version = _postgres_cluster()
    if version is None:
        pytest.skip("needs the local PostgreSQL cluster (runs in CI's PostgreSQL pass)")
    # Given 40 messages coming due over the next four seconds
    start = datetime.now(UTC) + timedelta(seconds=1)
    ids = [f"pg-{n}" for n in range(40)]
    for n, message_id in enumerate(ids):
        schedule(api, service, hook_path, message_id=message_id, at=start + timedelta(seconds=n * 0.1), payload={"id": message_id})
    connection.close()

    # When PostgreSQL restarts in the middle of them: the first few delivered, the rest still due
    assert len(service.wait_for_calls(hook_path, 5, timeout=15)) >= 5
    restarted = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=60)
    print(f"\nPostgreSQL restart took {time.monotonic() - restarted:.1f} s")

    # Then every message arrives exactly once
    service.wait_for_calls(hook_path, 40, timeout=60)
    nothing_more_arrives(lambda: service.calls_to(hook_path), within=DUPLICATE_WINDOW_SECONDS, what="a duplicate")
    assert deliveries_by_id(service, hook_path) == Counter({message_id: 1 for message_id in ids})
    print(f"PostgreSQL restart: all 40 delivered {time.monotonic() - restarted:.1f} s after it began")
    wait_until(lambda: not Message.objects.pending().exists(), timeout=30, what="nothing left pending")
