"""Shared state for plugins: small keys with a TTL, leases and plugin channels.

The same operations work on the embedded defaults (one process, in memory) and on Redis
(every replica sees the same keys, leases and messages), so a plugin that needs "one
replica does this" or "remember this for a minute" never touches a Redis client.

:class:`MemorySharedState` serves one process, :class:`RedisSharedState` every replica on
one Redis; ``Hub.shared`` is the one the hub runs on. Channels are the hub broker's, under
names of their own (``plugin:<channel>``), so a plugin never hears the hub's room traffic.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from hub.realtime.broker import Broker

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


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")


def _plugin_channel(channel: str) -> str:
    """Plugin channels live apart from the hub's own (``room:``, ``user:``, ``hub:``)."""
    if not channel:
        raise ValueError("a channel name must not be empty")
    return f"plugin:{channel}"


class _BrokerChannels:
    """Publish/subscribe on plugin channels through the hub's broker (one subscription per
    channel and process; on Redis it shares the broker's reconnect handling)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def publish(self, channel: str, data: bytes) -> None:
        await self._broker.publish(_plugin_channel(channel), data)

    async def subscribe(self, channel: str, handler: Callable[[bytes], None]) -> Unsubscribe:
        return await self._broker.subscribe(_plugin_channel(channel), handler)


class MemorySharedState(_BrokerChannels):
    """Shared state for one process (no Redis): dictionaries, TTLs checked on read.

    ``clock`` (monotonic seconds) is injectable so tests can move time on."""

    def __init__(self, broker: Broker, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(broker)
        self._clock = clock
        self._keys: dict[str, tuple[bytes, float | None]] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> bytes | None:
        found = self._keys.get(key)
        if found is None:
            return None
        value, expires = found
        if expires is not None and self._clock() >= expires:
            del self._keys[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        _check_ttl(ttl)
        if only_if_absent and self._live(key) is not None:
            return False
        self._keys[key] = (bytes(value), None if ttl is None else self._clock() + ttl)
        return True

    async def delete(self, key: str) -> None:
        self._keys.pop(key, None)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        _check_ttl(ttl)
        now = self._clock()
        current = self._leases.get(name)
        if current is not None and current[0] != holder and now < current[1]:
            return False
        self._leases[name] = (holder, now + ttl)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        current = self._leases.get(name)
        if current is not None and current[0] == holder:
            del self._leases[name]


_ACQUIRE = """
local current = redis.call('get', KEYS[1])
if current == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if current then
  return 0
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
"""Take a free lease, or renew one the holder has: one atomic step."""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
"""Delete a lease only if the caller holds it."""


class RedisSharedState(_BrokerChannels):
    """Shared state on Redis, seen by every replica with the same prefix.

    Keys are ``<prefix>:shared:<key>``, leases ``<prefix>:shared:lease:<name>``; channels
    go through the hub's broker (its pub/sub connection and reconnect handling)."""

    def __init__(self, redis: Redis, prefix: str, broker: Broker) -> None:
        super().__init__(broker)
        self._redis = redis
        self._prefix = f"{prefix}:shared:"
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _lease(self, name: str) -> str:
        return f"{self._prefix}lease:{name}"

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._key(key))
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode()  # a client made with decode_responses

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        _check_ttl(ttl)
        px = None if ttl is None else max(1, round(ttl * 1000))
        done = await self._redis.set(self._key(key), value, px=px, nx=only_if_absent)
        return bool(done)

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._key(key))

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        _check_ttl(ttl)
        px = max(1, round(ttl * 1000))
        return bool(await self._acquire(keys=[self._lease(name)], args=[holder, px]))

    async def release_lease(self, name: str, holder: str) -> None:
        await self._release(keys=[self._lease(name)], args=[holder])
