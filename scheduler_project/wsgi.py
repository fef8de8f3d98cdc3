"""WSGI entry point (scheduler_project/web_server.py serves it). Refuses to start on settings that
fail the system checks, as manage.py and the workers do, and an API that nobody needs a token for."""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")

application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - settings are ready only after the line above

from messages.checks import exit_on_system_check_errors  # noqa: E402 - needs the apps loaded

exit_on_system_check_errors()

if not settings.API_TOKEN:
    raise ImproperlyConfigured(
        "API_TOKEN is not set: refusing to serve an open API. Set API_TOKEN in the environment "
        "or in .env (`make run` writes a random one on first start)."
    )
