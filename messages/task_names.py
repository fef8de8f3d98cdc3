"""The names Celery knows our tasks and queues by, written once for the tasks, celeryconfig, the
code that enqueues, the worker command lines (scheduler_project/procfile.py) and the tests."""

DELIVER_TASK = "messages.tasks.deliver_messages"
DISPATCH_TASK = "messages.tasks.dispatch_due_messages"
PRUNE_TASK = "messages.tasks.prune_delivery_history"

# Deliveries have a consumer of their own; beat's ticks and the prune go to the maintenance
# one, so that they never wait behind deliveries, however slow the receivers.
DELIVERY_QUEUE = "deliveries"
MAINTENANCE_QUEUE = "maintenance"
