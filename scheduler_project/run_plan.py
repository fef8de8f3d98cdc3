"""What `make run`'s launcher starts, worked out where Django is loaded (manage.py prepare_run),
so that the launcher itself never loads it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from messages.delivery_engine import longest_delivery_seconds
from messages.models import API_TOKEN_KEY_ID, ApiKey
from scheduler_project.procfile import procfile_processes


def run_plan() -> dict[str, Any]:
    """The processes (name → command, extra environment), the Redis URL configured (whether one
    answers there is decided at each start: scripts/prepared_start.py), how long a stop may take,
    and what the banner shows."""
    return {
        "processes": {name: {"command": command, "env": env} for name, (command, env) in procfile_processes().items()},
        "configured_redis_url": settings.REDIS_URL,
        # On Ctrl-C the launcher sends SIGTERM, then SIGKILL after this: a worker needs as long
        # as its longest call and record to stop without a duplicate. It stops at once when idle.
        "kill_wait_seconds": longest_delivery_seconds() + 10,
        "base_url": f"http://{settings.API_HOST}:{settings.API_PORT}",
        "profile": settings.SERVICE_PROFILE,
        "web_workers": settings.WEB_CONCURRENCY,
    }


def database_description() -> dict[str, Any]:
    """Where the database is, for a start that reads django_migrations without Django: the file,
    or what psycopg is given (sslmode, options such as a search_path included), never the
    password, which is the environment's at each start."""
    description: dict[str, Any] = {"vendor": connection.vendor, "name": str(connection.settings_dict["NAME"])}
    if connection.vendor == "postgresql":
        # Less what is not a plain value: the adapters and cursor class Django passes.
        params = {
            name: value
            for name, value in connection.get_connection_params().items()
            if name not in {"password", "context", "cursor_factory", "prepare_threshold"}
        }
        plain = all(isinstance(value, str | int | float | bool) for value in params.values())
        description["connect"] = params if plain else None  # None: no quick check, prepare_run each time
    return description


def code_migrations() -> list[tuple[str, str]]:
    """Every migration the code has: a database with all of them recorded needs no migrate."""
    return sorted(MigrationLoader(connection, ignore_no_migrations=True).graph.nodes)


def required_rows() -> list[tuple[str, str, object]]:
    """Rows migrate's post_migrate handlers put back (a flushed database lacks them) as
    (table, column, value)."""
    return [(ApiKey._meta.db_table, str(ApiKey._meta.pk.column), API_TOKEN_KEY_ID)]
