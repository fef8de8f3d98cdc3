"""`make run`: migrate, then web, worker and beat in the foreground until Ctrl-C.

Uses the embedded defaults: the SQLite file, and a Redis of its own when none answers at
REDIS_URL. On the first start it writes a .env with a random API token and secret key.
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_first_env_file(env_file: Path = ROOT / ".env") -> str | None:
    """Returns the new API token when .env was created now. The file is created 0600, never
    readable by others even for a moment, and never replaces one that exists."""
    if os.environ.get("API_TOKEN"):
        return None
    try:
        descriptor = os.open(env_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return None
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as file:
        file.write(
            "# Written by `make run` on first start; see .env.example for every setting.\n"
            f"API_TOKEN={token}\nSECRET_KEY={secrets.token_urlsafe(50)}\n"
            f"FLOWER_BASIC_AUTH=ops:{secrets.token_urlsafe(16)}\n"
        )
    return token


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    new_token = write_first_env_file()
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    import django
    from django.conf import settings

    django.setup()
    from django.core.management import call_command
    from honcho.manager import Manager

    from scheduler_project.embedded_redis import redis_answers, redis_server_command
    from scheduler_project.procfile import procfile_processes

    call_command("migrate", interactive=False, verbosity=1)
    call_command("collectstatic", interactive=False, verbosity=0)

    import honcho.manager

    from messages.delivery_engine import longest_delivery_seconds

    # On Ctrl-C honcho sends SIGTERM, then SIGKILL after KILL_WAIT (5 s): a worker needs as long
    # as its longest call and record to stop without a duplicate. It stops at once when idle.
    honcho.manager.KILL_WAIT = longest_delivery_seconds() + 10
    manager = Manager()
    # The Procfile's commands (granian, celery) come from this virtualenv.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}
    if not redis_answers(settings.REDIS_URL):
        port = free_port()
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        (ROOT / "var" / "redis").mkdir(parents=True, exist_ok=True)
        redis_command = redis_server_command(port=port, directory=str(ROOT / "var" / "redis"))
        manager.add_process("redis", shlex.join(redis_command), env=env, cwd=str(ROOT))
        print(f"No Redis answered at {settings.REDIS_URL}: starting one of its own on 127.0.0.1:{port}")
    for name, (command, extra_env) in procfile_processes().items():
        manager.add_process(name, command, env={**env, **extra_env}, cwd=str(ROOT))
    # Flower can revoke tasks and shows their arguments: it never runs without a login.
    flower_port = os.environ.get("FLOWER_PORT", "5555")
    if os.environ.get("FLOWER_BASIC_AUTH"):
        command = f"celery -A scheduler_project flower --address=127.0.0.1 --port={flower_port}"
        manager.add_process("flower", command, env=env, cwd=str(ROOT))

    base = f"http://{settings.API_HOST}:{settings.API_PORT}"
    print(f"\n  API     {base}/messages   (Authorization: Bearer <API_TOKEN from .env>)")
    print(f"  Health  {base}/health")
    print(f"  Admin   {base}/admin/   (create a user: .venv/bin/python manage.py createsuperuser)")
    print(f"  Docs    {base}/docs")
    if os.environ.get("FLOWER_BASIC_AUTH"):
        print(f"  Flower  http://127.0.0.1:{flower_port}/   (FLOWER_BASIC_AUTH from .env)\n")
    else:
        print("  Flower  not started: set FLOWER_BASIC_AUTH=user:<a long random password> in .env\n")
    if new_token:
        print(f"  Wrote .env with a new API token: {new_token}\n")
    manager.loop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
