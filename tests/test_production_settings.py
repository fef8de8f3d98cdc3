"""The documented production settings pass Django's deployment checks, and secrets stay out of logs."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys

import pytest

from tests.factories import make_message
from tests.support import processes
from tests.support.processes import ROOT


def test_check_deploy_is_clean_with_the_documented_production_settings():
    env = {
        "PATH": "/usr/bin:/bin", "READ_DOT_ENV": "false", "DEBUG": "false", "HTTPS": "true",
        "SECRET_KEY": secrets.token_urlsafe(50), "API_TOKEN": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "scheduler.example.com", "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        "DATABASE_URL": "sqlite:////tmp/check-deploy.sqlite3",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_web_server_refuses_to_start_without_an_api_token():
    env = {"PATH": "/usr/bin:/bin", "READ_DOT_ENV": "false", "SECRET_KEY": "x" * 50,
           "DJANGO_SETTINGS_MODULE": "scheduler_project.settings", "DATABASE_URL": "sqlite:////tmp/no-token.sqlite3"}
    result = subprocess.run([sys.executable, "-c", "import scheduler_project.wsgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "API_TOKEN is not set" in result.stderr


@pytest.mark.django_db
def test_payloads_and_tokens_never_reach_the_logs(api, receiver, hook_path, caplog):
    from messages import delivery

    caplog.set_level(logging.DEBUG)
    secret_payload = {"card": "4111-1111-1111-1111"}
    api.post("/messages", {"id": "quiet", "scheduleTo": "2020-01-01T00:00:00Z", "payload": secret_payload,
                           "webhookUrl": receiver.url(hook_path), "headers": {"Authorization": "Bearer downstream-secret"}})
    api.post("/messages", {"id": "quiet", "scheduleTo": "nonsense", "payload": secret_payload,
                           "webhookUrl": receiver.url(hook_path)})
    message = make_message(message_id="quiet-2", webhook_url=receiver.url(hook_path), payload=secret_payload)
    delivery.deliver_messages([message.pk])

    assert "quiet-2" in caplog.text  # the message id is logged
    for secret in ("4111-1111-1111-1111", "downstream-secret", "test-token"):
        assert secret not in caplog.text


def test_a_worker_refuses_to_start_on_settings_that_fail_the_system_checks():
    # A renew interval the grace cannot hold (scheduler.E004): manage.py would refuse it, so must the worker
    env = processes.process_env(DELIVERY_CLAIM_RENEW_SECONDS="100")
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "scheduler_project", "worker", "-Q", "deliveries", "-P", "threads",
         "-c", "1", "-n", "refused@%h", "--without-gossip", "--without-mingle"],
        cwd=processes.ROOT, env=env, capture_output=True, text=True, timeout=60,
    )

    assert worker.returncode == 1
    assert "refusing to start" in worker.stderr + worker.stdout
    assert "scheduler.E004" in worker.stderr + worker.stdout
