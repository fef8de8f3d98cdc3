"""CPU per message of POST /messages/batch in the Django app alone (as bench.create_in_process).

    .venv/bin/python -m bench.batch_in_process [BATCHES] [SIZE] [--profile FILE]

Migrates a throwaway SQLite file, then calls the WSGI application directly with BATCHES batches
(default 30) of SIZE far-future messages each (default 1,000), three times after a warm-up, and
prints this process's CPU time per message for each run and their median, and the rate one core
would reach at that cost. With --profile, cProfile's stats of one more run go to FILE.
"""

from __future__ import annotations

import cProfile
import json
import statistics
import sys
import time

from bench.create_in_process import application_on_a_fresh_database, post


def main() -> None:
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    profile_to = sys.argv[sys.argv.index("--profile") + 1] if "--profile" in sys.argv else None
    if profile_to:
        args.remove(profile_to)
    batches = int(args[0]) if args else 30
    size = int(args[1]) if len(args) > 1 else 1000
    application = application_on_a_fresh_database("batch-in-process-")

    def send(name: str) -> None:
        messages = [{"id": f"{name}-{i}", "scheduleTo": "2099-01-01T00:00:00Z", "webhookUrl": "http://127.0.0.1:9/hook",
                     "payload": {"invoice": i}} for i in range(size)]
        post(application, "/messages/batch", json.dumps({"messages": messages}).encode(), what=name)

    for number in range(3):
        send(f"warm-{number}")
    runs = []
    for run in range(3):
        started = time.process_time()
        for number in range(batches):
            send(f"run{run}-{number}")
        runs.append(1e6 * (time.process_time() - started) / (batches * size))
    median = statistics.median(runs)
    print(f"µs CPU per message in batches of {size}: {', '.join(f'{run:.1f}' for run in runs)}; "  # noqa: T201
          f"median {median:.1f} (one core: {1e6 / median:,.0f} messages/s)")
    if profile_to:
        cProfile.runctx("for number in range(batches): send(f'profiled-{number}')", globals(), locals(), profile_to)


if __name__ == "__main__":
    main()
