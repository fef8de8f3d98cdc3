"""Prometheus metrics for GET /metrics, gathered across every worker on every host.

Workers add to counters and histogram buckets in Redis (one pipelined round trip per attempt);
the web process reads them, and counts messages by status from the database, at scrape time.
A Redis restart resets the counters, which Prometheus treats as any counter reset.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis
from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from messages import broker
from messages.models import Message, MessageStatus

logger = logging.getLogger(__name__)

KEY = broker.KEY_PREFIX + "metrics:{name}"
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _bucket_label(value: float, buckets: tuple[float, ...]) -> str:
    index = bisect_left(buckets, value)
    return repr(buckets[index]) if index < len(buckets) else "+Inf"


def _observe(pipe: redis.client.Pipeline, name: str, value: float, buckets: tuple[float, ...]) -> None:
    key = KEY.format(name=name)
    pipe.hincrby(key, _bucket_label(value, buckets), 1)
    pipe.hincrbyfloat(key, "sum", value)


@dataclass(frozen=True)
class AttemptSample:
    outcome: str
    result_class: str
    duration_seconds: float
    lateness_seconds: float | None


def record_attempts(samples: Iterable[AttemptSample]) -> None:
    """One round trip for a whole group. Best effort: a metrics write never fails a delivery."""
    try:
        pipe = broker.redis_client().pipeline(transaction=False)
        for sample in samples:
            pipe.hincrby(KEY.format(name="attempts"), f"{sample.outcome}|{sample.result_class}", 1)
            _observe(pipe, "attempt_duration", sample.duration_seconds, DURATION_BUCKETS)
            if sample.lateness_seconds is not None:
                _observe(pipe, "lateness", max(sample.lateness_seconds, 0.0), LATENESS_BUCKETS)
        if len(pipe):
            pipe.execute()
    except (redis.RedisError, OSError) as error:
        logger.warning("metrics not recorded: %s", error)


class SchedulerCollector(Collector):
    def collect(self) -> Iterator[object]:
        yield self._messages_by_status()
        counters = self._read_counters()
        yield from counters

    def _messages_by_status(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("scheduler_messages", "Messages in the database by status.", labels=["status"])
        counts = dict(Message.objects.values_list("status").annotate(n=Count("pk")).order_by())
        for status in MessageStatus.values:
            family.add_metric([status], counts.get(status, 0))
        return family

    def _read_counters(self) -> list[object]:
        client = broker.redis_client()
        attempts = CounterMetricFamily(
            "scheduler_delivery_attempts", "Webhook calls by what followed (delivered, retry, failed) and result.",
            labels=["outcome", "result"],
        )
        for field, count in client.hgetall(KEY.format(name="attempts")).items():
            outcome, _, result_class = field.decode().partition("|")
            attempts.add_metric([outcome, result_class], int(count))
        return [
            attempts,
            self._histogram(client, "lateness", LATENESS_BUCKETS, "scheduler_delivery_lateness_seconds",
                            "First attempt's start minus scheduleTo."),
            self._histogram(client, "attempt_duration", DURATION_BUCKETS, "scheduler_attempt_duration_seconds",
                            "Duration of each webhook call."),
        ]

    def _histogram(self, client: redis.Redis, name: str, buckets: tuple[float, ...], metric: str,
                   documentation: str) -> HistogramMetricFamily:
        raw = {key.decode(): value for key, value in client.hgetall(KEY.format(name=name)).items()}
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
