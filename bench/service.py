"""Starts the service the way `make run` does, on a throwaway database and a private Redis.

The web, worker and beat commands are read from the Procfile (what `make run` hands to
honcho), so the benchmark measures exactly what the README starts; only beat's schedule file
is moved into the run directory, to leave the repository's var/ alone. Every process runs in
its own session, so that stopping it can also sweep its children (the web server's workers).
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import psutil
import requests

from scripts.embedded_redis import free_port, redis_answers, redis_server_command
from scheduler_project.procfile import BEAT_SCHEDULE_FILE, procfile_processes

if TYPE_CHECKING:
    import psycopg

ROOT = Path(__file__).resolve().parent.parent

# (message_id, due_at, webhook_url): what a directly loaded message needs; the rest is fixed.
Row = tuple[str, datetime, str]


def wait_until(condition: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str) -> float:
    """Polls until `condition()` is true; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


# --- Databases -----------------------------------------------------------------------------

MESSAGE_COLUMNS = (
    "message_id, status, schedule_to, due_at, webhook_url, payload_json, headers_sealed, max_attempts, "
    "timeout_seconds, attempt_count, attempt_count_at_resend, last_status_code, last_error, "
    "created_at, enqueued_at, claimed_at, claim_token, finished_at, payload_bytes, delivery_id, owner_id"
)
COLUMN_COUNT = MESSAGE_COLUMNS.count(",") + 1
# messages.models.API_TOKEN_KEY_ID (not imported: this runs outside Django). The bench's
# requests carry API_TOKEN, so the rows it loads are that key's.
API_TOKEN_KEY_ID = 0


def bench_delivery_id(message_id: str) -> str:
    """Unique as the service's own (`msg_` + a ULID) are; never one of theirs."""
    return f"msg_bench_{message_id}"


class SQLiteDatabase:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def create(self) -> None:
        self.path.unlink(missing_ok=True)

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def server_processes(self) -> list[psutil.Process]:
        return []

    def insert_messages(self, rows: Iterable[Row]) -> int:
        """One executemany INSERT in one transaction, as Django stores the columns."""
        created = _sqlite_datetime(datetime.now(UTC))
        values = (
            (message_id, "scheduled", _sqlite_datetime(due_at), _sqlite_datetime(due_at), url, "{}", "",
             None, None, 0, 0, None, "", created, None, None, None, None, 2, bench_delivery_id(message_id),
             API_TOKEN_KEY_ID)
            for message_id, due_at, url in rows
        )
        with sqlite3.connect(self.path, timeout=30) as connection:
            cursor = connection.executemany(
                f"INSERT INTO scheduler_message ({MESSAGE_COLUMNS}) VALUES ({', '.join('?' * COLUMN_COUNT)})", values
            )
            return cursor.rowcount


def _sqlite_datetime(moment: datetime) -> str:
    # Django keeps datetimes in SQLite as naive UTC text, e.g. "2099-01-01 00:00:00.000001".
    return str(moment.astimezone(UTC).replace(tzinfo=None))


class PostgresDatabase:
    """A database of its own (`bench_scheduler`) on the given server, created and dropped here."""

    kind = "postgres"

    def __init__(self, admin_url: str, name: str = "bench_scheduler") -> None:
        self.admin_url = admin_url
        self.name = name
        parts = urlsplit(admin_url)
        self.url = urlunsplit(parts._replace(path=f"/{name}"))

    def _admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True)

    def create(self) -> None:
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def server_processes(self) -> list[psutil.Process]:
        """The server's backends for this database: their titles read `postgres: ... <db> ...`
        (backends that exit between two readings take their CPU with them: a lower bound)."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            title = " ".join(process.info["cmdline"] or [])
            if title.startswith("postgres:") and f" {self.name} " in f"{title} ":
                found.append(process)
        return found

    def insert_messages(self, rows: Iterable[Row]) -> int:
        import psycopg

        created = datetime.now(UTC)
        values = (
            (message_id, "scheduled", due_at, due_at, url, "{}", "", None, None, 0, 0, None, "",
             created, None, None, None, None, 2, bench_delivery_id(message_id), API_TOKEN_KEY_ID)
            for message_id, due_at, url in rows
        )
        placeholders = ", ".join("%s" for _ in range(COLUMN_COUNT))
        with psycopg.connect(self.url) as connection, connection.cursor() as cursor:
            # One transaction (psycopg commits when the block ends); executemany pipelines.
            cursor.executemany(f"INSERT INTO scheduler_message ({MESSAGE_COLUMNS}) VALUES ({placeholders})", values)
            inserted = cursor.rowcount
        with psycopg.connect(self.url, autocommit=True) as connection:
            # What autovacuum does within its next round (a minute at most) after such a load:
            # without it the planner knows nothing of these rows, and neither would a service
            # that has accumulated them over days.
            connection.execute("VACUUM ANALYZE scheduler_message")
        return inserted


Database = SQLiteDatabase | PostgresDatabase


# --- Processes ------------------------------------------------------------------------------

class Service:
    """Redis, then the processes `make run` starts (scheduler_project/procfile.py)."""

    def __init__(self, *, database: Database, run_dir: Path, log_level: str = "INFO") -> None:
        self.database = database
        self.run_dir = run_dir
        self.token = secrets.token_urlsafe(24)
        self.port = free_port()
        self.redis_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        venv_bin = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
            "READ_DOT_ENV": "false",
            "API_TOKEN": self.token,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": database.url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            # make run's default is INFO: a line per delivery and per request (granian's access log).
            "LOG_LEVEL": log_level,
            # The receiver is on 127.0.0.1 and 16 clients send as fast as they can: neither a
            # target policy nor a rate limit may stand in the way, whatever the defaults become.
            "WEBHOOK_BLOCK_PRIVATE_NETWORKS": "false",
            "API_RATE_LIMIT": "",
            # Its readiness polls hit /health far more often than a probe does.
            "API_PUBLIC_RATE_LIMIT": "",
        }
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.headers["Authorization"] = f"Bearer {self.token}"

    def migrate(self) -> float:
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=ROOT, env=self.env, check=True, stdout=self._log("migrate"), stderr=subprocess.STDOUT,
        )
        return time.monotonic() - started

    def start(self) -> None:
        redis_dir = self.run_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        self._spawn("redis", shlex.join(redis_server_command(port=self.redis_port, directory=str(redis_dir))))
        wait_until(lambda: redis_answers(self.env["REDIS_URL"]), timeout=20, what="redis-server")
        for name, (command, extra_env) in self.procfile_commands().items():
            self._spawn(name, command, extra_env)

    def procfile_commands(self) -> dict[str, tuple[str, dict[str, str]]]:
        """What `make run` starts (SERVICE_PROFILE's processes), beat's schedule file in the run's
        directory: beat's own line (scaled) or the worker's that runs beat inside it (small)."""
        commands = procfile_processes()
        with_beat = [name for name, (command, _) in commands.items() if BEAT_SCHEDULE_FILE in command]
        if len(with_beat) != 1:
            raise RuntimeError(f"not one process names beat's schedule file {BEAT_SCHEDULE_FILE}: {commands}")
        command, env = commands[with_beat[0]]
        commands[with_beat[0]] = (command.replace(BEAT_SCHEDULE_FILE, shlex.quote(str(self.run_dir / "celerybeat-schedule"))), env)
        return commands

    def _spawn(self, name: str, command: str, extra_env: dict[str, str] | None = None) -> None:
        # `exec` so that the pid is the program's own, not a shell's (py-spy and RSS need it).
        self.processes[name] = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"], cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=self._log(name),
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def _named(self, name: str) -> list[subprocess.Popen]:
        """"worker" is every worker process (worker.1, worker.2, …); other names are one process."""
        return [process for key, process in self.processes.items() if key.split(".")[0] == name]

    def _log(self, name: str) -> BinaryIO:
        return open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.run_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def is_ready(self) -> bool:
        """What a client needs: /health answers 200 and the first page of GET /messages answers."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
        try:
            return (
                self._session.get(f"{self.base_url}/health", timeout=5).status_code == 200
                and self._session.get(f"{self.base_url}/messages", timeout=30).status_code == 200
            )
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 120) -> float:
        return wait_until(self.is_ready, timeout=timeout, what="the service to answer /health and /messages")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self._session.get(f"{self.base_url}{path}", timeout=60, **kwargs)

    def pid(self, name: str) -> int:
        """The process, or for "worker" the first worker process (py-spy samples that one)."""
        return self._named(name)[0].pid

    def process_trees(self, name: str) -> list[psutil.Process]:
        """Each process of the name and its children (the web server's master and its workers)."""
        trees = []
        for process in self._named(name):
            root = psutil.Process(process.pid)
            trees += [root, *root.children(recursive=True)]
        return trees

    def web_workers(self) -> int:
        return len(psutil.Process(self.pid("web")).children())

    def rss_bytes(self, name: str) -> int:
        try:
            return sum(p.memory_info().rss for p in self.process_trees(name))
        except psutil.NoSuchProcess:
            return 0

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU of the process and its children so far: a cost per message that
        holds even when other work shares the cores. "db": PostgreSQL's backends serving the
        bench database (SQLite runs inside the service's processes, so 0 there)."""
        try:
            if name == "db":
                processes = self.database.server_processes()
            else:
                processes = self.process_trees(name)
            times = [p.cpu_times() for p in processes]
        except psutil.NoSuchProcess:
            return 0.0
        return sum(t.user + t.system for t in times)

    def stop(self) -> None:
        # Beat first (no new work), redis last (the others talk to it while stopping).
        last = ["beat", "worker", "web", "redis"]
        for name in sorted(self.processes, key=lambda n: last.index(n.split(".")[0]) if n.split(".")[0] in last else -1):
            _stop_process(self.processes[name])
        self.processes.clear()


def _stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        # Its session's group: web workers and anything else it left behind.
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=10)


@contextmanager
def running_service(database: Database, run_dir: Path) -> Iterator[Service]:
    """A started, ready service; stopped whatever happens."""
    service = Service(database=database, run_dir=run_dir)
    try:
        service.start()
        service.wait_ready()
        yield service
    finally:
        service.stop()
