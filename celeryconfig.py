"""The one Celery configuration: JSON only, UTC, late acks, the threads pool, a delivery queue
apart from maintenance. scheduler_project/celery.py only loads it; names are messages/task_names.py's."""

import ssl

from django.conf import settings

from messages.task_names import DELIVER_TASK, DELIVERY_QUEUE, DISPATCH_TASK, MAINTENANCE_QUEUE, PRUNE_TASK

broker_url = settings.REDIS_URL
# kombu's Redis transport, repaired so that a Redis restart does not kill the worker.
broker_transport = "scheduler_project.broker_transport:Transport"
if broker_url.startswith("rediss://"):
    # A named transport class bypasses kombu's rediss:// detection; verify certificates.
    broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
# Tasks never exceed the horizon (minutes), far below this: no eta task is handed out twice.
# Socket timeouts: kombu waits for ever by default, and a half-open Redis would then hold the
# worker's recorder (which publishes imminent retries) for good. Above BRPOP's 1 s poll.
broker_transport_options = {
    "visibility_timeout": settings.BROKER_VISIBILITY_TIMEOUT_SECONDS,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
}
broker_connection_retry_on_startup = True
# A POST must not hang when Redis is down: the message is stored and beat enqueues it later.
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True
task_ignore_result = True
result_backend = None

# Every task but the delivery one (beat's ticks, the prune) goes to the maintenance consumer.
task_default_queue = MAINTENANCE_QUEUE
task_routes = {DELIVER_TASK: {"queue": DELIVERY_QUEUE}}
# Safe because delivery is idempotent: a redelivered task finds its messages claimed or done.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Threads: a delivery task only claims its messages; the calls run on the process's asyncio loop.
# The pool is set here, on no command line (scheduler_project/procfile.py builds those).
worker_pool = "threads"
# No task_soft_time_limit / task_time_limit: the threads pool ignores them (its on_apply drops
# the timeouts; tests/test_celery_configuration.py checks that it still does). The deadlines are
# in the code instead: every webhook call has its own (messages/webhook_client.py:
# aiohttp.ClientTimeout(total=timeoutSeconds), at most TIMEOUT_SECONDS_MAX), the worker's
# records and renewals run in delivery.bounded_transaction (DELIVERY_DATABASE_TIMEOUT_SECONDS a
# statement) and retry for DELIVERY_RECORD_RETRY_SECONDS at most, and Redis has the socket
# timeouts above. A delivery task only claims and hands over to the delivery engine; it waits
# for room in the byte budget only while calls, each under its own deadline, end.
worker_hijack_root_logger = False
# Celery's Django fixup closes every database connection before and after every task unless
# this is set; scheduler_project/celery.py closes only obsolete or broken ones instead
# (CONN_MAX_AGE, CONN_HEALTH_CHECKS). Reconnecting per task costs the worker CPU
# at steady load, where tasks are small (docs/benchmarks.md).
CELERY_DB_REUSE_MAX = 1_000_000
worker_send_task_events = True
task_send_sent_event = True

beat_schedule = {
    "dispatch-due-messages": {
        "task": DISPATCH_TASK,
        "schedule": settings.SCHEDULER_POLL_SECONDS,
        # A tick nobody ran in time is worthless: the next one does the same work.
        "options": {"expires": settings.SCHEDULER_POLL_SECONDS * 3},
    },
    "prune-delivery-history": {
        "task": PRUNE_TASK,
        "schedule": 3600.0,
        "options": {"expires": 3000},
    },
}
