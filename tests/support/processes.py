"""Real processes for the end-to-end tests: Redis, Celery workers and beats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import redis

from scheduler_project.procfile import CELERY, delivery_worker_options, maintenance_worker_options
from scripts.embedded_redis import redis_answers, redis_server_command
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
# The test session's directory for logs, schedules and the SQLite files (tests/settings.py makes it).
RUN_DIR = os.environ["SCHEDULER_TEST_RUN_DIR"]


class RedisServer:
    def __init__(self, *, port: int, run_dir: str) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.run_dir = run_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(Path(self.run_dir) / "redis.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(redis_server_command(port=self.port, directory=self.run_dir), stdout=log, stderr=log)
        wait_until(lambda: redis_answers(self.url), timeout=10, what="redis-server")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart_empty(self) -> None:
        """A restart of a Redis that keeps nothing on disk: every queued task is gone."""
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class CeleryProcess:
    """A `celery worker` or `celery beat` started the way the Procfile starts it."""

    def __init__(self, name: str, arguments: list[str], *, env: dict[str, str], run_dir: str) -> None:
        self.name = name
        self.arguments = arguments
        self.env = env
        self.log_path = Path(run_dir) / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self._log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", *CELERY, *self.arguments],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_logged(self, text: str, *, timeout: float) -> None:
        def has_logged() -> bool:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return text.encode() in log.read()

        wait_until(has_logged, timeout=timeout, what=f"{self.name} to log {text!r}")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> None:
        """After a test that killed it."""
        if not self.is_running():
            self.restart()

    def restart(self) -> None:
        self.start()
        self.wait_until_logged("ready." if self.arguments[0] == "worker" else "beat: Starting", timeout=60)

    def kill(self) -> None:
        """SIGKILL: none of the process's shutdown code runs."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, *, grace: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code (-9: killed)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def worker(name: str, *, env: dict[str, str], run_dir: str) -> CeleryProcess:
    """A delivery worker, as the Procfile's worker line starts it."""
    return _celery_worker(name, delivery_worker_options(), env=env, run_dir=run_dir)


def maintenance_worker(name: str, *, env: dict[str, str], run_dir: str) -> CeleryProcess:
    """The consumer of beat's ticks, as the Procfile's maintenance line starts it."""
    return _celery_worker(name, maintenance_worker_options(), env=env, run_dir=run_dir)


def _celery_worker(name: str, options: list[str], *, env: dict[str, str], run_dir: str) -> CeleryProcess:
    return CeleryProcess(
        name,
        ["worker", *options, "-n", f"{name}@%h", "--without-gossip", "-l", "INFO"],
        env=env,
        run_dir=run_dir,
    )


def beat(name: str, *, env: dict[str, str], run_dir: str) -> CeleryProcess:
    return CeleryProcess(name, ["beat", "-l", "INFO", "-s", str(Path(run_dir) / f"{name}-schedule")], env=env, run_dir=run_dir)


def process_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1", **extra}
