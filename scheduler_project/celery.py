"""The Celery application: configured by celeryconfig.py, tasks found in the Django apps."""

import logging
import os
import signal
import threading
from typing import Any

import click
from celery import Celery, beat, bootsteps
from celery.signals import beat_init, task_postrun, task_prerun, worker_init, worker_shutdown, worker_shutting_down

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
# Celery's Django fixup runs every system check at a worker's start and starts whatever they say;
# refuse_settings_that_fail_system_checks below runs them instead, and stops on an error.
os.environ.setdefault("CELERY_SKIP_CHECKS", "true")

app = Celery("scheduler")
app.config_from_object("celeryconfig")
app.autodiscover_tasks()


# How long beat's thread sleeps at most between looks at its schedule: a stopping worker waits
# for its current sleep to end (Celery's own embedded thread sleeps up to a second).
BEAT_THREAD_WAKE_SECONDS = 0.2


class BeatInAThread(threading.Thread):
    def __init__(self, celery_app: Celery, **options: Any) -> None:
        super().__init__(name="beat", daemon=True)
        self.celery_app = celery_app
        # celery-types says int; the scheduler takes any number of seconds (it min()s with them).
        self.service = beat.Service(celery_app, max_interval=BEAT_THREAD_WAKE_SECONDS, **options)  # type: ignore[arg-type]

    def run(self) -> None:
        self.celery_app.set_current()
        try:
            self.service.start()
        except BaseException:
            # Beat failed to start or died (an unwritable schedule file...): the worker must not
            # go on without it (nothing would be dispatched or recovered), nor wait for it at its
            # stop. The whole worker stops, and with it `make run`'s process group, loudly.
            logging.getLogger(__name__).exception("beat's thread died: stopping the worker")
            os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> None:
        if self.is_alive():
            self.service.stop(wait=False)
            self.join(timeout=BEAT_THREAD_WAKE_SECONDS * 10)


class BeatThread(bootsteps.StartStopStep):
    """`celery worker --beat-thread`: beat as a thread of this worker (the small profile,
    scheduler_project/procfile.py). Celery's own --beat forks a process for it, which dirtied
    22 MB of its copy of the worker's memory (docs/benchmarks.md, issue 14); beat only sends a
    tick a second, which a thread does as well. Stopped with the worker, after its last tick."""

    label = "BeatThread"
    conditional = True

    def __init__(self, worker: Any, beat_thread: bool = False, **kwargs: Any) -> None:
        self.enabled = bool(beat_thread)
        super().__init__(worker, **kwargs)

    def create(self, worker: Any) -> Any:  # the object StartStopStep starts and stops
        return BeatInAThread(worker.app, schedule_filename=worker.schedule_filename, scheduler_cls=worker.scheduler)


app.steps["worker"].add(BeatThread)
app.user_options["worker"].add(
    click.Option(["--beat-thread"], is_flag=True, default=False, help="Run beat in a thread of this worker.")
)


@task_prerun.connect
@task_postrun.connect
def close_obsolete_database_connections(**kwargs: object) -> None:
    """What Django does around each request: drop connections past CONN_MAX_AGE or broken."""
    from django.db import close_old_connections

    close_old_connections()


# Django's check tags that a worker or beat leaves out: the URL checks import the URLconf and
# every view, the admin's every middleware class (to check its type), the templates' every
# template tag library, and with them the whole web app, DRF included (docs/benchmarks.md, issue 14).
CHECKS_LEFT_OUT_OF_WORKERS = frozenset({"urls", "admin", "templates"})


@worker_init.connect
@beat_init.connect
def refuse_settings_that_fail_system_checks(**kwargs: object) -> None:
    """manage.py runs the system checks; a worker or beat started on its own must too, or
    settings that make delivery wrong would only show as wrong deliveries (worker_init does
    not fire in beat). Once a process: beat in a worker's thread sends beat_init too.

    Checks registered without a tag are left out with the tags above (run_checks with tags
    skips them): Django's and ours all carry one; a third party's untagged check runs in the
    web server only."""
    from messages.checks import exit_on_system_check_errors

    if _checked_in_this_process.is_set():
        return
    exit_on_system_check_errors(except_tags=CHECKS_LEFT_OUT_OF_WORKERS)
    _checked_in_this_process.set()


_checked_in_this_process = threading.Event()


@worker_shutting_down.connect
def stop_taking_deliveries(**kwargs: object) -> None:
    """SIGTERM: claim nothing more, and give back what is claimed but not yet being called."""
    from messages.delivery_engine import engine_if_started

    engine = engine_if_started()
    if engine is not None:
        engine.begin_stop()


METRICS_FLUSH_SECONDS = 10.0  # Redis's connect and read timeouts (2 s, 5 s) and a little more


@worker_shutdown.connect
def finish_deliveries_in_flight(**kwargs: object) -> None:
    """Calls already made are waited for and recorded, so none is recovered and sent again."""
    import logging

    from messages import metrics
    from messages.delivery_engine import engine_if_started, longest_delivery_seconds

    engine = engine_if_started()
    if engine is not None and not engine.wait_until_idle(timeout=longest_delivery_seconds()):
        logging.getLogger(__name__).error("stopped with %d deliveries unrecorded", engine.held_count())
    # Then the counters of those deliveries: a daemon thread left inside redis-py at exit can
    # hang the interpreter's exit (metrics.wait_for_background_writes).
    if not metrics.wait_for_background_writes(timeout=METRICS_FLUSH_SECONDS):
        logging.getLogger(__name__).warning("stopped before the last attempts' metrics were written")
