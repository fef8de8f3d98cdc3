"""The documented production settings pass Django's deployment checks, bad or guessable secrets
and failing system checks stop every process at start, secrets stay out of logs, and the files
holding them are private from creation."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from standardwebhooks import Webhook

from messages.signing import parse_signing_secrets, signature_headers
from scheduler_project.celery import CHECKS_LEFT_OUT_OF_WORKERS
from scheduler_project.procfile import procfile_processes
from scheduler_project.settings import PrivateSQLiteConnection
from scripts.run_service import write_first_env_file
from tests.factories import make_message
from tests.support import processes
from tests.support.ports import free_port
from tests.support.processes import ROOT


def test_check_deploy_is_clean_with_the_documented_production_settings():
    env = {
        "PATH": "/usr/bin:/bin",
        "READ_DOT_ENV": "false",
        "DEBUG": "false",
        "HTTPS": "true",
        "TRUSTED_PROXY_COUNT": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "API_TOKEN": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "scheduler.example.com",
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        "DATABASE_URL": "sqlite:////tmp/check-deploy.sqlite3",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_web_server_refuses_to_start_without_an_api_token():
    env = {
        "PATH": "/usr/bin:/bin",
        "READ_DOT_ENV": "false",
        "SECRET_KEY": "x" * 50,
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        "DATABASE_URL": "sqlite:////tmp/no-token.sqlite3",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import scheduler_project.wsgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "API_TOKEN is not set" in result.stderr


@pytest.mark.django_db
def test_payloads_and_tokens_never_reach_the_logs(api, receiver, hook_path, caplog):
    from messages import delivery

    caplog.set_level(logging.DEBUG)
    secret_payload = {"card": "4111-1111-1111-1111"}
    api.post(
        "/messages",
        {
            "id": "quiet",
            "scheduleTo": "2020-01-01T00:00:00Z",
            "payload": secret_payload,
            "webhookUrl": receiver.url(hook_path),
            "headers": {"Authorization": "Bearer downstream-secret"},
        },
    )
    api.post(
        "/messages", {"id": "quiet", "scheduleTo": "nonsense", "payload": secret_payload, "webhookUrl": receiver.url(hook_path)}
    )
    message = make_message(message_id="quiet-2", webhook_url=receiver.url(hook_path), payload=secret_payload)
    delivery.deliver_messages([message.pk])

    assert "quiet-2" in caplog.text  # the message id is logged
    for secret in ("4111-1111-1111-1111", "downstream-secret", settings.API_TOKEN):
        assert secret not in caplog.text


def started_alone(process: str, run_dir: Path) -> list[str]:
    """The command line the Procfile starts each process with (no manage.py to run the checks)."""
    return {
        "worker": [
            "-m",
            "celery",
            "-A",
            "scheduler_project",
            "worker",
            "-Q",
            "deliveries",
            "-P",
            "threads",
            "-c",
            "1",
            "-n",
            "refused@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        "beat": ["-m", "celery", "-A", "scheduler_project", "beat", "-s", str(run_dir / "beat-schedule")],
        "web server": ["-m", "scheduler_project.web_server"],
    }[process]


@pytest.mark.parametrize("process", ["worker", "beat", "web server"])
def test_a_process_refuses_to_start_on_settings_that_fail_the_system_checks(process, tmp_path):
    # Given a renew interval the grace cannot hold (scheduler.E004), which manage.py would refuse
    env = processes.process_env(DELIVERY_CLAIM_RENEW_SECONDS="100", API_PORT=str(free_port()), WEB_CONCURRENCY="1")

    # When the process is started on its own
    started = subprocess.run(
        [sys.executable, *started_alone(process, tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    # Then it exits at once, saying why
    output = started.stdout + started.stderr
    assert started.returncode == 1, output
    assert "refusing to start" in output
    assert "scheduler.E004" in output


def test_a_worker_s_start_up_checks_leave_the_web_app_unloaded():
    # What worker_init and beat_init run, in a fresh interpreter as a worker has
    probe = (
        "import sys, django, scheduler_project.celery; django.setup(); "
        "from scheduler_project.celery import refuse_settings_that_fail_system_checks as gate; gate(); "
        "print(sorted(m for m in sys.modules if m.startswith(('scheduler_project.urls', 'rest_framework.serializers', "
        "'rest_framework.views', 'rest_framework.renderers', 'messages.api.'))))"
    )

    shown = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=processes.process_env(), capture_output=True, text=True)

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("tag", "stops"), [("models", True), ("scheduler", True), ("urls", False), ("admin", False), ("templates", False)]
)
def test_leaving_out_the_url_checks_still_stops_on_any_other_check_s_error(monkeypatch, tag, stops):
    from django.core import checks as django_checks

    from messages.checks import exit_on_system_check_errors

    def failing(app_configs: object = None, **kwargs: object) -> list[django_checks.Error]:
        return [django_checks.Error("broken on purpose", id="tests.E001")]

    registry = django_checks.registry.registry
    monkeypatch.setattr(registry, "registered_checks", set(registry.registered_checks))
    registry.register(failing, tag)

    if stops:
        with pytest.raises(SystemExit):
            exit_on_system_check_errors(except_tags=CHECKS_LEFT_OUT_OF_WORKERS)
    else:
        exit_on_system_check_errors(except_tags=CHECKS_LEFT_OUT_OF_WORKERS)


def load_settings(**environment: str) -> subprocess.CompletedProcess[str]:
    """scheduler_project.settings imported in a fresh process, with these settings and no .env."""
    env = {
        "PATH": "/usr/bin:/bin",
        "READ_DOT_ENV": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "sqlite:////tmp/settings-load.sqlite3",
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-c", "import scheduler_project.settings"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


GUESSABLE_SECRETS = {
    "API_TOKEN placeholder": ("API_TOKEN", "change-me-to-a-long-random-string", "placeholder"),
    "SECRET_KEY placeholder": ("SECRET_KEY", "change-me-to-another-long-random-string", "placeholder"),
    "short API_TOKEN": ("API_TOKEN", "test-token", "shorter than 32 characters"),
    "short SECRET_KEY": ("SECRET_KEY", "k" * 31, "shorter than 32 characters"),
    "Flower's example login": ("FLOWER_BASIC_AUTH", "user:password", "placeholder password"),
}


@pytest.mark.parametrize(("name", "value", "problem"), GUESSABLE_SECRETS.values(), ids=GUESSABLE_SECRETS.keys())
def test_the_settings_refuse_a_placeholder_or_short_secret_outside_debug(name, value, problem):
    refused = load_settings(**{name: value})

    assert refused.returncode != 0
    assert f"ImproperlyConfigured: {name}" in refused.stderr
    assert problem in refused.stderr
    assert value not in refused.stderr


def test_debug_accepts_a_short_api_token_for_development():
    assert load_settings(DEBUG="true", API_TOKEN="dev", SECRET_KEY="").returncode == 0


def test_a_malformed_signing_secret_stops_the_settings_even_in_debug():
    refused = load_settings(DEBUG="true", WEBHOOK_SIGNING_SECRET="whsec_abc")

    assert refused.returncode != 0
    assert "WEBHOOK_SIGNING_SECRET: secret 1 of 1 decodes to 2 bytes" in refused.stderr


MALFORMED_SIGNING_SECRETS = {
    "no prefix": ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start with whsec_"),
    "too short a key": ("whsec_c2Vjb25kLXNlY3JldA==", "decodes to 13 bytes; at least 24"),
    "not base64": ("whsec_MfKQ9r8GKYqrTwjU*D8ILPZIo2LaLaSw", "not valid base64"),
    "url-safe base64": ("whsec_MfKQ9r8GKYqrTwjU-D8ILPZIo2LaLaSw", "not valid base64"),
    "truncated base64": ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwA", "not valid base64"),
}


@pytest.mark.parametrize(("secret", "problem"), MALFORMED_SIGNING_SECRETS.values(), ids=MALFORMED_SIGNING_SECRETS.keys())
def test_a_malformed_signing_secret_is_named_by_its_position_never_by_its_value(secret, problem):
    with pytest.raises(ImproperlyConfigured) as refused:
        parse_signing_secrets(f"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw {secret}")

    assert str(refused.value).startswith("WEBHOOK_SIGNING_SECRET: secret 2 of 2 ")
    assert problem in str(refused.value)
    assert secret.removeprefix("whsec_") not in str(refused.value)


def test_parsed_signing_keys_sign_what_receivers_verify_with_the_secrets():
    # Padding is optional, as standardwebhooks allows
    unpadded = "whsec_" + base64.b64encode(b"a key of twenty-five bytes").decode().rstrip("=")
    keys = parse_signing_secrets(f"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw  {unpadded}")
    body = b'{"id": "signed"}'

    headers = signature_headers(message_id="delivery-1", body=body, now=datetime.now(UTC), secrets=keys)

    assert len(headers["webhook-signature"].split()) == 2
    for secret in ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", unpadded):
        assert Webhook(secret).verify(body, headers) == {"id": "signed"}


def file_modes(path: Path) -> dict[str, int]:
    return {suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) for suffix in ("", "-wal", "-shm")}


def test_a_new_sqlite_database_and_its_wal_and_shm_files_are_private_from_creation(tmp_path):
    # Given a database file and a directory that do not exist yet
    database = tmp_path / "new" / "scheduler.sqlite3"
    script = (
        "import django, json, os; django.setup(); from django.db import connection\n"
        "with connection.cursor() as cursor: cursor.execute('CREATE TABLE probe (x)'); "
        "cursor.execute('INSERT INTO probe VALUES (1)')\n"
        "name = connection.settings_dict['NAME']\n"
        "print(json.dumps({s: os.stat(name + s).st_mode & 0o777 for s in ('', '-wal', '-shm')}))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "READ_DOT_ENV": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        "DATABASE_URL": f"sqlite:///{database}",
    }

    # When a process of the service opens it and writes (the -wal and -shm exist while it is open)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    # Then the directory is 0700 and every file 0600
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(("before", "after"), [(0o644, 0o600), (0o664, 0o600), (0o640, 0o640), (0o600, 0o600)])
def test_an_existing_database_readable_by_others_is_made_private_and_a_chosen_group_mode_is_kept(tmp_path, before, after):
    # Given a database an earlier version created (its -wal and -shm too), with mode `before`
    database = tmp_path / "scheduler.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").touch()
        os.chmod(f"{database}{suffix}", before)

    # When a connection opens it
    sqlite3.connect(database, factory=PrivateSQLiteConnection).close()

    # Then others lost their access, and a group-only mode stayed as chosen
    assert file_modes(database) == {"": after, "-wal": after, "-shm": after}


def test_the_first_env_file_is_created_private_with_secrets_the_settings_accept(tmp_path, monkeypatch):
    def chmod_after_writing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was readable by others until chmod")

    monkeypatch.delenv("API_TOKEN")  # set by tests/settings.py; with it, `make run` writes no .env
    monkeypatch.setattr(os, "chmod", chmod_after_writing)
    env_file = tmp_path / ".env"

    token = write_first_env_file(env_file)

    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    written = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if not line.startswith("#"))
    assert written["API_TOKEN"] == token
    assert set(written) == {"API_TOKEN", "SECRET_KEY"}
    # Flower's login is there, commented out: Flower is opt-in (~90 MB), its password ready
    flower = [line for line in env_file.read_text().splitlines() if line.startswith("# FLOWER_BASIC_AUTH=")]
    assert len(flower) == 1
    loaded = load_settings(**written, FLOWER_BASIC_AUTH=flower[0].removeprefix("# FLOWER_BASIC_AUTH="))
    assert loaded.returncode == 0, loaded.stderr


def test_an_existing_env_file_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.delenv("API_TOKEN")
    env_file = tmp_path / ".env"
    env_file.write_text("API_TOKEN=the-operator-s-own\n")

    assert write_first_env_file(env_file) is None
    assert env_file.read_text() == "API_TOKEN=the-operator-s-own\n"


# --- make run's launcher --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("profile", "processes"),
    [
        (None, {"web", "worker"}),
        ("small", {"web", "worker"}),
        ("scaled", {"web", "worker.1", "worker.2", "worker.3", "maintenance", "beat"}),
    ],
)
def test_prepare_run_migrates_and_writes_what_the_launcher_starts(tmp_path, monkeypatch, profile, processes):
    monkeypatch.setenv("WORKER_PROCESSES", "3")
    if profile:
        monkeypatch.setenv("SERVICE_PROFILE", profile)
    else:
        monkeypatch.delenv("SERVICE_PROFILE", raising=False)
    plan_file = tmp_path / "plan.json"

    call_command("prepare_run", plan=str(plan_file))

    plan = json.loads(plan_file.read_text())
    assert set(plan["processes"]) == processes
    assert plan["processes"]["web"]["command"].startswith("python -m scheduler_project.web_server")
    if profile == "scaled":
        assert plan["processes"]["worker.2"]["env"] == {"WORKER_NAME": "worker2"}
    else:
        # One Celery process: both queues, beat inside it
        worker = plan["processes"]["worker"]["command"].split()
        assert worker[worker.index("-Q") + 1] == "deliveries,maintenance"
        assert "--beat-thread" in worker
    assert plan["redis"] is None  # the tests' Redis answers
    assert plan["kill_wait_seconds"] > 10
    assert plan["base_url"].startswith("http://")


def test_an_unknown_service_profile_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("SERVICE_PROFILE", "huge")

    with pytest.raises(ValueError, match="SERVICE_PROFILE must be one of small, scaled, not 'huge'"):
        procfile_processes()


def test_the_launcher_does_not_load_django():
    # honcho keeps a fork of the launcher beside every process it starts: with Django loaded,
    # each fork cost 20 MB of PSS (docs/benchmarks.md, issue 14).
    probe = (
        "import sys, scripts.run_service; "
        "print(sorted(m for m in sys.modules if m.startswith(('django.db', 'django.apps', 'scheduler_project', 'messages'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)

    assert loaded.stdout.strip() == "[]"
    source = (ROOT / "scripts" / "run_service.py").read_text()
    assert "django.setup" not in source
    assert "import django\n" not in source
