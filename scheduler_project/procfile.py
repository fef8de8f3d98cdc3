"""The Procfile's processes as `make run` and the benchmark start them.

One Celery worker process runs one core's worth of Python (its threads share the GIL), so the
worker line runs once per core: WORKER_PROCESSES copies, each with its own node name.
"""

from __future__ import annotations

import os
from pathlib import Path

from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parent.parent


def worker_process_count() -> int:
    return int(os.environ.get("WORKER_PROCESSES") or os.cpu_count() or 1)


def procfile_processes(procfile: Path = ROOT / "Procfile") -> dict[str, tuple[str, dict[str, str]]]:
    """Name → (command, extra environment); the worker line becomes worker.1 … worker.N."""
    processes: dict[str, tuple[str, dict[str, str]]] = {}
    for name, command in parse_procfile(procfile.read_text()).processes.items():
        if name != "worker":
            processes[name] = (command, {})
            continue
        for index in range(1, worker_process_count() + 1):
            processes[f"worker.{index}"] = (command, {"WORKER_NAME": f"worker{index}"})
    return processes
