"""Why the worker sends with aiohttp: CPU per webhook call, requests on threads vs aiohttp on one loop.

    .venv/bin/python -m bench.http_clients [N] [CONCURRENCY]

Starts the bench receiver on 127.0.0.1, then sends N POSTs of a small JSON body (default 5,000),
CONCURRENCY at a time (default 200), first with requests on a pool of threads (one session per
thread, connections kept: what the worker did before), then with aiohttp on one asyncio loop
(one session, connections kept: what it does now). Prints the CPU time of this process per call
and the wall time of each.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import requests

from bench.receiver import ReceiverClient
from bench.service import ROOT, free_port, wait_until

BODY = b'{"invoice":42,"text":"a small JSON payload"}'
HEADERS = {"Content-Type": "application/json", "User-Agent": "bench"}


def with_requests(url: str, n: int, concurrency: int) -> None:
    local = threading.local()

    def send(_: int) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.trust_env = False
        with local.session.post(url, data=BODY, headers=HEADERS, timeout=30, stream=True) as response:
            response.raw.read(1024)
            return response.status_code

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, range(n)))


def with_aiohttp(url: str, n: int, concurrency: int) -> None:
    async def main() -> None:
        slots = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def send() -> int:
                async with slots, session.post(url, data=BODY, headers=HEADERS,
                                               timeout=aiohttp.ClientTimeout(total=30)) as response:
                    await response.content.read(1024)
                    return response.status

            await asyncio.gather(*(send() for _ in range(n)))

    asyncio.run(main())


def measure(name: str, send: Callable[[str, int, int], None], url: str, n: int, concurrency: int) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    send(url, n, concurrency)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{name}: {1000 * cpu / n:.3f} ms CPU per call, {n} calls in {wall:.2f} s")  # noqa: T201


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.receiver", "--port", str(port)], cwd=ROOT)  # noqa: S603
    try:
        client = ReceiverClient(port)
        wait_until(client.answers, timeout=20, what="the receiver")
        url = client.hook_url("http-clients")
        measure("requests, thread pool", with_requests, url, n, concurrency)
        measure("aiohttp, one loop", with_aiohttp, url, n, concurrency)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    main()
