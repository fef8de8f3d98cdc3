"""Settings for the test session and for the worker and beat processes it starts.

Horizons, polls and retry schedules are shrunk from minutes to a second or two, so the real
paths (eta, beat, recovery, retries) run within a test's patience.
"""

import os
import tempfile
from pathlib import Path

from tests.support.ports import free_port

os.environ["READ_DOT_ENV"] = "false"  # a developer's .env must not steer the tests
_run_dir = os.environ.setdefault("SCHEDULER_TEST_RUN_DIR", tempfile.mkdtemp(prefix="scheduler-tests-"))
os.environ.setdefault("TEST_REDIS_PORT", str(free_port()))
_test_defaults = {
    # At least 32 characters, as the settings ask outside DEBUG; tests read settings.API_TOKEN.
    "API_TOKEN": "test-api-token-for-the-test-session-only",
    "SECRET_KEY": "test-secret-key-for-the-test-session-only",
    "REDIS_URL": f"redis://127.0.0.1:{os.environ['TEST_REDIS_PORT']}/0",
    "SCHEDULER_HORIZON_SECONDS": "3",
    "SCHEDULER_POLL_SECONDS": "0.5",
    "SCHEDULER_RECOVERY_SECONDS": "2",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    "DELIVERY_RECORD_RETRY_SECONDS": "8",
    "DELIVERY_CLAIM_GRACE_SECONDS": "4",
    "DELIVERY_CLAIM_RENEW_SECONDS": "0.3",
    "DELIVERY_DATABASE_TIMEOUT_SECONDS": "1",
    "WEBHOOK_RETRY_SCHEDULE": "0.3s,0.3s,1.5s",
    # A name server that never answers costs a second; a failed name is asked again after 0.5 s.
    "WEBHOOK_DNS_TIMEOUT_SECONDS": "1",
    "WEBHOOK_DNS_NEGATIVE_TTL_SECONDS": "0.5",
    "WEBHOOK_SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    # The receivers are on 127.0.0.1: the tests read what they answered (test_target_policy
    # checks the default, off).
    "WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS": "true",
    "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{_run_dir}/scheduler.sqlite3",
}
for _name, _value in _test_defaults.items():
    os.environ.setdefault(_name, _value)

from scheduler_project.settings import *  # noqa: E402,F403

# The worker and beat processes open the database the test session created.
if os.environ.get("SCHEDULER_TEST_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["SCHEDULER_TEST_DATABASE_NAME"]  # noqa: F405
if DATABASES["default"]["ENGINE"] == "scheduler_project.sqlite_backend":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"{_run_dir}/test-scheduler.sqlite3"}  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
# No collectstatic in tests: whitenoise serves the apps' static files (Swagger UI's) directly.
WHITENOISE_USE_FINDERS = True
# whitenoise warns on every request when the static root does not exist yet.
STATIC_ROOT = Path(_run_dir) / "static"  # a Path, as in scheduler_project/settings.py
os.makedirs(STATIC_ROOT, exist_ok=True)
