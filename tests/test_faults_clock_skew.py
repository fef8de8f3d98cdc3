"""The worker's clock against the database's, on the real path: etas run on the worker's clock,
so a skewed one delivers early or late. Beat's ticks measure the skew and /health reports it;
this checks the measurement on a healthy machine (no skew is injected).
"""

from __future__ import annotations

import pytest

from messages import broker
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_the_workers_clock_agrees_with_the_databases(api, celery_worker, celery_beat):
    broker.redis_client().delete(broker.CLOCK_SKEW_KEY)
    wait_until(lambda: broker.last_worker_clock_skew() is not None, timeout=10, what="a beat tick")

    skew = broker.last_worker_clock_skew()
    health = api.get("/health").json()

    print(f"\nworker clock minus database clock: {skew * 1000:.1f} ms")
    assert abs(skew) < 0.5
    assert health["worker_clock_skew_ms"] is not None
