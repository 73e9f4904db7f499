"""Shared state for plugins: small keys with a TTL, leases and plugin channels.

The same operations work on the embedded defaults (one process, in memory) and on Redis
(every replica sees the same keys, leases and messages), so a plugin that needs "one
replica does this" or "remember this for a minute" never touches a Redis client.

(Contract declared here; the memory and Redis implementations follow.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Unsubscribe = Callable[[], Awaitable[None]]


class SharedState(Protocol):
    """Keys, leases and channels shared by every replica of one hub deployment.

    Names are free-form strings; the hub prefixes them (``REDIS_PREFIX``) so that two
    deployments on one Redis do not meet. Values are bytes: encode with msgspec."""

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if absent or expired."""
        ...

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        """Store ``value`` (expiring after ``ttl`` seconds if given). With
        ``only_if_absent``, store only if the key does not exist. True if stored."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        ...

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease ``name`` for ``holder`` for ``ttl`` seconds, or renew it if
        ``holder`` already holds it. False if another holder has it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease back if ``holder`` holds it (else nothing happens)."""
        ...

    async def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to every subscriber of ``channel`` on every replica."""
        ...

    async def subscribe(self, channel: str, handler: Callable[[bytes], None]) -> Unsubscribe:
        """Call ``handler`` with each message on ``channel``; returns the unsubscribe."""
        ...
