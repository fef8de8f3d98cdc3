"""Named waits for tests on real processes: until something holds, or that nothing more arrives.

Neither sleeps for a fixed time to stand in for a condition: `wait_until` returns as soon as its
condition holds, `nothing_more_arrives` fails as soon as what it watches changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

Observed = TypeVar("Observed")


def wait_until(condition: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    """Returns once `condition()` is true; raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(interval)


def nothing_more_arrives(
    observe: Callable[[], Observed], *, within: float, interval: float = 0.05, what: str = "anything more"
) -> Observed:
    """Asserts that what `observe()` returns (a receiver's calls, a count) stays as it is for
    `within` seconds: no duplicate, no late call. Fails at the first change; returns the value.

    The one wait that must last its whole time: "nothing arrives" cannot be seen sooner.
    """
    seen = observe()
    deadline = time.monotonic() + within
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(interval, remaining))
        now = observe()
        if now != seen:
            raise AssertionError(f"{what} arrived within {within} s: {_described(seen)}, then {_described(now)}")
    return seen


def _described(value: object) -> str:
    return f"{len(value)} items" if isinstance(value, list | tuple | dict | set) else repr(value)
