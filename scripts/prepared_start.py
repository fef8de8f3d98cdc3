"""A start that needs no `manage.py prepare_run`: when nothing it depends on has changed since it
last ran, the plan it wrote is used again, without loading Django (which alone takes most of a
second, and collectstatic two more: docs/benchmarks.md, issue 14).

prepare_run leaves a stamp (var/prepared.json, 0600): a fingerprint of what it depended on, the
plan it wrote, the database it migrated and every migration the code has. A later start uses the
plan again only when
- the fingerprint is the same: the environment (.env included), the number of CPUs (the scaled
  profile starts a worker per core), the code and migrations by name, size and modification
  time, and the installed packages by name (a dist-info's name carries its version);
- the collected static files are still there;
- the database itself has every one of those migrations recorded (it may have been replaced,
  restored or rolled back since).
Anything else, or any doubt (an unreadable stamp, a database that does not answer), runs
prepare_run as before. Then the Redis to start, if none answers, is decided afresh.

    python -m scripts.prepared_start --plan FILE   # FILE written, by prepare_run when needed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAMP_PATH = ROOT / "var" / "prepared.json"

# Set by shells, terminals and make; none changes what the service does.
VOLATILE_VARIABLES = frozenset(
    {"_", "OLDPWD", "PWD", "SHLVL", "COLUMNS", "LINES", "TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION",
     "TERM_SESSION_ID", "COLORTERM", "TMUX", "TMUX_PANE", "STY", "WINDOW", "WINDOWID", "DISPLAY",
     "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK", "XDG_SESSION_ID", "XDG_VTNR",
     "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR", "LS_COLORS", "PS1"}
)  # fmt: skip
# What prepare_run's outcome depends on besides the environment: the code that works out the
# plan and the settings, the migrations, and the installed packages (their static files too).
WATCHED_DIRECTORIES = ("scheduler_project", "messages", "scripts")


def fingerprint(environ: Mapping[str, str], root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(environ.items()):
        if name not in VOLATILE_VARIABLES:
            digest.update(f"{name}={value}\0".encode())
    for path in _watched_files(root):
        status = path.stat()
        digest.update(f"{path.relative_to(root)}:{status.st_size}:{status.st_mtime_ns}\0".encode())
    for entry in sorted(os.listdir(_site_packages())):
        digest.update(f"{entry}\0".encode())
    digest.update(f"cpus={os.cpu_count()}".encode())
    return digest.hexdigest()


def _watched_files(root: Path) -> Iterable[Path]:
    yield from sorted(path for directory in WATCHED_DIRECTORIES for path in (root / directory).rglob("*.py"))
    yield from (root / name for name in ("Procfile", "celeryconfig.py", "manage.py") if (root / name).exists())


def _site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def write_stamp(
    *,
    fingerprint_value: str,
    plan: dict[str, Any],
    database: dict[str, Any],
    migrations: list[tuple[str, str]],
    required_rows: list[tuple[str, str, object]],
    static_manifest: str,
) -> None:
    """prepare_run's last step, once it has migrated and collected. Private: the plan carries
    the Redis URL, which may hold its password."""
    STAMP_PATH.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {
        "fingerprint": fingerprint_value,
        "plan": plan,
        "database": database,
        "migrations": sorted([app, name] for app, name in migrations),
        "required_rows": [list(row) for row in required_rows],
        "static_manifest": static_manifest,
    }
    scratch = STAMP_PATH.with_suffix(".tmp")
    descriptor = os.open(scratch, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(record, file)
    os.replace(scratch, STAMP_PATH)


def forget_stamp() -> None:
    STAMP_PATH.unlink(missing_ok=True)


def reusable_plan(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The stamp's plan when nothing has changed since it was written, else None."""
    try:
        stamp = json.loads(STAMP_PATH.read_text())
        if stamp["fingerprint"] != fingerprint(environ) or not Path(stamp["static_manifest"]).exists():
            return None
        applied = recorded_migrations(stamp["database"], stamp["required_rows"], environ)
    except Exception:  # noqa: BLE001 - any doubt means prepare_run, which says what is wrong
        return None
    if not {(app, name) for app, name in stamp["migrations"]} <= applied:
        return None
    return dict(stamp["plan"])


def recorded_migrations(
    database: Mapping[str, Any], required_rows: Iterable[list[Any]], environ: Mapping[str, str]
) -> set[tuple[str, str]]:
    """django_migrations' rows, read without Django: the migrations the database has; none when
    a row that migrate puts back (required_rows) is missing."""
    with _connect(database, environ) as connection:
        cursor = connection.cursor()
        placeholder = "?" if database["vendor"] == "sqlite" else "%s"
        for table, column, value in required_rows:
            cursor.execute(f'SELECT 1 FROM "{table}" WHERE "{column}" = {placeholder}', [value])  # noqa: S608 - names from the stamp prepare_run wrote
            if cursor.fetchone() is None:
                return set()
        cursor.execute("SELECT app, name FROM django_migrations")
        return {(str(app), str(name)) for app, name in cursor.fetchall()}


def _connect(database: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    if database["vendor"] == "sqlite":
        import sqlite3
        from contextlib import closing

        # Read-only, and never created: a file deleted since means prepare_run.
        return closing(sqlite3.connect(f"{Path(database['name']).as_uri()}?mode=ro", uri=True))
    if database["vendor"] == "postgresql" and database.get("connect"):
        import environ as django_environ
        import psycopg

        # The password is the environment's (the same, or the fingerprint would differ), never the stamp's.
        password = django_environ.Env.db_url_config(environ["DATABASE_URL"]).get("PASSWORD") or None
        return psycopg.connect(**database["connect"], password=password)
    raise ValueError(f"no quick check for this {database['vendor']} database: prepare_run every time")


def with_redis(plan: dict[str, Any]) -> dict[str, Any]:
    """The Redis to start, when none answers at the configured URL: decided at each start."""
    from scripts.embedded_redis import free_port, redis_answers, redis_server_command

    redis = None
    if not redis_answers(plan["configured_redis_url"]):
        port = free_port()
        directory = ROOT / "var" / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        redis = {"url": f"redis://127.0.0.1:{port}/0", "command": redis_server_command(port=port, directory=str(directory))}
    return {**plan, "redis": redis}


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.prepared_start")
    parser.add_argument("--plan", required=True, type=Path)
    plan_file = parser.parse_args(arguments).plan
    plan = reusable_plan(os.environ)
    if plan is None:
        # This process becomes prepare_run, which loads Django, and tells it what it found.
        command = ["manage.py", "prepare_run", "--plan", str(plan_file), "--fingerprint", fingerprint(os.environ)]
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, *command])  # noqa: S606 - this interpreter, no shell
    plan_file.write_text(json.dumps(with_redis(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
