"""The record of calls a test receiver keeps, and the wait for them, shared by both receivers."""

from __future__ import annotations

import threading
import time
from typing import Generic, Protocol, TypeVar


class _Call(Protocol):
    @property
    def path(self) -> str: ...


CallT = TypeVar("CallT", bound=_Call)


class RecordedCalls(Generic[CallT]):
    """Every call recorded as it arrives; `_changed` also guards what a subclass keeps beside them."""

    def __init__(self) -> None:
        self.calls: list[CallT] = []
        self._changed = threading.Condition()

    def calls_to(self, path: str) -> list[CallT]:
        with self._changed:
            return [call for call in self.calls if call.path == path]

    def wait_for_calls(self, path: str, count: int, *, timeout: float) -> list[CallT]:
        """Waits until `count` calls reached `path`; returns what arrived by the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                calls = [call for call in self.calls if call.path == path]
                remaining = deadline - time.monotonic()
                if len(calls) >= count or remaining <= 0:
                    return calls
                self._changed.wait(remaining)

    def _record(self, call: CallT) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
