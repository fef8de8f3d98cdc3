"""Every key the scheduler keeps in Redis besides Celery's queue (task ids, the heartbeat, the
broker epoch, the dispatch lock; rate windows, metrics and the health report use its prefix and
clients), and the clients that read them.

Nothing here is needed for correctness: the database decides what is sent. These keys make
cancelling cheaper (revoke), health honest (heartbeat) and recovery fast (the broker epoch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler_project.celery import app as celery_app

logger = logging.getLogger(__name__)

KEY_PREFIX = "scheduler:"
# By row id: client ids are only unique per owner.
TASK_ID_KEY = KEY_PREFIX + "task:{message_pk}"
HEARTBEAT_KEY = KEY_PREFIX + "heartbeat"
# Written once and never expired: when it is missing, Redis lost its data (restart, FLUSHALL).
BROKER_EPOCH_KEY = KEY_PREFIX + "broker-epoch"
DISPATCH_LOCK_KEY = KEY_PREFIX + "dispatch-lock"
# What redis-py raises for a Redis that is down, full, read-only or too slow.
REDIS_ERRORS = (redis.RedisError, OSError)
# The request limiters' longest wait for Redis (to connect, then for each answer): every API
# request waits on them, and a count in Redis answers in about a millisecond.
LIMITER_REDIS_TIMEOUT_SECONDS = 0.25


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30)


@cache
def limiter_redis_client() -> redis.Redis:
    """For rate_windows: a Redis that hangs costs one request a quarter of a second, not the 5 s
    and the retries of redis_client, and rate_windows then leaves it alone for a while. No retry:
    a failed count falls back to this process's own."""
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=LIMITER_REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=LIMITER_REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


def as_text(value: bytes | str) -> str:
    """redis-py types a reply as bytes or str; these clients (no decode_responses) get bytes."""
    return value.decode() if isinstance(value, bytes) else value


def remember_task_id(message_pk: int, task_id: str, *, ttl_seconds: int) -> None:
    """Best effort, as revoke_task_of: it runs after the message's commit, where an exception
    would fail a POST whose message is stored (and its retry get 409). Without the id a cancel
    cannot revoke the task, which then finds the row gone and sends nothing."""
    try:
        redis_client().set(TASK_ID_KEY.format(message_pk=message_pk), task_id, ex=ttl_seconds)
    except REDIS_ERRORS as error:
        logger.warning("task id of message %s not kept, its task cannot be revoked: %s", message_pk, error)


def revoke_task_of(message_pk: int) -> None:
    """Best effort: the claim in the database is what stops a cancelled message."""
    try:
        task_id = redis_client().getdel(TASK_ID_KEY.format(message_pk=message_pk))
        if task_id:
            celery_app.control.revoke(as_text(task_id))
    except REDIS_ERRORS as error:
        logger.warning("revoke skipped for message %s: %s", message_pk, error)


def task_id_of(message_pk: int) -> str | None:
    """The id of the lone task queued for it, if known (best effort: None when Redis is away)."""
    try:
        task_id = redis_client().get(TASK_ID_KEY.format(message_pk=message_pk))
    except REDIS_ERRORS as error:
        logger.warning("task id of message %s not read: %s", message_pk, error)
        return None
    return None if task_id is None else as_text(task_id)


def revoke_task(message_pk: int, task_id: str) -> None:
    """Revokes that task, and forgets its id unless another task's has replaced it meanwhile
    (beat may queue the message again as soon as its change commits). Best effort."""
    try:
        celery_app.control.revoke(task_id)
        client = redis_client()
        key = TASK_ID_KEY.format(message_pk=message_pk)
        if client.get(key) == task_id.encode():
            client.delete(key)  # a new id written between the two is left: it expires with its TTL
    except REDIS_ERRORS as error:
        logger.warning("revoke skipped for message %s: %s", message_pk, error)


CLOCK_SKEW_KEY = KEY_PREFIX + "worker-clock-skew"


def record_heartbeat(*, clock_skew_seconds: float) -> None:
    pipe = redis_client().pipeline(transaction=False)
    pipe.set(HEARTBEAT_KEY, repr(time.time()), ex=24 * 3600)
    pipe.set(CLOCK_SKEW_KEY, repr(clock_skew_seconds), ex=24 * 3600)
    pipe.execute()


def last_worker_clock_skew() -> float | None:
    value = redis_client().get(CLOCK_SKEW_KEY)
    return None if value is None else float(value)


def seconds_since_heartbeat() -> float | None:
    value = redis_client().get(HEARTBEAT_KEY)
    return None if value is None else time.time() - float(value)


def broker_lost_its_data() -> bool:
    """True once after Redis came back empty; marks the new epoch at the same time."""
    return bool(redis_client().set(BROKER_EPOCH_KEY, repr(time.time()), nx=True))


@contextmanager
def dispatch_lock(*, ttl_seconds: float) -> Iterator[bool]:
    """Keeps two beats' dispatch runs from overlapping; yields False when another holds it."""
    client = redis_client()
    token = repr(time.time())
    acquired = bool(client.set(DISPATCH_LOCK_KEY, token, nx=True, px=int(ttl_seconds * 1000)))
    try:
        yield acquired
    finally:
        if acquired and client.get(DISPATCH_LOCK_KEY) == token.encode():
            client.delete(DISPATCH_LOCK_KEY)
