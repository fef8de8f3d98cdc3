"""A free TCP port on loopback, for a server a test starts (or for one nothing listens on): the
one the launcher picks for its own Redis."""

from __future__ import annotations

from scripts.embedded_redis import free_port

__all__ = ["free_port"]
