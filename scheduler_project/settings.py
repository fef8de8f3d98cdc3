"""Django settings, read from the environment and an optional `.env` file.

Every setting is documented in `.env.example`; a bad value fails at start-up.
"""

import os
import sqlite3
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from urllib.parse import quote

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from messages.signing import parse_signing_secrets
from messages.version import VERSION
from scheduler_project.durations import parse_duration_list
from scheduler_project.procfile import service_profile

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("READ_DOT_ENV", default=True):
    # Values already in the environment win over the file.
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)


def _refuse_weak_secret(name: str, value: str) -> None:
    """Outside DEBUG: not a `change-me-...` placeholder of .env.example (a secret everyone can
    read), and at least 32 characters. An empty value is left to the code that needs it."""
    if DEBUG or not value:
        return
    advice = "set a long random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    if value.lower().startswith("change-me"):
        raise ImproperlyConfigured(f"{name} is still the placeholder of .env.example: {advice}.")
    if len(value) < 32:
        raise ImproperlyConfigured(f"{name} is shorter than 32 characters: {advice}.")


def _refuse_placeholder_flower_login(value: str) -> None:
    """FLOWER_BASIC_AUTH ("user:password", comma-separated) is read by Flower itself, whose
    process loads these settings (celeryconfig.py): the docs' example login is refused here."""
    if DEBUG:
        return
    for login in value.split(","):
        password = login.strip().partition(":")[2].lower()
        if password == "password" or password.startswith("change-me"):  # noqa: S105 - the refused ones
            raise ImproperlyConfigured("FLOWER_BASIC_AUTH holds a placeholder password: set user:<a long random password>.")


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or in .env (`make run` writes a random one on first start)."
        )
    SECRET_KEY = "insecure-development-only-key"  # noqa: S105 - only ever with DEBUG on
_refuse_weak_secret("SECRET_KEY", SECRET_KEY)

# The API refuses to start without it (see scheduler_project/wsgi.py): never an open API.
API_TOKEN = env.str("API_TOKEN", default="")
_refuse_weak_secret("API_TOKEN", API_TOKEN)
_refuse_placeholder_flower_login(env.str("FLOWER_BASIC_AUTH", default=""))

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
API_HOST = env.str("API_HOST", default="127.0.0.1")
API_PORT = env.int("API_PORT", default=8000)
# Web server processes (granian); one uses one core.
WEB_CONCURRENCY = env.int("WEB_CONCURRENCY", default=os.cpu_count() or 1)
# Which processes `make run` starts (scheduler_project/procfile.py): small or scaled.
try:
    SERVICE_PROFILE = service_profile()
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None

# Behind a TLS-terminating proxy in production: secure cookies, HTTPS redirects, HSTS, and the
# proxy's X-Forwarded-Proto trusted. /health, /livez and /readyz stay reachable over plain HTTP for probes.
HTTPS = env.bool("HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
# The preload directive alone enrols nothing: a domain joins browsers' lists only when submitted.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^(health|livez|readyz)/?$"]
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets, served locally
    "messages.apps.ScheduledMessagesConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before sessions and authentication: a blocked address costs one Redis GET, nothing more.
    "messages.address_limits.AddressLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The contract's paths have no trailing slash; a redirect would lose a POST body.
APPEND_SLASH = False

ROOT_URLCONF = "scheduler_project.urls"
WSGI_APPLICATION = "scheduler_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


class PrivateSQLiteConnection(sqlite3.Connection):
    """The SQLite file holds sessions, payloads and headers: it is created 0600 before SQLite
    opens it (SQLite would make it 0644, and its -wal and -shm files copy the main file's mode)."""

    def __init__(self, database: str | os.PathLike[str], *args: Any, **kwargs: Any) -> None:
        path = os.fspath(database)
        # In memory, or a URI (Django's in-memory test database): no file to protect here.
        if path not in ("", ":memory:") and not path.startswith("file:"):
            _make_sqlite_file_private(path)
        super().__init__(database, *args, **kwargs)


def _make_sqlite_file_private(path: str) -> None:
    """A file an earlier version left readable by other users becomes 0600 too (every process of
    the service runs as its owner); a mode without access for others, e.g. 0640 for a backup
    group, was chosen by someone and is kept, and so is a file this process does not own."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        for name in (path, f"{path}-wal", f"{path}-shm"):
            try:
                if os.stat(name).st_mode & 0o007:
                    os.chmod(name, 0o600)
            except (FileNotFoundError, PermissionError):
                pass


def _database_from_env() -> dict:
    database = env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'scheduler.sqlite3'}")
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # The web server, the workers and beat share the file: WAL lets readers run beside
        # the writer, IMMEDIATE takes the write lock up front so two writers queue on the
        # busy timeout instead of failing with "database is locked" halfway through.
        # synchronous=FULL: each commit waits for the WAL to reach the disk, so a POST answered
        # 200 survives a power cut or a kernel crash; NORMAL could lose the last commits there
        # (issue 11; what it costs: docs/benchmarks.md).
        # Django's backend, its writers taking turns (scheduler_project/sqlite_backend/base.py).
        database["ENGINE"] = "scheduler_project.sqlite_backend"
        database.setdefault("OPTIONS", {}).update(
            {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
                "factory": PrivateSQLiteConnection,
            }
        )
        # A directory created here is private too (an existing one is left as it is).
        Path(database["NAME"]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if database["ENGINE"] == "django.db.backends.postgresql":
        # A worker recording a call must not hang on a server that does not answer, nor on a
        # connection the network dropped silently (TCP alone gives up after ~15 minutes).
        options = database.setdefault("OPTIONS", {})
        for name, value in {
            "connect_timeout": 5,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 15000,
        }.items():
            options.setdefault(name, value)
    # A connection per request (or per task) costs more than the request itself.
    database.setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    database.setdefault("CONN_HEALTH_CHECKS", True)
    return database


DATABASES = {"default": _database_from_env()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _redis_url_from_env() -> str:
    """REDIS_URL, or the old service's REDIS_HOST / REDIS_PORT / REDIS_PASSWORD."""
    if env.str("REDIS_URL", default=""):
        return env.str("REDIS_URL")
    host = env.str("REDIS_HOST", default="127.0.0.1")
    port = env.int("REDIS_PORT", default=6379)
    password = env.str("REDIS_PASSWORD", default="")
    credentials = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{credentials}{host}:{port}/0"


REDIS_URL = _redis_url_from_env()

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["messages.api.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["messages.api.permissions.IsAuthenticatedAndMayWrite"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["messages.api.parsers.BoundedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["messages.api.throttling.PerClientRateThrottle"],
    "EXCEPTION_HANDLER": "messages.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# /openapi.json and /docs: public, like /health; the examples live in messages/api/schema.py.
SPECTACULAR_SETTINGS = {
    "TITLE": "Webhook Scheduler API",
    "VERSION": VERSION,
    "DESCRIPTION": (
        "Schedules webhook calls: POST a message with a time, a URL and a JSON payload, and the "
        "service POSTs the payload to the URL at that time, retrying failed calls. "
        "Every endpoint except `/health`, `/livez`, `/readyz` and these docs needs `Authorization: Bearer <token>`, "
        "with API_TOKEN or an API key."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "PREPROCESSING_HOOKS": ["messages.api.schema.contract_paths"],
    # One name for the choice set that /health and /readyz share.
    "ENUM_NAME_OVERRIDES": {"ConnectionStateEnum": "messages.api.responses.CONNECTION_STATES"},
    # The values say it all; "* `alive` - alive" under each would only repeat them.
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
}


def _rate_limit_from_env(name: str, *, default: str = "") -> tuple[int, float] | None:
    """A limit as "600/min" or "10/15min" (units s, min, h): (requests, window seconds); empty: none."""
    text = env.str(name, default=default).strip()
    if not text:
        return None
    count, _, window = text.partition("/")
    unit = window.lstrip("0123456789")
    multiple = window[: len(window) - len(unit)] or "1"
    units = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
    if not (count.isascii() and count.isdigit() and int(count) > 0 and int(multiple) > 0 and unit in units):
        raise ImproperlyConfigured(f"{name}: {text!r} is not like 600/min or 10/15min.")
    return int(count), int(multiple) * units[unit]


# Requests per API key (and for API_TOKEN) per window.
API_RATE_LIMIT = _rate_limit_from_env("API_RATE_LIMIT")
# Per client address (messages/address_limits.py): failed API authentications (401s), requests
# to the public endpoints (with a token or not), failed admin logins.
API_FAILED_AUTH_LIMIT = _rate_limit_from_env("API_FAILED_AUTH_LIMIT", default="20/min")
API_PUBLIC_RATE_LIMIT = _rate_limit_from_env("API_PUBLIC_RATE_LIMIT", default="120/min")
ADMIN_LOGIN_FAILURE_LIMIT = _rate_limit_from_env("ADMIN_LOGIN_FAILURE_LIMIT", default="10/15min")
# Proxies in front that append the client's address to X-Forwarded-For; 0: REMOTE_ADDR is the client.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more.")
# When Redis cannot count a request against API_RATE_LIMIT: "refuse" it (503 with Retry-After) or
# "allow" it unlimited. The per-address limits are never refused for it: each process counts alone.
RATE_LIMIT_ON_REDIS_ERROR = env.str("RATE_LIMIT_ON_REDIS_ERROR", default="refuse")
if RATE_LIMIT_ON_REDIS_ERROR not in {"refuse", "allow"}:
    raise ImproperlyConfigured(f"RATE_LIMIT_ON_REDIS_ERROR: {RATE_LIMIT_ON_REDIS_ERROR!r} is neither refuse nor allow.")
# /health answers from a report at most this old, shared by every web process; 0: checks every time.
HEALTH_CACHE_SECONDS = env.float("HEALTH_CACHE_SECONDS", default=5.0)
if HEALTH_CACHE_SECONDS < 0:
    raise ImproperlyConfigured("HEALTH_CACHE_SECONDS must be 0 or more.")


def _ports_from_env() -> frozenset[int]:
    """WEBHOOK_ALLOWED_PORTS as "443,8443": the ports webhooks may be called on; empty: any."""
    ports = set()
    for text in env.list("WEBHOOK_ALLOWED_PORTS", default=[]):
        port = text.strip()
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_PORTS: {text!r} is not a port number (1-65535).")
        ports.add(int(port))
    return frozenset(ports)


# --- Scheduling and delivery -------------------------------------------------------------

# Largest accepted payload, JSON-encoded; larger gives 413.
PAYLOAD_MAX_BYTES = env.int("PAYLOAD_MAX_BYTES", default=1024 * 1024)
# Most messages in one POST /messages/batch, and the largest body it reads (never less than one
# message's largest); more gives 400, larger 413.
BATCH_MAX_MESSAGES = env.int("BATCH_MAX_MESSAGES", default=1000)
BATCH_MAX_BYTES = env.int("BATCH_MAX_BYTES", default=8 * 1024 * 1024)
# Messages due within this many seconds are handed to Celery with an exact eta; the rest wait
# in the database. Must stay far below the broker's visibility timeout (a system check says so).
SCHEDULER_HORIZON_SECONDS = env.float("SCHEDULER_HORIZON_SECONDS", default=300.0)
# How often beat moves messages into the horizon and recovers lost ones. A message due sooner
# than two polls after its POST is queued by the API itself; the others by beat, which sends
# the messages due at one moment together.
SCHEDULER_POLL_SECONDS = env.float("SCHEDULER_POLL_SECONDS", default=1.0)
# Most messages waiting in the broker at once (each eta task sits in a worker's memory); the
# nearest come first, the rest wait in the database.
SCHEDULER_MAX_QUEUED = env.int("SCHEDULER_MAX_QUEUED", default=20000)
# A message still undelivered this long after its time (or after it was enqueued) is enqueued
# again: its task was lost with the broker's data or with a killed worker.
SCHEDULER_RECOVERY_SECONDS = env.float("SCHEDULER_RECOVERY_SECONDS", default=60.0)
# Redis visibility timeout: a task not acknowledged within it is handed to another worker.
BROKER_VISIBILITY_TIMEOUT_SECONDS = env.int("BROKER_VISIBILITY_TIMEOUT_SECONDS", default=3600)

WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=30.0)
# How long a worker keeps trying to record a call it made while the database is unreachable.
DELIVERY_RECORD_RETRY_SECONDS = env.float("DELIVERY_RECORD_RETRY_SECONDS", default=120.0)
# A claim still held this long after its call's timeout and the record retries means the worker
# died: the message is recovered, and the lost call counts as an attempt.
DELIVERY_CLAIM_GRACE_SECONDS = env.float("DELIVERY_CLAIM_GRACE_SECONDS", default=60.0)

# A worker renews the claims it holds this often; a claim not renewed for its call's timeout
# + DELIVERY_RECORD_RETRY_SECONDS + DELIVERY_CLAIM_GRACE_SECONDS is recovered as lost.
DELIVERY_CLAIM_RENEW_SECONDS = env.float("DELIVERY_CLAIM_RENEW_SECONDS", default=5.0)
# Longest a worker's statement (a record, a renewal) may wait for a lock or a busy database.
DELIVERY_DATABASE_TIMEOUT_SECONDS = env.float("DELIVERY_DATABASE_TIMEOUT_SECONDS", default=10.0)

# Hosts webhooks may call ("example.com", ".example.com" for it and its subdomains); empty: any.
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
# Ports webhooks may be called on (the URL's own, or 80/443 from its scheme); empty: any.
WEBHOOK_ALLOWED_PORTS = _ports_from_env()
# Refuse loopback, private, CGNAT and reserved addresses (checked again after DNS at send time).
WEBHOOK_BLOCK_PRIVATE_NETWORKS = env.bool("WEBHOOK_BLOCK_PRIVATE_NETWORKS", default=False)
# Keep (and show) what an internal address answered; off, its attempts keep an empty excerpt.
WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS = env.bool("WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS", default=False)
# Longest one DNS lookup of a webhook's host may take, all retries included.
WEBHOOK_DNS_TIMEOUT_SECONDS = env.float("WEBHOOK_DNS_TIMEOUT_SECONDS", default=5.0)
# A failed lookup (no such name, timeout, no address) is remembered this long: one per host.
WEBHOOK_DNS_NEGATIVE_TTL_SECONDS = env.float("WEBHOOK_DNS_NEGATIVE_TTL_SECONDS", default=5.0)
# Name servers for webhook hosts ("ip", "ip:port", "[ipv6]:port"); empty: resolv.conf's.
WEBHOOK_DNS_SERVERS = env.list("WEBHOOK_DNS_SERVERS", default=[])
# Delay before each retry, after the previous attempt; each step gets up to ±20% jitter.
WEBHOOK_RETRY_SCHEDULE = parse_duration_list(
    env.str("WEBHOOK_RETRY_SCHEDULE", default="5s,5m,30m,2h,5h,10h,10h"),
    setting="WEBHOOK_RETRY_SCHEDULE",
)
# Attempts per message unless the message sets maxAttempts: the first call and every retry.
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=len(WEBHOOK_RETRY_SCHEDULE) + 1)
# Standard Webhooks signing: "whsec_..." secrets, space-separated during a rotation; held as
# their keys (bytes), checked here so that a bad one stops the start, not every delivery.
WEBHOOK_SIGNING_SECRETS = parse_signing_secrets(env.str("WEBHOOK_SIGNING_SECRET", default=""))
# Delivered messages and their attempts are kept this long, then pruned by beat.
DELIVERY_HISTORY_DAYS = env.float("DELIVERY_HISTORY_DAYS", default=7.0)
# How long a POST's Idempotency-Key is remembered with its answer (seconds).
IDEMPOTENCY_KEY_TTL = env.float("IDEMPOTENCY_KEY_TTL", default=24 * 3600.0)
# Most messages the dispatcher hands to the broker in one run; the rest wait for the next.
SCHEDULER_DISPATCH_BATCH = env.int("SCHEDULER_DISPATCH_BATCH", default=5000)
# Most messages one task carries (messages due together are split into tasks this size).
DELIVERY_GROUP_CONCURRENCY = env.int("DELIVERY_GROUP_CONCURRENCY", default=200)
# Most payload bytes one task carries (messages due together are split into tasks this size).
DELIVERY_TASK_MAX_BYTES = env.int("DELIVERY_TASK_MAX_BYTES", default=8 * 1024 * 1024)
# Most payload bytes one worker process holds claimed at once; more tasks wait for room.
DELIVERY_MAX_HELD_BYTES = env.int("DELIVERY_MAX_HELD_BYTES", default=64 * 1024 * 1024)
# Webhook calls one worker process keeps in flight at once (on one asyncio loop); more wait.
DELIVERY_MAX_CONCURRENT_CALLS = env.int("DELIVERY_MAX_CONCURRENT_CALLS", default=500)
# Messages due within this many milliseconds of each other travel in one task (each still sent
# at its own moment): a task per message costs more than the message.
DELIVERY_GROUP_WINDOW_MS = env.int("DELIVERY_GROUP_WINDOW_MS", default=50)
# A group's task starts and claims this long before its first message is due, so that waiting
# for the database (SQLite's write lock, a busy PostgreSQL) is not counted as lateness.
DELIVERY_CLAIM_LEAD_MS = env.int("DELIVERY_CLAIM_LEAD_MS", default=100)

# --- Confidential fields (messages/confidential.py) ---------------------------------------
# Earlier SECRET_KEYs, newest first, during a rotation: sessions and sealed headers still open.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
# Fernet keys sealing header values at rest, comma-separated: the first seals, every one opens.
# Empty: keys derived from SECRET_KEY and SECRET_KEY_FALLBACKS.
HEADER_ENCRYPTION_KEYS = env.list("HEADER_ENCRYPTION_KEYS", default=[])
for _key in HEADER_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            "HEADER_ENCRYPTION_KEYS: each key must be a Fernet key (32 url-safe base64-encoded bytes); "
            "make one with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
        ) from None
# The admin's notices (a new API key's secret among them) live in the server-side session,
# not in a cookie that is signed but readable.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# Networks (CIDR) that may read /metrics without the API token, e.g. 10.0.0.0/8 for Prometheus.
METRICS_ALLOWED_NETWORKS = [ip_network(network) for network in env.list("METRICS_ALLOWED_NETWORKS", default=[])]

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Request lines carry URLs only; bodies and headers are never logged.
        "django.request": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}
