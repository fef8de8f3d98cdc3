"""The Celery command lines, built here once, and the Procfile's processes as `make run` and the
benchmark start them.

The Procfile is `procfile_text()` written out (`python -m scheduler_project.procfile > Procfile`);
docker-compose.yml spells out the same workers. Neither can import Python, so
tests/test_celery_configuration.py checks both against this module. The pool is celeryconfig's
`worker_pool`, on no command line.

Two layouts (SERVICE_PROFILE):
- small, `make run`'s default: the web server and one Celery process that consumes both queues
  and runs beat in a thread of its own (scheduler_project/celery.py). The least memory: a small VPS.
- scaled, the Procfile as written: one delivery worker per core (one Celery process runs one
  core's worth of Python, its threads sharing the GIL; WORKER_PROCESSES copies, each with its
  own node name), a maintenance worker whose threads never wait behind deliveries for room in
  the byte budget, and beat on its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from honcho.environ import parse_procfile

from messages.task_names import DELIVERY_QUEUE, MAINTENANCE_QUEUE

ROOT = Path(__file__).resolve().parent.parent

CELERY = ("celery", "-A", "scheduler_project")
# Threads per delivery worker process: each claims one task's messages and hands them over.
DELIVERY_WORKER_THREADS = 16
# In the Procfile and docker-compose.yml, which both expand ${NAME:-default}.
DELIVERY_WORKER_THREADS_FROM_ENV = f"${{WORKER_CONCURRENCY:-{DELIVERY_WORKER_THREADS}}}"
# Beat's ticks and the hourly prune: two at once at most.
MAINTENANCE_WORKER_THREADS = 2
LOG_LEVEL_FROM_ENV = "${LOG_LEVEL:-INFO}"
BEAT_SCHEDULE_FILE = "var/celerybeat-schedule"
# Mingle asks every other worker for its revoked tasks at start, and waits a second for answers.
# No guarantee rests on a revoke (a cancel is the row's state, and a worker claims a message only
# while it is still scheduled): a worker started after a revoke, Flower's or DELETE's, that does
# not know of it finds the row cancelled and calls nobody. So mingle only delays a start.
WITHOUT_MINGLE = "--without-mingle"

SMALL_PROFILE = "small"
SCALED_PROFILE = "scaled"
PROFILES = (SMALL_PROFILE, SCALED_PROFILE)


def service_profile() -> str:
    profile = os.environ.get("SERVICE_PROFILE") or SMALL_PROFILE
    if profile not in PROFILES:
        raise ValueError(f"SERVICE_PROFILE must be one of {', '.join(PROFILES)}, not {profile!r}")
    return profile


def delivery_worker_options(threads: int | str = DELIVERY_WORKER_THREADS) -> list[str]:
    """What makes a `celery worker` a delivery worker: its queue and its threads."""
    return ["-Q", DELIVERY_QUEUE, "-c", str(threads), WITHOUT_MINGLE]


def maintenance_worker_options() -> list[str]:
    """What makes a `celery worker` the consumer of beat's ticks and the prune."""
    return ["-Q", MAINTENANCE_QUEUE, "-c", str(MAINTENANCE_WORKER_THREADS), WITHOUT_MINGLE]


def procfile_commands() -> dict[str, list[str]]:
    """The Procfile's processes, each as its words (shell variables left to the shell)."""
    return {
        "web": ["python", "-m", "scheduler_project.web_server"],
        "worker": [
            *CELERY,
            "worker",
            "-n",
            "${WORKER_NAME:-worker}@%h",
            *delivery_worker_options(DELIVERY_WORKER_THREADS_FROM_ENV),
            "-l",
            LOG_LEVEL_FROM_ENV,
        ],
        "maintenance": [
            *CELERY,
            "worker",
            "-n",
            "maintenance@%h",
            *maintenance_worker_options(),
            "-l",
            LOG_LEVEL_FROM_ENV,
        ],
        "beat": [*CELERY, "beat", "-l", LOG_LEVEL_FROM_ENV, "-s", BEAT_SCHEDULE_FILE],
    }


def small_worker_command() -> list[str]:
    """The small profile's one Celery process: deliveries and beat's ticks, beat in a thread."""
    return [
        *CELERY,
        "worker",
        "-n",
        "worker@%h",
        "-Q",
        f"{DELIVERY_QUEUE},{MAINTENANCE_QUEUE}",
        "-c",
        DELIVERY_WORKER_THREADS_FROM_ENV,
        "--beat-thread",
        "-s",
        BEAT_SCHEDULE_FILE,
        WITHOUT_MINGLE,
        "-l",
        LOG_LEVEL_FROM_ENV,
    ]


def procfile_text() -> str:
    """What the Procfile holds; joined with spaces, unquoted, so the shell expands ${…}."""
    return "".join(f"{name}: {' '.join(words)}\n" for name, words in procfile_commands().items())


def worker_process_count() -> int:
    return int(os.environ.get("WORKER_PROCESSES") or os.cpu_count() or 1)


def procfile_processes(procfile: Path = ROOT / "Procfile", profile: str | None = None) -> dict[str, tuple[str, dict[str, str]]]:
    """Name → (command, extra environment) for the profile (default: SERVICE_PROFILE's): small
    is the Procfile's web line and small_worker_command(); scaled is the Procfile, its worker
    line become worker.1 … worker.N."""
    lines = parse_procfile(procfile.read_text()).processes
    if (profile or service_profile()) == SMALL_PROFILE:
        return {"web": (lines["web"], {}), "worker": (" ".join(small_worker_command()), {})}
    processes: dict[str, tuple[str, dict[str, str]]] = {}
    for name, command in lines.items():
        if name != "worker":
            processes[name] = (command, {})
            continue
        for index in range(1, worker_process_count() + 1):
            processes[f"worker.{index}"] = (command, {"WORKER_NAME": f"worker{index}"})
    return processes


if __name__ == "__main__":
    sys.stdout.write(procfile_text())
