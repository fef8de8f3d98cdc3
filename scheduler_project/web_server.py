"""Serves the API with granian, configured from the Django settings so that one .env configures
both: `python -m scheduler_project.web_server`.

granian rather than gunicorn, by measurement (docs/benchmarks.md): its HTTP handling is Rust and
it keeps connections alive, so a POST /messages costs the web less CPU than under gunicorn's sync
workers, and the client's own cost per request falls too.
"""

import gc
import os

from granian import Granian
from granian.constants import Interfaces

# Request lines only: never bodies, and the query string carries no secrets in this API.
ACCESS_LOG_FORMAT = '%(addr)s "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms'


def load_application_before_forking() -> None:
    """granian forks its workers from this process: with the application loaded here (Django,
    DRF, the URL map), each worker shares those pages instead of importing its own copy
    (docs/benchmarks.md, issue 14). Nothing opened here may be shared across the fork."""
    from django.db import connections

    import scheduler_project.wsgi  # noqa: F401 - loads Django and the app, and runs the system checks

    connections.close_all()
    # The collector would otherwise write to every object's header on its passes, copying the
    # shared pages into each worker.
    gc.freeze()


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    from django.conf import settings

    load_application_before_forking()

    Granian(
        "scheduler_project.wsgi:application",
        interface=Interfaces.WSGI,
        address=settings.API_HOST,
        port=settings.API_PORT,
        workers=settings.WEB_CONCURRENCY,
        # One Python thread per worker process: more threads only contend for the GIL.
        blocking_threads=1,
        websockets=False,
        respawn_failed_workers=True,
        log_access=True,
        log_access_format=ACCESS_LOG_FORMAT,
    ).serve()


if __name__ == "__main__":
    main()
