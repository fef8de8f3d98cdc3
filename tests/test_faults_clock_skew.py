"""The worker's clock against the database's, on the real path: etas run on the worker's clock,
so a skewed one delivers early or late. Beat's ticks measure the skew and /health reports it;
this checks the measurement on a healthy machine (no skew is injected).
"""

from __future__ import annotations

import pytest

from messages import redis_keys
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_the_workers_clock_agrees_with_the_databases(api, celery_worker, celery_beat):
    redis_keys.redis_client().delete(redis_keys.CLOCK_SKEW_KEY)
    wait_until(lambda: redis_keys.last_worker_clock_skew() is not None, timeout=10, what="a beat tick")

    skew = redis_keys.last_worker_clock_skew()
    assert skew is not None
    health = api.get("/health").json()

    print(f"\nworker clock minus database clock: {skew * 1000:.1f} ms")
    assert abs(skew) < 0.5
    assert health["worker_clock_skew_ms"] is not None
