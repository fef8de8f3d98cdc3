"""HTTP load generation: N requests from K client threads, back to back or at set moments.

http.client rather than requests: it costs a fraction of the CPU per call, and on two cores
every cycle the client spends is taken from the service. Each thread keeps one connection
and reopens it when the server closes it.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# (method, path, body)
Request = tuple[str, str, bytes | None]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    # Paced runs: how far behind its set moment a request went out, worst case.
    max_send_lag_s: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.count,
            "req_per_s": round(self.count / self.elapsed_s, 1) if self.elapsed_s else None,
            "p50_ms": _round(percentile(self.latencies_ms, 50)),
            "p99_ms": _round(percentile(self.latencies_ms, 99)),
            "max_ms": _round(max(self.latencies_ms, default=None)),
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            # The client's own CPU per request, and its share of one core while it ran.
            "client_cpu_ms_per_req": _round(1000 * self.client_cpu_s / self.count) if self.count else None,
            "client_cpu_cores": _round(self.client_cpu_s / self.elapsed_s, 2) if self.elapsed_s else None,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def run_requests(
    *,
    port: int,
    requests: Sequence[Request],
    clients: int,
    headers: dict[str, str],
    send_at: Sequence[float] | None = None,
    timeout: float = 600,
) -> LoadResult:
    """Sends every request once, `clients` at a time; with `send_at` (time.time()), not before it.

    Stops taking new requests after `timeout` seconds, so a stuck server cannot hang the run.
    """
    result = LoadResult()
    lock = threading.Lock()
    next_index = itertools.count()
    deadline = time.monotonic() + timeout

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies: list[float] = []
        statuses: Counter = Counter()
        errors: Counter = Counter()
        max_lag = 0.0
        try:
            while time.monotonic() < deadline:
                index = next(next_index)
                if index >= len(requests):
                    break
                if send_at is not None:
                    wait = send_at[index] - time.time()
                    if wait > 0:
                        time.sleep(wait)
                    else:
                        max_lag = max(max_lag, -wait)
                method, path, body = requests[index]
                started = time.perf_counter()
                try:
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    statuses[response.status] += 1
                    if response.will_close:
                        connection.close()
                except (OSError, http.client.HTTPException) as error:
                    errors[type(error).__name__] += 1
                    connection.close()
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            connection.close()
            with lock:
                result.latencies_ms.extend(latencies)
                result.statuses.update(statuses)
                result.errors.update(errors)
                result.max_send_lag_s = max(result.max_send_lag_s, max_lag)

    # Daemons: an interrupted run exits without waiting for them to drain their requests.
    threads = [threading.Thread(target=client, name=f"load-{i}", daemon=True) for i in range(clients)]
    cpu_before, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0) + 120)
    result.elapsed_s = time.perf_counter() - started
    result.client_cpu_s = time.process_time() - cpu_before
    return result
