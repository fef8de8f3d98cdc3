"""Serves the API with granian, configured from the Django settings so that one .env configures
both: `python -m scheduler_project.web_server`.

granian rather than gunicorn, by measurement (docs/benchmarks.md): its HTTP handling is Rust and
it keeps connections alive, so a POST /messages costs the web less CPU than under gunicorn's sync
workers, and the client's own cost per request falls too.
"""

import os

from granian import Granian
from granian.constants import Interfaces

# Request lines only: never bodies, and the query string carries no secrets in this API.
ACCESS_LOG_FORMAT = '%(addr)s "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms'


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    from django.conf import settings

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
