"""celeryconfig.py is true: nothing in it that the pool in use ignores, routing and acks as the
design says, and the Procfile and docker-compose.yml start the workers scheduler_project/procfile.py
describes (neither file can import the names, so they are checked here)."""

from __future__ import annotations

import time

import yaml
from celery.concurrency import get_implementation

import messages.tasks  # noqa: F401 - registers the tasks, as the worker's autodiscovery does
from messages.task_names import DELIVER_TASK, DELIVERY_QUEUE, DISPATCH_TASK, MAINTENANCE_QUEUE, PRUNE_TASK
from scheduler_project import procfile
from scheduler_project.celery import app as celery_app
from tests.support.processes import ROOT

OUR_TASKS = (DELIVER_TASK, DISPATCH_TASK, PRUNE_TASK)

# What each pool we might run does nothing with. Time limits need prefork, gevent or eventlet;
# the per-child limits recycle prefork's child processes, which the threads pool has none of.
IGNORED_BY_POOL = {
    "threads": ("task_time_limit", "task_soft_time_limit", "worker_max_tasks_per_child", "worker_max_memory_per_child"),
}


def test_celeryconfig_sets_nothing_that_its_pool_ignores():
    pool = celery_app.conf.worker_pool
    assert pool in IGNORED_BY_POOL, f"say in IGNORED_BY_POOL which settings the {pool} pool ignores"

    ignored = {name: celery_app.conf[name] for name in IGNORED_BY_POOL[pool] if celery_app.conf[name] is not None}

    assert ignored == {}, f"the {pool} pool does nothing with these: put the deadline in the code"


def test_no_task_carries_a_time_limit_of_its_own():
    limits = {name: (celery_app.tasks[name].time_limit, celery_app.tasks[name].soft_time_limit) for name in OUR_TASKS}

    assert limits == dict.fromkeys(OUR_TASKS, (None, None))


def test_celery_s_threads_pool_still_ignores_time_limits():
    """Why celeryconfig sets none. Should Celery start enforcing them under threads, this fails,
    and a time limit could come back as a second line of defence."""
    # Given the pool the workers run, and a task that outlives both of its limits
    pool = get_implementation("threads")(limit=1)
    pool.start()
    outcomes: list[object] = []

    def outlives_its_limits() -> str:
        time.sleep(0.2)
        return "finished"

    # When the pool runs it with a soft and a hard limit far shorter than that
    try:
        pool.apply_async(outlives_its_limits, callback=outcomes.append, soft_timeout=0.01, timeout=0.02).wait(5)
    finally:
        pool.stop()

    # Then it ran to its end, interrupted by neither
    assert outcomes == ["finished"]


def test_the_delivery_task_goes_to_the_delivery_queue_and_every_other_task_to_maintenance():
    router = celery_app.amqp.router

    queues = {name: router.route({}, name)["queue"].name for name in OUR_TASKS}

    assert queues == {DELIVER_TASK: DELIVERY_QUEUE, DISPATCH_TASK: MAINTENANCE_QUEUE, PRUNE_TASK: MAINTENANCE_QUEUE}


def test_every_task_acks_late_and_keeps_no_result():
    behaviour = {name: (celery_app.tasks[name].acks_late, celery_app.tasks[name].ignore_result) for name in OUR_TASKS}

    assert behaviour == dict.fromkeys(OUR_TASKS, (True, True))


def test_beat_schedules_only_tasks_that_exist():
    scheduled = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}

    assert scheduled == {DISPATCH_TASK, PRUNE_TASK}
    assert scheduled <= set(celery_app.tasks)


def test_the_procfile_is_the_one_procfile_py_writes():
    assert (ROOT / "Procfile").read_text() == procfile.procfile_text(), (
        "regenerate it: .venv/bin/python -m scheduler_project.procfile > Procfile"
    )


def test_docker_compose_starts_the_procfile_s_workers():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    log_level = ["-l", procfile.LOG_LEVEL_FROM_ENV]

    # No node name for the delivery worker: each of its containers has a host name of its own.
    assert services["worker"]["command"] == [
        *procfile.CELERY,
        "worker",
        *procfile.delivery_worker_options(procfile.DELIVERY_WORKER_THREADS_FROM_ENV),
        *log_level,
    ]
    assert services["maintenance"]["command"] == [
        *procfile.CELERY,
        "worker",
        "-n",
        "maintenance@%h",
        *procfile.maintenance_worker_options(),
        *log_level,
    ]


def test_no_command_line_chooses_the_pool():
    """celeryconfig's worker_pool is the one that runs: a -P would have to agree with it."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command_lines = [*procfile.procfile_commands().values(), *(service.get("command", []) for service in compose.values())]

    assert [words for words in command_lines if "-P" in words or "--pool" in words] == []
