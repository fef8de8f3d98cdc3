# syntax=docker/dockerfile:1
# One image for every process: web (the default CMD), migrate, worker, beat and flower.
# docker-compose.yml runs them all; see it for the settings the containers need.
FROM python:3.11-slim

# PYTHONUNBUFFERED: log lines reach `docker logs` at once, not when a buffer fills.
# READ_DOT_ENV=false: a container is configured by its environment only, never by a stray .env.
# API_HOST=0.0.0.0: the web server must listen beyond the container's own loopback to be reachable.
# API_PORT=8000: EXPOSE and HEALTHCHECK below assume it.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    READ_DOT_ENV=false \
    API_HOST=0.0.0.0 \
    API_PORT=8000

WORKDIR /app

# The processes run as this unprivileged user; a fixed UID keeps volume ownership predictable.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app

# Dependencies before the code: this layer is rebuilt only when requirements.txt changes.
# The runtime only: the test and lint tools (requirements-dev.txt) are never installed here.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Static files are baked into the image (whitenoise serves them from var/static). The settings
# refuse to load without SECRET_KEY: the dummy values live only in this RUN line and never
# reach a running container. The code stays root-owned (read-only to the app user); only var/
# is writable, for the SQLite file when DATABASE_URL is unset.
RUN SECRET_KEY=build-only-never-used-at-runtime-0123456789 API_TOKEN=build-only-never-used-at-runtime-0123456789 \
    python manage.py collectstatic --noinput \
    && chown app:app var

# Numeric, so an orchestrator can verify the user is not root without reading /etc/passwd.
USER 10001:10001

EXPOSE 8000

# No curl in the slim image: python does the probe. /health answers 503 (urlopen raises, exit 1)
# when the database or Redis is down, and 200 "degraded" when only worker/beat are missing, so
# web is not blamed for another container's fault. Worker/beat containers disable this check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=8)"]

# Bind address, port and worker count come from the settings (API_HOST, API_PORT, WEB_CONCURRENCY).
CMD ["python", "-m", "scheduler_project.web_server"]
