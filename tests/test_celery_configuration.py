"""celeryconfig.py is true: nothing in it that the pool in use ignores, routing and acks as the
design says, and the Procfile and docker-compose.yml start the workers scheduler_project/procfile.py
describes (neither file can import the names, so they are checked here)."""

from __future__ import annotations

import inspect
import time
from types import SimpleNamespace
from typing import TypeVar

import pytest
import yaml
from celery.concurrency import get_implementation
from celery.fixups.django import DjangoWorkerFixup  # type: ignore[attr-defined]  # not in the stubs
from celery.signals import task_postrun, task_prerun
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

import celeryconfig
import messages.tasks  # noqa: F401 - registers the tasks, as the worker's autodiscovery does
from messages.task_names import DELIVER_TASK, DELIVERY_QUEUE, DISPATCH_TASK, MAINTENANCE_QUEUE, PRUNE_TASK
from scheduler_project import broker_transport, procfile
from scheduler_project.celery import app as celery_app
from scheduler_project.celery import close_obsolete_database_connections
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


# --- scheduler_project/broker_transport.py: the repair of kombu's Redis channel ------------------


def test_the_broker_connection_uses_the_repaired_transport():
    transport = celery_app.connection_for_write().transport

    assert isinstance(transport, broker_transport.Transport)
    assert transport.Channel is broker_transport.Channel


def test_kombu_s_redis_channel_still_has_the_connparams_the_repair_overrides():
    assert "_connparams" in vars(kombu_redis.Channel), (
        "kombu.transport.redis.Channel no longer defines _connparams: scheduler_project/broker_transport.py "
        "repairs a method kombu no longer calls"
    )
    kombu_s = inspect.signature(vars(kombu_redis.Channel)["_connparams"])
    ours = inspect.signature(broker_transport.Channel._connparams)
    assert list(kombu_s.parameters) == list(ours.parameters) == ["self", "asynchronous"], (
        f"kombu.transport.redis.Channel._connparams is now {kombu_s}; broker_transport.Channel overrides {ours}"
    )
    assert kombu_s.parameters["asynchronous"].default is False


ChannelT = TypeVar("ChannelT", bound=kombu_redis.Channel)


def channel_whose_connection_is_gone(channel_class: type[ChannelT]) -> ChannelT:
    """A channel as kombu leaves it when the broker connection dropped: its transport's client is None."""
    channel = channel_class.__new__(channel_class)  # no __init__: it would connect to Redis
    channel.connection = SimpleNamespace(client=None, default_port=6379)  # type: ignore[assignment]  # only .client is read
    return channel


def test_the_repaired_channel_raises_a_connection_error_when_the_broker_connection_is_gone():
    # Given a channel whose broker connection is already closed
    channel = channel_whose_connection_is_gone(broker_transport.Channel)

    # When kombu asks it for connection parameters (restoring unacked tasks on close)
    # Then it raises the connection error Celery recovers from
    with pytest.raises(RedisConnectionError, match="already closed"):
        channel._connparams()
    with pytest.raises(RedisConnectionError):
        channel._connparams(asynchronous=True)
    assert issubclass(RedisConnectionError, broker_transport.Transport.connection_errors), (
        "kombu's Redis Transport.connection_errors no longer includes redis' ConnectionError: Celery would not "
        "reconnect on the error the repair raises"
    )


def test_kombu_still_fails_a_gone_connection_with_attribute_error():
    """What the repair is for. Should kombu handle a closed connection itself, this fails, and the
    repair may go (once test_faults_redis_emptied.py's Redis restart passes without it)."""
    channel = channel_whose_connection_is_gone(kombu_redis.Channel)

    with pytest.raises(AttributeError, match="hostname"):
        vars(kombu_redis.Channel)["_connparams"](channel)


# --- CELERY_DB_REUSE_MAX and Celery's Django fixup ---------------------------------------------------


def a_task_the_worker_runs() -> SimpleNamespace:
    """What the fixup's task signals look at: the sender's request, not run eagerly."""
    return SimpleNamespace(request=SimpleNamespace(is_eager=False))


def test_celery_s_django_fixup_reads_celery_db_reuse_max_from_celeryconfig():
    assert "celery.fixups.django:fixup" in celery_app.fixups, (  # type: ignore[attr-defined]  # not in the stubs
        "Celery no longer installs its Django fixup"
    )

    fixup = DjangoWorkerFixup(celery_app)

    assert fixup.db_reuse_max == celeryconfig.CELERY_DB_REUSE_MAX == 1_000_000, (
        "celery.fixups.django.DjangoWorkerFixup no longer reads CELERY_DB_REUSE_MAX from app.conf as "
        f"celeryconfig sets it (it read {fixup.db_reuse_max!r})"
    )


def test_with_celery_db_reuse_max_the_fixup_closes_no_connection_around_tasks(monkeypatch):
    # Given the worker's fixup, its closing of every connection watched
    fixup = DjangoWorkerFixup(celery_app)
    closed: list[None] = []
    monkeypatch.setattr(fixup, "_close_database", lambda: closed.append(None))
    monkeypatch.setattr(fixup, "close_cache", lambda: None)

    # When a thousand tasks run
    for _ in range(1000):
        fixup.on_task_prerun(sender=a_task_the_worker_runs())
        fixup.on_task_postrun(sender=a_task_the_worker_runs())

    # Then it closed none of the connections (scheduler_project/celery.py closes the obsolete ones)
    assert closed == [], (
        "celery.fixups.django.DjangoWorkerFixup.close_database now closes the database connections around tasks "
        "despite CELERY_DB_REUSE_MAX: every task reconnects"
    )


def test_without_celery_db_reuse_max_the_fixup_closes_every_connection_around_every_task(monkeypatch):
    """Why celeryconfig sets it. Should Celery stop closing connections by default, this fails, and
    the setting may go."""
    # Given the fixup as Celery's default configures it
    monkeypatch.setitem(celery_app.conf, "CELERY_DB_REUSE_MAX", None)  # Celery's default
    fixup = DjangoWorkerFixup(celery_app)
    closed: list[None] = []
    monkeypatch.setattr(fixup, "_close_database", lambda: closed.append(None))
    monkeypatch.setattr(fixup, "close_cache", lambda: None)

    # When three tasks run
    for _ in range(3):
        fixup.on_task_prerun(sender=a_task_the_worker_runs())
        fixup.on_task_postrun(sender=a_task_the_worker_runs())

    # Then it closed the connections before and after each
    assert fixup.db_reuse_max is None
    assert len(closed) == 6, f"Celery's Django fixup now closes connections {len(closed)} times in 3 tasks, not 6"


def test_only_obsolete_connections_are_closed_around_every_task():
    receivers = {signal: [receiver() for _, receiver in signal.receivers] for signal in (task_prerun, task_postrun)}

    assert all(close_obsolete_database_connections in found for found in receivers.values())
