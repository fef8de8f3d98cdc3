"""`make run`: migrate when needed, then SERVICE_PROFILE's processes in the foreground until Ctrl-C.

This launcher never loads Django (scripts/prepared_start.py reuses the last plan when nothing
changed, else manage.py prepare_run migrates and says what to start): it only starts the
processes and stops them (scripts/process_group.py).

Uses the embedded defaults: the SQLite file, and a Redis of its own when none answers at
REDIS_URL. On the first start it writes a .env with a random API token and secret key.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
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
            "# Flower, the Celery monitoring UI, takes ~90 MB of memory: uncomment to have make run start it.\n"
            f"# FLOWER_BASIC_AUTH=ops:{secrets.token_urlsafe(16)}\n"
        )
    return token


def prepare(plan_file: Path) -> int:
    """The plan, in a process of its own: the last one again when nothing has changed, else
    from manage.py prepare_run, which migrates and collects first (scripts/prepared_start.py)."""
    return subprocess.run([sys.executable, "-m", "scripts.prepared_start", "--plan", str(plan_file)], cwd=ROOT).returncode


def profile_summary(plan: dict) -> str:
    web = f"web ({plan['web_workers']} worker{'s' if plan['web_workers'] != 1 else ''}, WEB_CONCURRENCY)"
    if plan["profile"] == "small":
        return (
            f"Profile small (SERVICE_PROFILE): {web} and one Celery worker for deliveries and beat's ticks, "
            "beat in a thread of it.\n  For a bigger host: SERVICE_PROFILE=scaled, a delivery worker per core "
            "(WORKER_PROCESSES), maintenance and beat apart."
        )
    workers = sum(1 for name in plan["processes"] if name.startswith("worker"))
    return f"Profile scaled (SERVICE_PROFILE): {web}, {workers} delivery workers (WORKER_PROCESSES), maintenance, beat."


def main() -> int:
    new_token = write_first_env_file()
    os.chdir(ROOT)
    # .env as the settings read it (the environment wins), for what the children's command lines
    # expand (${WORKER_CONCURRENCY}, ${LOG_LEVEL}) and Flower's login; django-environ loads
    # django.core.exceptions only, not Django.
    import environ

    if environ.Env().bool("READ_DOT_ENV", default=True):
        environ.Env.read_env(ROOT / ".env", overwrite=False)
    # Django is loaded only in the child (when it runs prepare_run), which exits once it has written the plan.
    with tempfile.TemporaryDirectory() as scratch:
        plan_file = Path(scratch) / "plan.json"
        failed = prepare(plan_file)
        if failed:
            return failed
        plan = json.loads(plan_file.read_text())
    from scripts.process_group import ProcessGroup

    group = ProcessGroup(kill_wait_seconds=plan["kill_wait_seconds"])
    # The Procfile's commands (granian, celery) come from this virtualenv.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}
    if plan["redis"]:
        env["REDIS_URL"] = plan["redis"]["url"]
        group.add("redis", shlex.join(plan["redis"]["command"]), env=env, cwd=str(ROOT), stop_last=True)
        print(f"No Redis answered at {plan['configured_redis_url']}: starting one of its own at {plan['redis']['url']}")
    for name, process in plan["processes"].items():
        group.add(name, process["command"], env={**env, **process["env"]}, cwd=str(ROOT))
    # Flower can revoke tasks and shows their arguments: it never runs without a login.
    flower_port = os.environ.get("FLOWER_PORT", "5555")
    if os.environ.get("FLOWER_BASIC_AUTH"):
        command = f"celery -A scheduler_project flower --address=127.0.0.1 --port={flower_port}"
        group.add("flower", command, env=env, cwd=str(ROOT))

    base = plan["base_url"]
    print(f"\n  {profile_summary(plan)}\n")
    print(f"  API     {base}/messages   (Authorization: Bearer <API_TOKEN from .env>)")
    print(f"  Health  {base}/health")
    print(f"  Admin   {base}/admin/   (create a user: .venv/bin/python manage.py createsuperuser)")
    print(f"  Docs    {base}/docs")
    if os.environ.get("FLOWER_BASIC_AUTH"):
        print(f"  Flower  http://127.0.0.1:{flower_port}/   (FLOWER_BASIC_AUTH from .env)\n")
    else:
        print("  Flower  not started (~90 MB): uncomment FLOWER_BASIC_AUTH in .env, or set it to user:<a long random password>\n")
    if new_token:
        print(f"  Wrote .env with a new API token: {new_token}\n")
    return group.run()


if __name__ == "__main__":
    sys.exit(main())
