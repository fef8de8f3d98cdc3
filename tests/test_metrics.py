"""GET /metrics: Prometheus text, behind the token or an allowed network."""

from __future__ import annotations

import threading
import time
from ipaddress import ip_network

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from messages import metrics
from messages.models import MessageStatus
from tests.factories import make_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_metrics(redis_server):
    redis_server.client().flushdb()


def samples(response) -> dict[tuple[str, tuple], float]:
    text = response.content.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_need_the_token(anonymous_api):
    assert anonymous_api.get("/metrics").status_code == 401


def test_an_allowed_network_may_scrape_without_the_token(anonymous_api, settings):
    settings.METRICS_ALLOWED_NETWORKS = [ip_network("127.0.0.0/8")]
    assert anonymous_api.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert anonymous_api.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401


def test_messages_are_counted_by_status(api):
    make_message(message_id="a")
    make_message(message_id="b")
    make_message(message_id="c", status=MessageStatus.FAILED, due_at=None)

    values = samples(api.get("/metrics"))

    assert values[("scheduler_messages", (("status", "scheduled"),))] == 2
    assert values[("scheduler_messages", (("status", "failed"),))] == 1
    assert values[("scheduler_messages", (("status", "delivered"),))] == 0


def test_attempts_lateness_and_durations_are_exported(api):
    metrics.count_attempts(
        [
            metrics.AttemptSample(verdict="delivered", result_class="2xx", duration_seconds=0.02, lateness_seconds=0.004),
            metrics.AttemptSample(verdict="retry", result_class="ConnectionError", duration_seconds=0.001, lateness_seconds=7),
        ]
    )
    metrics.count_attempts(
        [
            metrics.AttemptSample(verdict="failed", result_class="4xx", duration_seconds=0.3, lateness_seconds=None),
        ]
    )

    response = api.get("/metrics")
    values = samples(response)

    assert response["Content-Type"].startswith("text/plain")
    assert values[("scheduler_delivery_attempts_total", (("outcome", "delivered"), ("result", "2xx")))] == 1
    assert values[("scheduler_delivery_attempts_total", (("outcome", "retry"), ("result", "ConnectionError")))] == 1
    assert values[("scheduler_delivery_lateness_seconds_bucket", (("le", "0.005"),))] == 1
    assert values[("scheduler_delivery_lateness_seconds_bucket", (("le", "10.0"),))] == 2
    assert values[("scheduler_delivery_lateness_seconds_count", ())] == 2
    assert values[("scheduler_delivery_lateness_seconds_sum", ())] == pytest.approx(7.004)
    assert values[("scheduler_attempt_duration_seconds_count", ())] == 3


def test_a_redis_that_does_not_answer_never_holds_up_recording(monkeypatch):
    answered = threading.Event()

    class Hanging:
        def pipeline(self, transaction: bool):
            answered.wait(5)  # as a half-open connection would, until its timeout
            raise redis.TimeoutError("no answer")

    monkeypatch.setattr(metrics.redis_keys, "redis_client", lambda: Hanging())
    sample = metrics.AttemptSample(verdict="delivered", result_class="2xx", duration_seconds=0.01, lateness_seconds=0)

    started = time.monotonic()
    for _ in range(20):
        metrics.count_attempts_in_background([sample])
    elapsed = time.monotonic() - started
    answered.set()

    assert elapsed < 0.5


def test_a_stopping_worker_can_wait_for_the_background_writes(monkeypatch):
    # The writer is a daemon thread: left inside redis-py at exit, it hung the worker's exit.
    release = threading.Event()
    written: list[int] = []

    def slow_count(samples):
        release.wait(5)
        written.append(len(list(samples)))

    monkeypatch.setattr(metrics, "count_attempts", slow_count)
    sample = metrics.AttemptSample(verdict="delivered", result_class="2xx", duration_seconds=0.01, lateness_seconds=0.0)
    metrics.count_attempts_in_background([sample])

    assert metrics.wait_for_background_writes(timeout=0.2) is False  # still writing
    release.set()
    assert metrics.wait_for_background_writes(timeout=5) is True
    assert written  # ours among them: other tests queued batches too
