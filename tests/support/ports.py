"""A free TCP port on loopback, for a server a test starts (or for one nothing listens on)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just handed out and took back: free now, nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
