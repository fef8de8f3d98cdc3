"""`make bench`: runs issue 6's scenarios against the real service and prints the results.

    python -m bench                                  # the default set (~10 minutes)
    python -m bench steady --rate 1000 --duration 60 # one scenario, other sizes
    python -m bench pending --pending 1000000        # restart, list and memory at 1M
    python -m bench --postgres postgres://postgres@127.0.0.1:5432/postgres
    python -m bench create burst --profile /tmp/profiles   # with py-spy
    python -m bench large-payloads                   # issue 10: worker memory, 200 x 1 MiB due at once

stdout: one JSON line per scenario, then a markdown table; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from bench import scenarios, stack_memory
from bench.receiver import ReceiverClient
from bench.report import markdown_table
from bench.scenarios import Bench, log
from bench.service import ROOT, Database, PostgresDatabase, Service, SQLiteDatabase, free_port, wait_until

# The live stages share one long-lived service; pending and large-payloads start their own.
LIVE_STAGES = ("create", "batch", "burst", "slow", "steady")
DEFAULT_STAGES = (*LIVE_STAGES, "pending", "stack")
# Not in the default run: it drives the worker to several GB at once (docs/benchmarks.md).
STAGES = (*DEFAULT_STAGES, "large-payloads")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="*", metavar="STAGE", default=list(DEFAULT_STAGES),
                        help=f"any of {', '.join(STAGES)} (default: {', '.join(DEFAULT_STAGES)}); pending gives "
                        "the restart, list and memory lines")
    parser.add_argument("--postgres", metavar="URL", help="run on PostgreSQL: a database bench_scheduler is "
                        "created on this server and dropped afterwards")
    parser.add_argument("--clients", type=int, default=16, help="concurrent API clients (default 16)")
    parser.add_argument("--create-n", type=int, default=5000, help="POSTs in the create scenario")
    parser.add_argument("--create-clients", default="16,64", metavar="N,...",
                        help="a create run at each of these numbers of connections (default 16,64)")
    parser.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL (default INFO, as make run)")
    parser.add_argument("--stack-pending", type=int, default=10_000,
                        help="pending messages when the stack stage restarts `make run`'s launcher (default 10,000)")
    parser.add_argument("--batch-n", type=int, default=60, help="POST /messages/batch requests in the batch scenario")
    parser.add_argument("--batch-size", type=int, default=1000, help="messages per batch (default 1000, the most)")
    parser.add_argument("--batch-clients", type=int, default=4, help="concurrent clients of the batch scenario")
    parser.add_argument("--burst", default="1000,5000,5000:db,50000:db", metavar="N[:db],...",
                        help="burst sizes; ':db' loads them into the database instead of POSTing "
                        "(default 1000,5000,5000:db,50000:db)")
    parser.add_argument("--steady", default="200x30,200x30:db,1000x60:db", metavar="RATExSECONDS[:db],...",
                        help="steady runs (default 200x30,200x30:db,1000x60:db)")
    parser.add_argument("--rate", type=int, help="one steady run at this rate (with --duration)")
    parser.add_argument("--duration", type=int, default=30, help="seconds of the --rate run")
    parser.add_argument("--feed", choices=["api", "db"], default="api",
                        help="how the --rate run's messages arrive: POSTed as they come, or loaded up front")
    parser.add_argument("--slow-n", type=int, default=500)
    parser.add_argument("--slow-delay", type=float, default=0.2, help="receiver delay per call, seconds")
    parser.add_argument("--pending", type=int, default=100_000, help="messages loaded for restart/list/memory")
    parser.add_argument("--settle", type=float, default=12.0,
                        help="seconds after ready before memory is measured (beat's first tick)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="longest wait for deliveries after the last one is due")
    parser.add_argument("--large-n", type=int, default=200, help="messages per large-payloads case")
    parser.add_argument("--large-kinds", default=",".join(scenarios.LARGE_PAYLOAD_KINDS), metavar="KIND,...",
                        help="large-payloads cases, each on a service of its own: small ({\"bench\": id}), "
                        "string ({\"blob\": \"xxx...\"}), list ([{},{},...]) (default: all three)")
    parser.add_argument("--large-bytes", type=int,
                        default=scenarios.PAYLOAD_MAX_BYTES - scenarios.LARGE_PAYLOAD_MARGIN,
                        help="encoded size of the string and list payloads (default: 64 below PAYLOAD_MAX_BYTES's "
                        "default of 1 MiB)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the web (create) and worker (bursts)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, database)")
    args = parser.parse_args()
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}: choose from {', '.join(STAGES)}")
    kinds = set(args.large_kinds.split(",")) - set(scenarios.LARGE_PAYLOAD_KINDS)
    if kinds:
        parser.error(f"unknown --large-kinds {', '.join(sorted(kinds))}: choose from "
                     f"{', '.join(scenarios.LARGE_PAYLOAD_KINDS)}")
    if args.rate:
        args.steady = f"{args.rate}x{args.duration}" + (":db" if args.feed == "db" else "")
    return args


def split_feed(spec: str) -> tuple[str, str]:
    value, _, feed = spec.partition(":")
    return value, feed or "api"


def quiesce(service: Service, *, timeout: float = 60) -> None:
    """Waits until the worker and the web processes are idle, so one scenario's tail does not
    run into the next one's measurement."""
    processes = [*service.process_trees("worker"), *service.process_trees("web")]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            process.cpu_percent()
        time.sleep(1)
        if sum(process.cpu_percent() for process in processes) < 10:
            return


def live_scenarios(args: argparse.Namespace, bench: Bench) -> Iterator[tuple[str, Callable[[], dict[str, object]]]]:
    """(name, callable) for every scenario that runs against the one long-lived service."""
    if "create" in args.stages:
        for clients in (int(n) for n in args.create_clients.split(",")):
            name = "create" if clients == args.clients else f"create{clients}"
            yield name, partial(scenarios.create, bench, n=args.create_n, clients=clients)
    if "batch" in args.stages:
        yield "batch", lambda: scenarios.batch(bench, batches=args.batch_n, size=args.batch_size,
                                               clients=args.batch_clients)
    if "burst" in args.stages:
        for spec in args.burst.split(","):
            size, feed = split_feed(spec)
            yield f"burst{size}", partial(scenarios.burst, bench, n=int(size), feed=feed)
    if "slow" in args.stages:
        yield "slow", lambda: scenarios.burst(bench, n=args.slow_n, delay=args.slow_delay, name="slow")
    if "steady" in args.stages:
        for spec in args.steady.split(","):
            shape, feed = split_feed(spec)
            rate, duration = (int(x) for x in shape.split("x"))
            yield f"steady_{shape}", partial(scenarios.steady, bench, rate=rate, duration=duration, feed=feed)


def large_payloads_case(args: argparse.Namespace, make_database: Callable[[], Database], run_dir: Path, client: ReceiverClient,
                        kind: str) -> dict:
    """Issue 10: one case on a service of its own, so that no case's heap becomes the next one's
    baseline. Both worker processes deliver a few small messages before the case, so that the
    baseline is a worker that has delivered (aiohttp's session, the first claims), not a cold one."""
    database = make_database()
    database.create()
    service = Service(database=database, run_dir=run_dir)
    try:
        service.migrate()
        service.start()
        log(f"large_payloads_{kind}: service ready in {service.wait_ready():.1f} s; warming the workers")
        bench = Bench(service=service, receiver=client, clients=args.clients, drain_timeout=args.drain_timeout)
        scenarios.steady(bench, rate=20, duration=3)  # 60 messages in ~60 groups, over both processes
        quiesce(service)
        return scenarios.large_payloads(bench, kind=kind, n=args.large_n, size=args.large_bytes)
    finally:
        service.stop()
        database.drop()


def _commit() -> str:
    """The code measured: `git describe`, marked -dirty when tracked files were changed."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that every `finally` stops what it started


def main() -> int:
    args = parse_args()
    # SIGTERM (timeout, a CI runner) must stop the service too: its processes run in sessions
    # of their own and would otherwise outlive the benchmark.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="scheduler-bench-"))

    def make_database() -> Database:
        return PostgresDatabase(args.postgres) if args.postgres else SQLiteDatabase(run_dir / "bench.sqlite3")

    results: list[dict] = []

    def emit(line: dict) -> None:
        results.append(line)
        print(json.dumps(line, default=str), flush=True)

    receiver_port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.receiver", "--port", str(receiver_port)], cwd=ROOT)
    client = ReceiverClient(receiver_port)
    try:
        wait_until(client.answers, timeout=20, what="the receiver")
        if any(stage in args.stages for stage in LIVE_STAGES):
            database = make_database()
            database.create()
            service = Service(database=database, run_dir=run_dir, log_level=args.log_level)
            try:
                log(f"migrating {database.kind} database, starting the service (run dir {run_dir})")
                service.migrate()
                service.start()
                log(f"service ready in {service.wait_ready():.1f} s at {service.base_url}")
                bench = Bench(service=service, receiver=client, clients=args.clients,
                              profile_dir=args.profile, drain_timeout=args.drain_timeout)
                for name, run in live_scenarios(args, bench):
                    quiesce(service)
                    log(f"running {name}")
                    try:
                        emit(run())
                    except Exception as error:  # noqa: BLE001 - report it and go on with the others
                        traceback.print_exc()
                        emit({"scenario": name, "error": f"{type(error).__name__}: {error}"})
            finally:
                service.stop()
                database.drop()
        if "pending" in args.stages:
            log(f"running pending ({args.pending:,} messages): restart, list, memory")
            try:
                for line in scenarios.pending(make_database, run_dir, n=args.pending, settle=args.settle):
                    emit(line)
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                emit({"scenario": "restart", "error": f"{type(error).__name__}: {error}"})
        if "stack" in args.stages:
            log(f"running stack: `make run`'s launcher started, restarted with {args.stack_pending:,} pending, stopped")
            try:
                emit(stack_memory.stack(make_database(), pending=args.stack_pending, settle=args.settle))
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                emit({"scenario": "stack", "error": f"{type(error).__name__}: {error}"})
        if "large-payloads" in args.stages:
            for kind in args.large_kinds.split(","):
                log(f"running large_payloads_{kind} ({args.large_n} messages due at one instant)")
                try:
                    emit(large_payloads_case(args, make_database, run_dir, client, kind))
                except Exception as error:  # noqa: BLE001
                    traceback.print_exc()
                    emit({"scenario": f"large_payloads_{kind}", "error": f"{type(error).__name__}: {error}"})
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
        if args.keep:
            log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    print()
    print(markdown_table(results, database="PostgreSQL" if args.postgres else "SQLite (embedded default)",
                         commit=_commit()))
    return 0 if all("error" not in line for line in results) else 1


if __name__ == "__main__":
    sys.exit(main())
