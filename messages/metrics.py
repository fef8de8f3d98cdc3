"""Prometheus metrics for GET /metrics, gathered across every worker on every host.

Workers add to counters and histogram buckets in Redis (one pipelined round trip per attempt);
the web process reads them, and counts messages by status from the database, at scrape time.
A Redis restart resets the counters, which Prometheus treats as any counter reset.
"""

from __future__ import annotations

import logging
import queue
import threading
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis
from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from messages import redis_keys
from messages.models import Message, MessageStatus

logger = logging.getLogger(__name__)

KEY = redis_keys.KEY_PREFIX + "metrics:{name}"
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _bucket_label(value: float, buckets: tuple[float, ...]) -> str:
    index = bisect_left(buckets, value)
    return repr(buckets[index]) if index < len(buckets) else "+Inf"


@dataclass(frozen=True)
class AttemptSample:
    verdict: str
    result_class: str
    duration_seconds: float
    lateness_seconds: float | None


def count_attempts(samples: Iterable[AttemptSample]) -> None:
    """Adds a whole group up first: a few commands in one round trip, however many messages.
    Best effort: a metrics write never fails a delivery."""
    increments: Counter[tuple[str, str]] = Counter()
    sums: defaultdict[str, float] = defaultdict(float)
    for sample in samples:
        increments[("attempts", f"{sample.verdict}|{sample.result_class}")] += 1
        increments[("attempt_duration", _bucket_label(sample.duration_seconds, DURATION_BUCKETS))] += 1
        sums["attempt_duration"] += sample.duration_seconds
        if sample.lateness_seconds is not None:
            lateness = max(sample.lateness_seconds, 0.0)
            increments[("lateness", _bucket_label(lateness, LATENESS_BUCKETS))] += 1
            sums["lateness"] += lateness
    if not increments:
        return
    try:
        pipe = redis_keys.redis_client().pipeline(transaction=False)
        for (name, field), count in increments.items():
            pipe.hincrby(KEY.format(name=name), field, count)
        for name, total in sums.items():
            pipe.hincrbyfloat(KEY.format(name=name), "sum", total)
        pipe.execute()
    except (redis.RedisError, OSError) as error:
        logger.warning("metrics not recorded: %s", error)


# Batches of samples waiting for the writer thread; past this many, new ones are dropped.
MAX_QUEUED_BATCHES = 1000
_queued_batches: queue.Queue[list[AttemptSample]] = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
_writer_lock = threading.Lock()
_writer: threading.Thread | None = None


def count_attempts_in_background(samples: Iterable[AttemptSample]) -> None:
    """For the delivery path: a Redis that is slow or gone (connect and read time out after
    seconds) must never hold up the recording of deliveries. Dropped, and said so, when the
    writer falls behind: these are counters, the database has the attempts."""
    batch = list(samples)
    if not batch:
        return
    _start_writer()
    try:
        _queued_batches.put_nowait(batch)
    except queue.Full:
        logger.warning("metrics for %d attempts dropped: Redis is not keeping up", len(batch))


def _start_writer() -> None:
    global _writer
    with _writer_lock:
        if _writer is None or not _writer.is_alive():
            _writer = threading.Thread(target=_write_forever, name="metrics-writer", daemon=True)
            _writer.start()


def _write_forever() -> None:
    while True:
        batch = _queued_batches.get()
        try:
            count_attempts(batch)
        except Exception:
            logger.exception("metrics not recorded")
        finally:
            _queued_batches.task_done()  # after count_attempts let go of its Redis client


def wait_for_background_writes(*, timeout: float) -> bool:
    """Until the writer has written (or dropped) every batch queued so far, or `timeout`. For a
    stopping worker: the writer is a daemon thread, frozen wherever it is when the interpreter
    exits; frozen inside redis-py, holding a connection pool's lock, it left the main thread
    waiting on that lock for good in the pool's __del__ (py-spy: Redis.__del__ →
    ConnectionPool.disconnect), and the worker had to be killed."""
    with _queued_batches.all_tasks_done:
        return _queued_batches.all_tasks_done.wait_for(lambda: not _queued_batches.unfinished_tasks, timeout)


class SchedulerCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield self._messages_by_status()
        counters = self._read_counters()
        yield from counters

    def _messages_by_status(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("scheduler_messages", "Messages in the database by status.", labels=["status"])
        counts = dict(Message.objects.values_list("status").annotate(n=Count("pk")).order_by())
        for status in MessageStatus.values:
            family.add_metric([status], counts.get(status, 0))
        return family

    def _read_counters(self) -> list[Metric]:
        client = redis_keys.redis_client()
        attempts = CounterMetricFamily(
            "scheduler_delivery_attempts",
            "Webhook calls by what followed (delivered, retry, failed) and result.",
            labels=["outcome", "result"],
        )
        for field, count in client.hgetall(KEY.format(name="attempts")).items():
            outcome, _, result_class = redis_keys.as_text(field).partition("|")
            attempts.add_metric([outcome, result_class], int(count))
        return [
            attempts,
            self._histogram(
                client,
                "lateness",
                LATENESS_BUCKETS,
                "scheduler_delivery_lateness_seconds",
                "First attempt's start minus scheduleTo.",
            ),
            self._histogram(
                client, "attempt_duration", DURATION_BUCKETS, "scheduler_attempt_duration_seconds", "Duration of each webhook call."
            ),
        ]

    def _histogram(
        self, client: redis.Redis, name: str, buckets: tuple[float, ...], metric: str, documentation: str
    ) -> HistogramMetricFamily:
        raw = {redis_keys.as_text(key): value for key, value in client.hgetall(KEY.format(name=name)).items()}
        cumulative, total = [], 0
        for bound in (*map(repr, buckets), "+Inf"):
            total += int(raw.get(bound, 0))
            cumulative.append((bound, total))
        family = HistogramMetricFamily(metric, documentation)
        family.add_metric([], cumulative, sum_value=float(raw.get("sum", 0)))
        return family


def scheduler_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SchedulerCollector())
    return registry
