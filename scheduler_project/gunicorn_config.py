"""gunicorn settings, taken from the Django settings so that one .env configures both."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")

from django.conf import settings  # noqa: E402

bind = f"{settings.API_HOST}:{settings.API_PORT}"
workers = settings.WEB_CONCURRENCY
accesslog = "-"
# Request lines only: never bodies, and the query string carries no secrets in this API.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
timeout = 60
