"""A start that skips manage.py prepare_run (scripts/prepared_start.py): only when nothing it
depends on changed, and the database itself still has every migration and the rows migrate puts
back."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from messages.models import API_TOKEN_KEY_ID, ApiKey
from scripts import prepared_start

pytestmark = pytest.mark.django_db(transaction=True)


def environment() -> dict[str, str]:
    """The launcher's environment: pytest's own variable changes between a test's phases."""
    return {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}


@pytest.fixture
def stamp_path(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "var" / "prepared.json"
    monkeypatch.setattr(prepared_start, "STAMP_PATH", path)
    return path


@pytest.fixture
def prepared(stamp_path, tmp_path) -> dict:
    """prepare_run as the launcher runs it when something changed: it leaves the stamp."""
    call_command("prepare_run", plan=str(tmp_path / "plan.json"), fingerprint=prepared_start.fingerprint(environment()))
    return json.loads((tmp_path / "plan.json").read_text())


def test_after_prepare_run_the_next_start_reuses_its_plan_from_a_private_stamp(prepared, stamp_path):
    reused = prepared_start.reusable_plan(environment())

    assert reused is not None
    assert prepared_start.with_redis(reused) == prepared
    assert stat.S_IMODE(stamp_path.stat().st_mode) == 0o600


def test_a_changed_setting_means_prepare_run_again(prepared, monkeypatch):
    monkeypatch.setenv("WORKER_PROCESSES", "7")

    assert prepared_start.reusable_plan(environment()) is None


def test_a_variable_the_shell_changes_does_not(prepared, monkeypatch):
    monkeypatch.setenv("OLDPWD", "/somewhere/else")
    monkeypatch.setenv("SHLVL", "9")

    assert prepared_start.reusable_plan(environment()) is not None


def test_a_database_missing_a_migration_means_prepare_run_again(prepared):
    # Given the database lost the record of its last migration (restored from an older backup)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, app, name, applied FROM django_migrations WHERE app = 'scheduler' ORDER BY name DESC")
        row = cursor.fetchone()
        cursor.execute("DELETE FROM django_migrations WHERE id = %s", [row[0]])
    try:
        # Then the stamp is not enough
        assert prepared_start.reusable_plan(environment()) is None
    finally:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO django_migrations (id, app, name, applied) VALUES (%s, %s, %s, %s)", list(row))
    assert prepared_start.reusable_plan(environment()) is not None


def test_a_database_without_the_api_token_s_row_means_prepare_run_again(prepared):
    # A flushed database keeps django_migrations but loses the row migrate puts back
    ApiKey.objects.filter(pk=API_TOKEN_KEY_ID).delete()

    assert prepared_start.reusable_plan(environment()) is None


def test_static_files_gone_mean_prepare_run_again(prepared, stamp_path, settings, tmp_path):
    # Given the production storage's manifest, collected by prepare_run
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}
    settings.STATIC_ROOT = str(tmp_path / "static")
    call_command("prepare_run", plan=str(tmp_path / "plan.json"), fingerprint=prepared_start.fingerprint(environment()))
    manifest = Path(json.loads(stamp_path.read_text())["static_manifest"])
    assert manifest.name == "staticfiles.json"
    assert prepared_start.reusable_plan(environment()) is not None

    # When it is gone (var/static deleted)
    manifest.unlink()

    # Then the next start collects again
    assert prepared_start.reusable_plan(environment()) is None


def test_a_failed_prepare_run_leaves_no_stamp(prepared, stamp_path, tmp_path, monkeypatch):
    def migrate_fails(*args, **kwargs):
        raise RuntimeError("migrate failed")

    monkeypatch.setattr("messages.management.commands.prepare_run.call_command", migrate_fails)

    with pytest.raises(RuntimeError):
        call_command("prepare_run", plan=str(tmp_path / "again.json"), fingerprint="anything")

    assert not stamp_path.exists()
    assert prepared_start.reusable_plan(environment()) is None


def test_an_unreadable_stamp_means_prepare_run(stamp_path):
    stamp_path.parent.mkdir(parents=True)
    stamp_path.write_text("{not json")

    assert prepared_start.reusable_plan(environment()) is None


def test_the_fingerprint_follows_the_code_and_the_environment_not_the_shell(tmp_path):
    code = tmp_path / "messages" / "migrations" / "0001_initial.py"
    code.parent.mkdir(parents=True)
    code.write_text("operations = []\n")
    environ = {"API_PORT": "8000", "PWD": "/here"}
    first = prepared_start.fingerprint(environ, root=tmp_path)

    assert prepared_start.fingerprint({**environ, "PWD": "/there", "_": "/usr/bin/make"}, root=tmp_path) == first
    assert prepared_start.fingerprint({**environ, "API_PORT": "8001"}, root=tmp_path) != first
    code.write_text("operations = [1]\n")
    assert prepared_start.fingerprint(environ, root=tmp_path) != first


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's connection options")
def test_the_quick_check_connects_with_the_database_s_own_options_and_no_stored_password(stamp_path, tmp_path, monkeypatch):
    # Given options that change what a connection sees (here: the schema it reads first)
    options = {**connection.settings_dict["OPTIONS"], "options": "-c search_path=public"}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)

    # When prepare_run leaves its stamp
    call_command("prepare_run", plan=str(tmp_path / "plan.json"), fingerprint=prepared_start.fingerprint(environment()))

    # Then the quick check would connect with them, and the stamp holds no password
    stamp = json.loads(stamp_path.read_text())
    assert stamp["database"]["connect"]["options"] == "-c search_path=public"
    assert "password" not in stamp["database"]["connect"]
    assert prepared_start.reusable_plan(environment()) is not None
