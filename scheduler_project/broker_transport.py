"""kombu's Redis transport with one repair: a worker holding eta tasks survives a Redis restart.

When the connection drops while the worker holds unacknowledged (eta) tasks, kombu closes the
channel and tries to push those tasks back to Redis through a connection that is already gone;
`_connparams` then fails with AttributeError ('NoneType' object has no attribute 'hostname'),
which Celery does not expect, and the worker exits with "Unrecoverable error". Raising the
connection error it really is lets Celery reconnect as usual. The tasks it could not push back
are not lost: the database still has their messages and the dispatcher enqueues them again.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]  # private: not in kombu-stubs


class Transport(kombu_redis.Transport):
    Channel = Channel
