"""The scenarios of issue 6 (and issue 10's large payloads). Each returns one dict: the JSON
line printed for it.

Times at the receiver and the moments messages are due are both `time.time()` on this
machine, so lateness is arrival minus the scheduleTo the message was given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.load import Request, percentile, run_requests
from bench.profile import PySpy, summarize
from bench.receiver import ReceiverClient
from bench.service import Database, Service

FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
MB = 1024 * 1024
# Directly loaded messages wait for beat's next tick (SCHEDULER_POLL_SECONDS, at most 10 s by
# default) and the tick's dispatch: due this long after they were loaded.
DB_FEED_LEAD_S = 15.0


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    service: Service
    receiver: ReceiverClient
    clients: int
    profile_dir: Path | None = None
    drain_timeout: float = 120.0
    # Creates per second of messages due within the horizon, as last measured: sets how far
    # ahead a burst's instant must be for all its creates to finish before it.
    horizon_create_rate: float = 150.0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.service.token}", "Content-Type": "application/json"}

    def profiled(self, name: str, process: str) -> AbstractContextManager[None]:
        """py-spy on one of the service's processes and its children (the web server's workers, a
        prefork pool) while the block runs, when --profile is on. The worker is sampled only
        while holding the GIL: its threads mostly wait, and the GIL is what one process shares."""
        if self.profile_dir is None:
            return nullcontext()
        return _profiled(self.profile_dir / f"{name}.txt", self.service.pid(process), gil_only=process == "worker")


@contextmanager
def _profiled(output: Path, pid: int, *, gil_only: bool) -> Iterator[None]:
    with PySpy(pid=pid, output=output, subprocesses=True, gil_only=gil_only):
        yield
    if output.exists():
        summary = summarize(output)
        output.with_suffix(".summary.txt").write_text(summary)
        log(f"profile written to {output}\n{summary}")


class CpuMeter:
    """CPU seconds each of the service's processes spent while the block ran."""

    NAMES = ("web", "worker", "beat", "redis", "db")

    def __init__(self, service: Service) -> None:
        self.service = service
        self.used: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._before = {name: self.service.cpu_seconds(name) for name in self.NAMES}
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.used = {name: self.service.cpu_seconds(name) - self._before[name] for name in self.NAMES}

    def per_item_ms(self, name: str, count: int) -> float | None:
        return round(1000 * self.used[name] / count, 3) if count else None


def iso(moment: float | datetime) -> str:
    if isinstance(moment, float | int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def create_request(message_id: str, schedule_to: float | datetime, url: str) -> Request:
    body = {"id": message_id, "scheduleTo": iso(schedule_to), "payload": {"bench": message_id}, "webhookUrl": url}
    return ("POST", "/messages", json.dumps(body).encode())


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# --- create -----------------------------------------------------------------------------------

def create(bench: Bench, *, n: int, clients: int | None = None) -> dict[str, object]:
    """POST /messages far in the future, `clients` (default: the bench's) at a time, back to back."""
    if clients is not None and clients != bench.clients:
        return create(dataclasses.replace(bench, clients=clients), n=n) | {"scenario": f"create{clients}"}
    tag = f"create-{uuid.uuid4().hex[:8]}"
    url = bench.receiver.hook_url("create")
    # The client alone against a null endpoint, on kept connections as with the web server:
    # the most it can send, and its CPU per request.
    null = run_requests(
        port=bench.receiver.port, requests=[("POST", "/_bench/null", b"{}")] * n, clients=bench.clients,
        headers=bench.headers,
    )
    warmup = [create_request(f"{tag}-warm-{i}", FAR_FUTURE, url) for i in range(200)]
    run_requests(port=bench.service.port, requests=warmup, clients=bench.clients, headers=bench.headers)
    requests = [create_request(f"{tag}-{i}", FAR_FUTURE, url) for i in range(n)]
    with bench.profiled("create-web", "web"), CpuMeter(bench.service) as cpu:
        result = run_requests(port=bench.service.port, requests=requests, clients=bench.clients, headers=bench.headers)
    return {
        "scenario": "create",
        "clients": bench.clients,
        **result.summary(),
        # The service's CPU per request: comparable even when other work shares the cores.
        "web_cpu_ms_per_req": cpu.per_item_ms("web", result.count),
        "redis_cpu_ms_per_req": cpu.per_item_ms("redis", result.count),
        "db_server_cpu_ms_per_req": cpu.per_item_ms("db", result.count),
        "client_null_endpoint_req_per_s": null.summary()["req_per_s"],
        "client_null_cpu_ms_per_req": null.summary()["client_cpu_ms_per_req"],
    }


def batch(bench: Bench, *, batches: int, size: int, clients: int) -> dict[str, object]:
    """POST /messages/batch of `size` far-future messages each, `clients` at a time, back to back."""
    tag = f"batch-{uuid.uuid4().hex[:8]}"
    url = bench.receiver.hook_url("batch")

    def batch_request(name: str) -> Request:
        messages = [{"id": f"{name}-{i}", "scheduleTo": iso(FAR_FUTURE), "payload": {"bench": f"{name}-{i}"},
                     "webhookUrl": url} for i in range(size)]
        return ("POST", "/messages/batch", json.dumps({"messages": messages}).encode())

    run_requests(port=bench.service.port, requests=[batch_request(f"{tag}-warm-{i}") for i in range(4)],
                 clients=clients, headers=bench.headers)
    requests = [batch_request(f"{tag}-{i}") for i in range(batches)]
    with bench.profiled("batch-web", "web"), CpuMeter(bench.service) as cpu:
        result = run_requests(port=bench.service.port, requests=requests, clients=clients, headers=bench.headers)
    messages = result.statuses[200] * size  # each message of a 200 is scheduled: the ids are fresh
    return {
        "scenario": "batch",
        "clients": clients,
        "batch_size": size,
        **result.summary(),
        "messages_per_s": round(messages / result.elapsed_s) if result.elapsed_s else None,
        "web_cpu_ms_per_message": cpu.per_item_ms("web", messages),
        "db_server_cpu_ms_per_message": cpu.per_item_ms("db", messages),
    }


# --- deliveries: burst, slow, steady --------------------------------------------------------

def _feed(bench: Bench, due: dict[str, float], *, feed: str, url: str, send_at: dict[str, float] | None = None) -> dict:
    """Hands the messages to the service: through the API, or loaded straight into the database."""
    if feed == "db":
        started = time.time()
        bench.service.database.insert_messages(
            (message_id, datetime.fromtimestamp(moment, UTC), url) for message_id, moment in due.items()
        )
        return {"feed": "db", "load_s": round(time.time() - started, 2)}
    ids = list(due)
    result = run_requests(
        port=bench.service.port, requests=[create_request(i, due[i], url) for i in ids], clients=bench.clients,
        headers=bench.headers, send_at=None if send_at is None else [send_at[i] for i in ids],
    )
    summary = result.summary()
    req_per_s = summary["req_per_s"]
    if req_per_s:
        assert isinstance(req_per_s, int | float)
        bench.horizon_create_rate = float(req_per_s)
    return {
        "feed": "api",
        "create_req_per_s": summary["req_per_s"],
        "create_statuses": summary["statuses"],
        "create_errors": summary["errors"],
        "feed_max_lag_s": round(result.max_send_lag_s, 3),
        "feed_done_at": time.time(),
    }


def _wait_for_arrivals(bench: Bench, expected: int, *, until: float) -> None:
    """Until the receiver has seen `expected` calls or the deadline (time.time()) passes."""
    while time.time() < until and bench.receiver.stats()["count"] < expected:
        time.sleep(0.1)
    time.sleep(2.0)  # late duplicates would arrive now


def _arrivals(bench: Bench, due: dict[str, float]) -> dict[str, object]:
    """Delivered, duplicates, undelivered, lateness of each message's first arrival."""
    calls = [(at, message_id) for at, message_id in bench.receiver.calls() if message_id in due]
    per_id = Counter(message_id for _, message_id in calls)
    first: dict[str, float] = {}
    for at, message_id in sorted(calls):
        first.setdefault(message_id, at)
    lateness = [at - due[message_id] for message_id, at in first.items()]
    return {
        "messages": len(due),
        "delivered": len(first),
        # Not arrived when the wait ended (the drain timeout): late, or lost.
        "undelivered": len(due) - len(first),
        "duplicates": sum(n - 1 for n in per_id.values()),
        "lateness_p50_ms": ms(percentile(lateness, 50)),
        "lateness_p99_ms": ms(percentile(lateness, 99)),
        "lateness_max_ms": ms(max(lateness, default=None)),
        "_first": first,
    }


def burst(bench: Bench, *, n: int, feed: str = "api", delay: float = 0.0, name: str | None = None,
          lead: float | None = None) -> dict[str, object]:
    """`n` messages due at one instant; with `delay`, the receiver takes that long per call."""
    name = name or f"burst{n}" + ("_db" if feed == "db" else "")
    bench.receiver.reset(delay=delay)
    # ~5 s after the last create (at the create rate last measured), within the 300 s horizon.
    lead = lead or (DB_FEED_LEAD_S if feed == "db" else min(5.0 + 1.3 * n / bench.horizon_create_rate, 240.0))
    instant = round(time.time() + lead, 3)
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    due = {f"{tag}-{i}": instant for i in range(n)}
    with bench.profiled(f"{name}-web", "web") if feed == "api" else nullcontext(), \
            CpuMeter(bench.service) as feed_cpu:
        fed = _feed(bench, due, feed=feed, url=bench.receiver.hook_url(name))
    if fed.get("feed_done_at", 0) > instant:
        log(f"{name}: the last create finished {fed['feed_done_at'] - instant:.1f} s after the instant")
    fed["created_before_instant"] = fed.pop("feed_done_at", 0) <= instant
    with bench.profiled(f"{name}-worker", "worker"), CpuMeter(bench.service) as cpu:
        _wait_for_arrivals(bench, n, until=instant + bench.drain_timeout)
    result = _arrivals(bench, due)
    first = result.pop("_first")
    assert isinstance(first, dict)
    last = max(first.values(), default=None)
    line = {"scenario": name, **result, **fed, **_cpu_per_message(feed_cpu, cpu, n),
            "waited_until_s_after_instant": bench.drain_timeout}
    line["last_arrival_after_instant_s"] = None if last is None else round(last - instant, 3)
    if delay:
        line["receiver_delay_ms"] = delay * 1000
        # A call is delivered when its answer is back: the last arrival plus the delay.
        line["all_delivered_after_instant_s"] = None if last is None else round(last + delay - instant, 3)
        line["peak_inflight"] = bench.receiver.stats()["peak_inflight"]
    return line


def _cpu_per_message(feed: CpuMeter, delivery: CpuMeter, n: int) -> dict[str, float | None]:
    """What each message cost the service in CPU, while it was handed over and delivered."""
    return {
        "web_cpu_ms_per_msg": feed.per_item_ms("web", n),
        "worker_cpu_ms_per_msg": round(1000 * (feed.used["worker"] + delivery.used["worker"]) / n, 3),
        "beat_cpu_ms_per_msg": round(1000 * (feed.used["beat"] + delivery.used["beat"]) / n, 3),
        "db_server_cpu_ms_per_msg": round(1000 * (feed.used["db"] + delivery.used["db"]) / n, 3),
    }


class RssSampler:
    """Samples the RSS of the service's processes every `interval` seconds in a thread."""

    def __init__(self, service: Service, names: tuple[str, ...] = ("worker", "web"), interval: float = 1.0) -> None:
        self.service, self.names, self.interval = service, names, interval
        self.samples: dict[str, list[int]] = {name: [] for name in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name in self.names:
                self.samples[name].append(self.service.rss_bytes(name))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict[str, object]:
        line: dict[str, object] = {}
        for name, samples in self.samples.items():
            if samples:
                line[f"{name}_rss_mb_min"] = round(min(samples) / MB, 1)
                line[f"{name}_rss_mb_max"] = round(max(samples) / MB, 1)
        return line


def steady(bench: Bench, *, rate: int, duration: int, feed: str = "api", lead: float = 5.0) -> dict[str, object]:
    """`rate` messages due per second for `duration` s, each at its own moment.

    api: each is POSTed `lead` seconds before it is due, at the rate it falls due, as clients
    would; db: all are loaded up front and beat moves them into the horizon.
    """
    name = f"steady_{rate}x{duration}" + ("_db" if feed == "db" else "")
    bench.receiver.reset()
    n = rate * duration
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    start = round(time.time() + (DB_FEED_LEAD_S + n / 50_000 if feed == "db" else lead + 1.0), 3)
    due = {f"{tag}-{i}": start + i / rate for i in range(n)}
    send_at = {message_id: moment - lead for message_id, moment in due.items()}
    with RssSampler(bench.service) as rss, CpuMeter(bench.service) as cpu:
        fed = _feed(bench, due, feed=feed, url=bench.receiver.hook_url(name), send_at=send_at)
        fed.pop("feed_done_at", None)
        with bench.profiled(f"{name}-worker", "worker"):
            _wait_for_arrivals(bench, n, until=start + duration + bench.drain_timeout)
    result = _arrivals(bench, due)
    result.pop("_first")
    return {"scenario": name, "rate": rate, "duration_s": duration, **result, **fed, **rss.summary(),
            "waited_until_s_after_last_due": bench.drain_timeout,
            "web_cpu_ms_per_msg": cpu.per_item_ms("web", n), "worker_cpu_ms_per_msg": cpu.per_item_ms("worker", n),
            "db_server_cpu_ms_per_msg": cpu.per_item_ms("db", n)}


# --- pending: restart, list, memory -----------------------------------------------------------

def _start_measured(database: Database, run_dir: Path, *, settle: float, label: str) -> dict[str, object]:
    """Starts the service on `database`; ready time, GET /messages and RSS once it settled."""
    service = Service(database=database, run_dir=run_dir)
    try:
        started = time.monotonic()
        service.start()
        ready_s = service.wait_ready(timeout=300)
        ready_total = time.monotonic() - started
        log(f"{label}: ready in {ready_total:.2f} s; settling {settle:.0f} s before measuring memory")
        # Every web worker has served a request (its lazy imports done) before memory is
        # read, and beat's first tick has run the dispatcher over the pending rows.
        # Concurrent, so that every worker is busy at once and none is left cold (a worker
        # grows by ~25 MB on its first request, which would swamp what is measured here).
        run_requests(port=service.port, requests=[("GET", "/health", None)] * 20 * service.web_workers(),
                     clients=4 * service.web_workers(), headers={})
        time.sleep(settle)
        # Idle first: what holding the pending messages costs, before any listing touched them.
        idle = {name: statistics.median(_samples(service, name)) for name in ("web", "worker")}
        for _ in range(2 * service.web_workers()):
            service.get("/messages", params={"limit": 1})
        timings, body = [], {}
        for _ in range(5):
            t0 = time.perf_counter()
            response = service.get("/messages")
            timings.append((time.perf_counter() - t0) * 1000)
            body = response.json()
        health = service.get("/health").json()
        listed = {name: statistics.median(_samples(service, name)) for name in ("web", "worker")}
        return {
            "ready_s": round(ready_total, 3),
            "ready_after_processes_started_s": round(ready_s, 3),
            "list_median_ms": round(statistics.median(timings), 2),
            "list_min_ms": round(min(timings), 2),
            "list_max_ms": round(max(timings), 2),
            "list_items": len(body.get("scheduledJobs", [])),
            "list_count": body.get("count"),
            "health_scheduled_jobs": health.get("scheduled_jobs"),
            "web_rss_mb": round(idle["web"] / MB, 1),
            "worker_rss_mb": round(idle["worker"] / MB, 1),
            "web_rss_mb_after_list": round(listed["web"] / MB, 1),
            "worker_rss_mb_after_list": round(listed["worker"] / MB, 1),
            "web_processes": 1 + service.web_workers(),
        }
    finally:
        service.stop()


def _samples(service: Service, name: str, count: int = 3) -> list[int]:
    samples = []
    for _ in range(count):
        samples.append(service.rss_bytes(name))
        time.sleep(1)
    return samples


def pending(make_database: Callable[[], Database], run_dir: Path, *, n: int, settle: float) -> list[dict[str, object]]:
    """The service started empty, then with `n` far-future messages loaded into the database."""
    results: dict[str, dict[str, Any]] = {}
    for label, count in (("empty", 0), ("pending", n)):
        database = make_database()
        database.create()
        try:
            migrate_s = Service(database=database, run_dir=run_dir).migrate()
            load_s = 0.0
            if count:
                log(f"loading {count} pending messages straight into the database")
                started = time.monotonic()
                # A second apart, as real schedules are spread: with one shared due_at,
                # PostgreSQL sorts every tie to page by (due_at, id) (see docs/benchmarks.md).
                database.insert_messages(
                    (f"pending-{i}", FAR_FUTURE + timedelta(seconds=i), "http://127.0.0.1:9/never")
                    for i in range(count)
                )
                load_s = time.monotonic() - started
            results[label] = {"migrate_s": round(migrate_s, 2), "load_s": round(load_s, 2),
                              **_start_measured(database, run_dir, settle=settle, label=label)}
        finally:
            database.drop()
    empty, full = results["empty"], results["pending"]

    def growth(key: str) -> dict[str, object]:
        delta = full[key] - empty[key]
        return {f"{key}_empty": empty[key], f"{key}_pending": full[key], f"{key}_delta": round(delta, 1),
                f"{key}_delta_pct": round(100 * delta / empty[key], 1) if empty[key] else None}

    return [
        {"scenario": "restart", "pending": n, "ready_s": full["ready_s"], "ready_s_empty": empty["ready_s"],
         "migrate_s": full["migrate_s"], "load_s": full["load_s"],
         "health_scheduled_jobs": full["health_scheduled_jobs"]},
        {"scenario": "list", "pending": n, "median_ms": full["list_median_ms"], "min_ms": full["list_min_ms"],
         "max_ms": full["list_max_ms"], "items": full["list_items"], "count": full["list_count"],
         "median_ms_empty": empty["list_median_ms"]},
        # Idle (after beat's first tick, before any request): what holding them costs. After
        # five GET /messages: the web also holds what serving a 1,000-item page left behind.
        {"scenario": "memory", "pending": n, **growth("web_rss_mb"), **growth("worker_rss_mb"),
         "web_rss_mb_after_list_empty": empty["web_rss_mb_after_list"],
         "web_rss_mb_after_list_pending": full["web_rss_mb_after_list"],
         "bytes_per_message": round((full["web_rss_mb"] + full["worker_rss_mb"] - empty["web_rss_mb"]
                                     - empty["worker_rss_mb"]) * MB / n) if n else None,
         "web_processes": full["web_processes"]},
    ]



# --- large payloads (issue 10) ----------------------------------------------------------------

# POST /messages refuses a payload larger than PAYLOAD_MAX_BYTES (default 1 MiB) encoded as
# compact JSON; the large cases stay this far below it.
PAYLOAD_MAX_BYTES = 1024 * 1024
LARGE_PAYLOAD_MARGIN = 64
LARGE_PAYLOAD_KINDS = ("small", "string", "list")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def compact_json(value: object) -> bytes:
    """As the service encodes a payload for the call (webhook_client.encode_payload)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def large_payload(kind: str, size: int) -> bytes | None:
    """Every message's payload in a case, `size` bytes encoded, or None: each its own `small` one.

    string: `{"blob": "xxx…"}`, one str once decoded. list: `[{},{},…]`, the worst case issue 10
    names: each `{}` becomes a dict of its own, ~25 MB of Python objects per MiB.
    """
    if kind == "small":
        return None
    if kind == "string":
        return compact_json({"blob": "x" * (size - len(compact_json({"blob": ""})))})
    if kind == "list":
        return b"[" + b",".join([b"{}"] * ((size - 1) // 3)) + b"]"
    raise ValueError(f"unknown payload kind {kind!r}: choose from {', '.join(LARGE_PAYLOAD_KINDS)}")


class CreateRequests(Sequence):
    """POST /messages for each id, due at `schedule_to`, with `payload` (None: `{"bench": id}`).

    Each body is built when it is sent, so that 200 bodies of 1 MiB are never held at once."""

    def __init__(self, ids: list[str], schedule_to: float | datetime, url: str, payload: bytes | None) -> None:
        self.ids, self.schedule_to, self.url, self.payload = ids, iso(schedule_to), url, payload

    def __len__(self) -> int:
        return len(self.ids)

    def payload_for(self, message_id: str) -> bytes:
        return self.payload if self.payload is not None else compact_json({"bench": message_id})

    def __getitem__(self, index: int) -> Request:  # type: ignore[override]  # ints only, as run_requests asks
        message_id = self.ids[index]
        envelope = compact_json({"id": message_id, "scheduleTo": self.schedule_to, "webhookUrl": self.url})
        return ("POST", "/messages", envelope[:-1] + b',"payload":' + self.payload_for(message_id) + b"}")


def _proc_memory(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS) of one process in bytes, from /proc/<pid>/smaps_rollup; PSS None and RSS from
    /proc/<pid>/statm where smaps_rollup cannot be read; (0, None) for a process gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        try:
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES, None
        except OSError:
            return 0, None
    fields = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0]) * 1024  # kB
    return fields["Rss"], fields.get("Pss")


MemorySample = tuple[float, int, int | None]  # (time.time(), RSS, PSS or None), bytes


class ProcMemorySampler:
    """RSS and PSS summed over the worker processes, read from /proc every `interval` seconds in
    a thread: (time.time(), rss, pss) per sample, pss None when smaps_rollup was unreadable."""

    def __init__(self, service: Service, name: str = "worker", interval: float = 0.05) -> None:
        self.pids = [process.pid for process in service.process_trees(name)]
        self.interval = interval
        self.samples: list[MemorySample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            at = time.time()
            readings = [_proc_memory(pid) for pid in self.pids]
            pss = [reading[1] for reading in readings]
            self.samples.append((at, sum(reading[0] for reading in readings),
                                 None if None in pss else sum(pss)))  # type: ignore[arg-type]
            if self._stop.wait(max(self.interval - (time.time() - at), 0)):
                return

    def __enter__(self) -> ProcMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _measured(sample: MemorySample, column: int) -> float:
    """The sample's RSS (1) or PSS (2); only for a column with no None in it."""
    value = sample[column]
    assert value is not None
    return value


def _memory_summary(samples: list[MemorySample], *, burst_from: float, after_from: float,
                    instant: float) -> dict[str, object]:
    """Baseline (median before the burst), peak during it, and what was left after it, in MB."""
    before = [s for s in samples if s[0] < burst_from]
    during = [s for s in samples if s[0] >= burst_from] or samples
    after = [s for s in samples if s[0] >= after_from] or samples[-1:]
    line: dict[str, object] = {}
    for column, key in ((1, "rss"), (2, "pss")):
        if any(s[column] is None for s in samples):
            continue
        baseline = statistics.median(_measured(s, column) for s in before) if before else None
        peak = max(during, key=lambda s: _measured(s, column))
        line[f"worker_{key}_mb_baseline"] = None if baseline is None else round(baseline / MB, 1)
        line[f"worker_{key}_mb_peak"] = round(_measured(peak, column) / MB, 1)
        line[f"worker_{key}_mb_peak_delta"] = None if baseline is None else round((_measured(peak, column) - baseline) / MB, 1)
        line[f"worker_{key}_mb_after"] = round(statistics.median(_measured(s, column) for s in after) / MB, 1)
        line[f"worker_{key}_peak_at_s_after_instant"] = round(peak[0] - instant, 2)
    gaps = [b[0] - a[0] for a, b in zip(samples, samples[1:], strict=False)]
    line["memory_samples"] = len(samples)
    line["memory_sample_interval_ms"] = ms(statistics.mean(gaps)) if gaps else None
    line["memory_samples_before_burst"] = len(before)
    return line


def large_payloads(bench: Bench, *, kind: str, n: int = 200, size: int = PAYLOAD_MAX_BYTES - LARGE_PAYLOAD_MARGIN,
                   claim_lead: float = 0.1) -> dict[str, object]:
    """`n` messages with `kind` payloads POSTed, all due at one instant: the worker processes'
    RSS and PSS from /proc every 50 ms, from the last create until the deliveries are over.

    The instant is set after a probe (`clients` creates of the same payload, due in 2099, which
    the worker never loads) timed the creates, so that all are stored before it. Delivery tasks
    start `claim_lead` (DELIVERY_CLAIM_LEAD_MS) before it: the baseline is read until then.
    """
    name = f"large_payloads_{kind}"
    payload = large_payload(kind, size)
    url = bench.receiver.hook_url(name)
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    probe = CreateRequests([f"{tag}-probe-{i}" for i in range(bench.clients)], FAR_FUTURE, url, payload)
    probed = run_requests(port=bench.service.port, requests=probe, clients=bench.clients,
                          headers=bench.headers).summary()
    probed_rate = probed["req_per_s"]
    assert probed_rate is None or isinstance(probed_rate, int | float)
    rate = float(probed_rate or 1.0)
    # 1.6: at 1 MiB, n creates in a row ran at as little as 0.7 of the probe's rate.
    lead = min(5.0 + 1.6 * n / rate, 240.0)
    bench.receiver.reset()
    instant = round(time.time() + lead, 3)
    requests = CreateRequests([f"{tag}-{i}" for i in range(n)], instant, url, payload)
    due = dict.fromkeys(requests.ids, instant)
    log(f"{name}: creates at {rate} req/s in the probe; the instant is {lead:.1f} s ahead")
    with CpuMeter(bench.service) as feed_cpu:
        created = run_requests(port=bench.service.port, requests=requests, clients=bench.clients,
                               headers=bench.headers).summary()
    feed_done = time.time()
    if feed_done > instant:
        log(f"{name}: the last create finished {feed_done - instant:.1f} s after the instant")
    with ProcMemorySampler(bench.service) as memory, CpuMeter(bench.service) as cpu:
        _wait_for_arrivals(bench, n, until=instant + bench.drain_timeout)
    stopped = time.time()
    result = _arrivals(bench, due)
    first = result.pop("_first")
    assert isinstance(first, dict)
    last = max(first.values(), default=None)
    expected_bytes = sum(len(requests.payload_for(message_id)) for message_id in requests.ids)
    received_bytes = bench.receiver.stats()["body_bytes"]
    return {
        "scenario": name, "payload": kind, "payload_bytes": len(payload) if payload else None, **result,
        "last_arrival_after_instant_s": None if last is None else round(last - instant, 3),
        # Every body arrived whole, once: the receiver counted exactly the bytes sent.
        "received_body_mb": round(received_bytes / MB, 1), "bodies_whole": received_bytes == expected_bytes,
        "worker_processes": len(memory.pids),
        # The 2 s _wait_for_arrivals waits after the last arrival is what "after" reads.
        **_memory_summary(memory.samples, burst_from=instant - claim_lead, after_from=stopped - 1.0,
                          instant=instant),
        "worker_cpu_ms_per_msg": cpu.per_item_ms("worker", n),
        "web_cpu_ms_per_create": feed_cpu.per_item_ms("web", n),
        "probe_create_req_per_s": rate, "create_req_per_s": created["req_per_s"],
        "create_statuses": created["statuses"], "create_errors": created["errors"],
        "lead_s": round(lead, 2), "created_before_instant": feed_done <= instant,
        "waited_until_s_after_instant": bench.drain_timeout,
    }
