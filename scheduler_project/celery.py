"""The Celery application: configured by celeryconfig.py, tasks found in the Django apps."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")

app = Celery("scheduler")
app.config_from_object("celeryconfig")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_obsolete_database_connections(**kwargs: object) -> None:
    """What Django does around each request: drop connections past CONN_MAX_AGE or broken."""
    from django.db import close_old_connections

    close_old_connections()
