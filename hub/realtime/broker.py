"""Fan-out between hub processes: one interface, backed by a ``litestar.channels`` backend.

The in-process default is ``MemoryChannelsBackend``; several replicas share rooms by
swapping in a Redis backend (selected by ``REDIS_URL``) without touching the callers.
Each process subscribes once per channel and dispatches to local handlers, so a room
with a thousand local sockets costs one subscription, not a thousand.

Channels: ``room:<id>`` (room traffic), ``user:<id>`` (direct messages),
``hub:control`` (hub-wide changes such as per-room plugin enablement). On Redis each name is
sent as ``<redis_prefix>:ch:<name>``, so hubs with different prefixes can share one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis

log = logging.getLogger(__name__)

Handler = Callable[[bytes], None]
"""A local subscriber; called in the reader task, so it must not block."""


def room_channel(room_id: str) -> str:
    return f"room:{room_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


CONTROL_CHANNEL = "hub:control"


class Broker:
    """Publish bytes to named channels; deliver them to every local handler of that channel."""

    def __init__(
        self,
        backend: ChannelsBackend | None = None,
        redis: Redis | None = None,
        health_interval: float = 1.0,
        prefix: str = "",
    ) -> None:
        self.backend = backend or MemoryChannelsBackend()
        # the pub/sub backend ignores its key_prefix: the names it sees carry ours, so hubs
        # with different prefixes on one Redis never hear each other's rooms
        self._prefix = f"{prefix}:ch:" if prefix else ""
        self.redis = redis
        self.health_interval = health_interval
        self.connected = True
        self._handlers: dict[str, list[Handler]] = {}
        self._reconnect_callbacks: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sub_lock = asyncio.Lock()

    @classmethod
    def from_redis_url(cls, url: str, prefix: str = "lydian") -> Broker:
        """A broker on Redis pub/sub, shared by every replica that uses the same URL and prefix."""
        redis = Redis.from_url(url, health_check_interval=5, socket_connect_timeout=2)
        backend = RedisChannelsPubSubBackend(redis=redis, key_prefix=f"{prefix}:ch")
        return cls(backend, redis=redis, prefix=prefix)

    def _wire(self, channel: str) -> str:
        """The backend's name for ``channel``."""
        return self._prefix + channel

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` when the backend comes back after an outage (pub/sub lost messages)."""
        self._reconnect_callbacks.append(callback)

    async def start(self) -> None:
        await self.backend.on_startup()
        self._tasks.append(asyncio.create_task(self._read(), name="broker-reader"))
        if self.redis is not None:
            self._tasks.append(asyncio.create_task(self._watch(), name="broker-watchdog"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.backend.on_shutdown()
        if self.redis is not None:
            await self.redis.aclose()

    async def _watch(self) -> None:
        """Ping Redis; after an outage, tell the callbacks so rooms resync from the store."""
        assert self.redis is not None
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await asyncio.wait_for(self.redis.ping(), timeout=2)
            except Exception:
                if self.connected:
                    log.warning("Redis unreachable: rooms continue locally, resync when it is back")
                self.connected = False
                continue
            if not self.connected:
                self.connected = True
                log.warning("Redis is back: resubscribing and resyncing rooms from the store")
                await self._resubscribe()
                for callback in self._reconnect_callbacks:
                    try:
                        await callback()
                    except Exception:
                        log.exception("reconnect callback failed")

    async def _resubscribe(self) -> None:
        async with self._sub_lock:
            channels = [self._wire(c) for c in self._handlers]
            if channels:
                with contextlib.suppress(Exception):
                    await self.backend.subscribe(channels)

    async def publish(self, channel: str, data: bytes) -> None:
        await self.backend.publish(data, [self._wire(channel)])

    async def subscribe(self, channel: str, handler: Handler) -> Callable[[], Awaitable[None]]:
        """Add a local handler; returns the coroutine function that removes it again."""
        async with self._sub_lock:
            handlers = self._handlers.setdefault(channel, [])
            if not handlers:
                await self.backend.subscribe([self._wire(channel)])
            handlers.append(handler)

        async def unsubscribe() -> None:
            async with self._sub_lock:
                current = self._handlers.get(channel, [])
                if handler in current:
                    current.remove(handler)
                if not current and channel in self._handlers:
                    del self._handlers[channel]
                    await self.backend.unsubscribe([self._wire(channel)])

        return unsubscribe

    async def _read(self) -> None:
        while True:
            try:
                async for wire, data in self.backend.stream_events():
                    if not wire.startswith(self._prefix):
                        continue
                    channel = wire[len(self._prefix) :]
                    for handler in tuple(self._handlers.get(channel, ())):
                        try:
                            handler(data)
                        except Exception:
                            log.exception("broker handler for %s failed", channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # backend hiccup (e.g. Redis restart): keep reading
                log.warning("broker stream failed; retrying in 0.5 s", exc_info=True)
                await asyncio.sleep(0.5)
