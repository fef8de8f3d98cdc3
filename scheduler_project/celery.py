"""The Celery application: configured by celeryconfig.py, tasks found in the Django apps."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")

app = Celery("scheduler")
app.config_from_object("celeryconfig")
app.autodiscover_tasks()
