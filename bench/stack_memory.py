"""The stack as `make run` starts it: time to healthy, memory of every process, time to stop.

    .venv/bin/python -m bench.stack_memory [--settle SECONDS] [--pending N] [--postgres URL]

Starts scripts/run_service.py (the launcher `make run` runs) twice on a throwaway SQLite file (or a
database bench_scheduler on a PostgreSQL server), with the default INFO logs and REDIS_URL on a
port where nothing answers, so that the launcher starts a Redis of its own as it does for a new
user (and no heartbeat of an earlier run can make the scheduler look running): once on the new
database, then again (a restart) with N far-future messages loaded (default 10,000); and
measures from the command:
- the seconds until /health answers healthy with the scheduler running;
- after SETTLE seconds (default 15: beat's first ticks, the workers idle), each process's PSS
  and RSS (PSS shares a page between the processes that map it, so the total is what the
  stack costs; RSS counts a shared page once per process), and their totals;
- the seconds from Ctrl-C (SIGINT to the launcher) until every process has exited.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import psutil

from bench.service import ROOT, Database, PostgresDatabase, SQLiteDatabase, free_port


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
            report = json.load(response)
    except (OSError, ValueError):
        return False
    return report.get("status") == "healthy" and report.get("scheduler") == "running"


def tree(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def name_of(process: psutil.Process) -> str:
    words = process.cmdline()
    text = " ".join(words)
    if "celery" in text and " worker" in text and "--beat-thread" in text:
        return "worker (beat in a thread)"
    for marker in ("scheduler_project.web_server", "granian", "flower", "beat", "maintenance@", "worker", "redis-server"):
        if marker in text:
            return marker.rstrip("@")
    return "launcher" if "run_service.py" in text else " ".join(words[:2])


def wait_until_stopped(processes: list[psutil.Process], *, timeout: float) -> None:
    """Until each has exited. A zombie has: an orphan waits for PID 1 to reap it, and some
    inits (this machine's) take a second or more to."""

    def stopped(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + timeout
    while not all(stopped(process) for process in processes) and time.monotonic() < deadline:
        time.sleep(0.01)


def run_once(database: Database, *, settle: float | None, port: int, redis_port: int) -> dict[str, object]:
    """Starts the stack, waits for healthy, measures memory after `settle` s (None: not), stops it."""
    env = {
        **os.environ,
        "READ_DOT_ENV": "false",
        "API_TOKEN": "bench-token-" + "x" * 20,
        "SECRET_KEY": "bench-" * 10,
        "DATABASE_URL": database.url,
        "API_PORT": str(port),
        "LOG_LEVEL": "INFO",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    env.pop("FLOWER_BASIC_AUTH", None)  # the default stack: Flower starts only with a login
    started = time.monotonic()
    launcher = subprocess.Popen(
        [sys.executable, "scripts/run_service.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rows: list[dict[str, object]] = []
    try:
        health = f"http://127.0.0.1:{port}/health"
        while not healthy(health):
            if launcher.poll() is not None or time.monotonic() - started > 120:
                raise SystemExit(f"the stack did not become healthy (launcher exit {launcher.returncode})")
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        if settle is not None:
            time.sleep(settle)
            for process in tree(psutil.Process(launcher.pid)):
                memory = process.memory_full_info()
                rows.append(
                    {
                        "process": name_of(process),
                        "pid": process.pid,
                        "pss_mb": round(memory.pss / 2**20, 1),
                        "rss_mb": round(memory.rss / 2**20, 1),
                    }
                )
        stopping = time.monotonic()
        processes = tree(psutil.Process(launcher.pid))
        launcher.send_signal(signal.SIGINT)
        wait_until_stopped(processes, timeout=120)
        stop_s = time.monotonic() - stopping
    finally:
        if launcher.poll() is None:
            launcher.kill()
    result: dict[str, object] = {"ready_s": round(ready_s, 2), "stop_s": round(stop_s, 2)}
    if rows:
        result.update(
            processes=rows,
            pss_mb_total=round(sum(float(str(row["pss_mb"])) for row in rows), 1),
            rss_mb_total=round(sum(float(str(row["rss_mb"])) for row in rows), 1),
        )
    return result


def stack(database: Database, *, pending: int, settle: float) -> dict[str, object]:
    """The `stack` scenario: a first start on a new database, `pending` far-future messages
    loaded, a restart measured with them (memory `settle` s after it), the stop."""
    from bench.scenarios import FAR_FUTURE

    database.create()
    try:
        # The same settings both times (REDIS_URL where nothing answers): a restart changes nothing.
        ports = {"port": free_port(), "redis_port": free_port()}
        first = run_once(database, settle=None, **ports)  # migrates a new database, collects
        # A second apart, in 2099: nothing for beat to move, as in the pending stage.
        database.insert_messages(
            (f"pending-{i}", FAR_FUTURE + timedelta(seconds=i), "http://127.0.0.1:9/never") for i in range(pending)
        )
        again = run_once(database, settle=settle, **ports)  # a restart: nothing to prepare
    finally:
        database.drop()
    return {
        "scenario": "stack",
        "profile": os.environ.get("SERVICE_PROFILE") or "small",
        "pending": pending,
        "first_start_ready_s": first["ready_s"],
        "first_stop_s": first["stop_s"],
        "restart_ready_s": again["ready_s"],
        "restart_stop_s": again["stop_s"],
        "pss_mb_total": again.get("pss_mb_total"),
        "rss_mb_total": again.get("rss_mb_total"),
        "processes": again.get("processes"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stack_memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--pending", type=int, default=10_000, help="far-future messages during the restart")
    parser.add_argument("--postgres", metavar="URL")
    args = parser.parse_args()
    database: Database
    if args.postgres:
        database = PostgresDatabase(args.postgres)
    else:
        database = SQLiteDatabase(Path(tempfile.mkdtemp(prefix="stack-memory-")) / "db.sqlite3")
    result = stack(database, pending=args.pending, settle=args.settle)
    for row in result.pop("processes") or []:  # type: ignore[attr-defined]
        print(json.dumps(row))  # noqa: T201
    print(json.dumps(result))  # noqa: T201


if __name__ == "__main__":
    main()
