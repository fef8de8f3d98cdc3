"""CPU per POST /messages in the Django app alone: no HTTP server, no client, no other process.

    .venv/bin/python -m bench.create_in_process [N]

Migrates a throwaway SQLite file, then calls the WSGI application directly with N creates
(default 3,000) of far-future messages, three times after a warm-up, and prints this process's
CPU time per create for each run and their median. CPU time, not wall time: it holds up when
something else shares the cores, so two commits can be compared on a busy machine.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.service import ROOT

TOKEN = "bench-token-" + "x" * 20


def _write(data: bytes) -> None:
    """The write() that WSGI's start_response returns: Django never calls it."""


def post(application: Callable, path: str, body: bytes, *, what: str) -> None:
    """One POST through the WSGI application, as a server would make it; raises unless 200."""
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json", "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {TOKEN}", "REMOTE_ADDR": "127.0.0.1",
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Callable[[bytes], object]:
        statuses.append(status)
        return _write

    response = application(environ, start_response)
    b"".join(response)
    response.close()  # request_finished, as a server would send it
    if not statuses[0].startswith("200"):
        raise RuntimeError(f"{what}: {statuses[0]}")


def application_on_a_fresh_database(prefix: str) -> Callable:
    """Django set up on a throwaway SQLite file, migrated; its WSGI application."""
    database = Path(tempfile.mkdtemp(prefix=prefix)) / "db.sqlite3"
    os.environ.update(DJANGO_SETTINGS_MODULE="scheduler_project.settings", READ_DOT_ENV="false",
                      API_TOKEN=TOKEN, SECRET_KEY="bench-" * 10, DATABASE_URL=f"sqlite:///{database}",
                      LOG_LEVEL="WARNING", API_RATE_LIMIT="", WEBHOOK_BLOCK_PRIVATE_NETWORKS="false")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from scheduler_project.wsgi import application

    call_command("migrate", verbosity=0)
    return application


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    application = application_on_a_fresh_database("create-in-process-")

    def create(message_id: str) -> None:
        body = json.dumps({"id": message_id, "scheduleTo": "2099-01-01T00:00:00Z",
                           "webhookUrl": "http://127.0.0.1:9/hook", "payload": {"invoice": 42}}).encode()
        post(application, "/messages", body, what=message_id)

    for number in range(300):
        create(f"warm-{number}")
    runs = []
    for run in range(3):
        started = time.process_time()
        for number in range(n):
            create(f"run{run}-{number}")
        runs.append(1000 * (time.process_time() - started) / n)
    print(f"ms CPU per create: {', '.join(f'{run:.3f}' for run in runs)}; median {statistics.median(runs):.3f}")  # noqa: T201


if __name__ == "__main__":
    main()
