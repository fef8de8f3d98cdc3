"""What `make run`'s launcher starts, worked out where Django is loaded (manage.py prepare_run),
so that the launcher itself never loads it: honcho keeps a fork of the launcher beside each
process it starts, and a launcher holding Django made each of those forks cost 20 MB of PSS."""

from __future__ import annotations

import socket
from typing import Any

from django.conf import settings

from messages.delivery_engine import longest_delivery_seconds
from scheduler_project.embedded_redis import redis_answers, redis_server_command
from scheduler_project.procfile import ROOT, procfile_processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_plan() -> dict[str, Any]:
    """The processes (name → command, extra environment), the Redis to start when none answers
    at REDIS_URL, how long a stop may take, and the addresses the banner shows."""
    redis = None
    if not redis_answers(settings.REDIS_URL):
        port = free_port()
        directory = ROOT / "var" / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        redis = {"url": f"redis://127.0.0.1:{port}/0", "command": redis_server_command(port=port, directory=str(directory))}
    return {
        "processes": {name: {"command": command, "env": env} for name, (command, env) in procfile_processes().items()},
        "redis": redis,
        "configured_redis_url": settings.REDIS_URL,
        # On Ctrl-C honcho sends SIGTERM, then SIGKILL after KILL_WAIT: a worker needs as long as
        # its longest call and record to stop without a duplicate. It stops at once when idle.
        "kill_wait_seconds": longest_delivery_seconds() + 10,
        "base_url": f"http://{settings.API_HOST}:{settings.API_PORT}",
    }
