"""Fan-out between hub processes: one interface, backed by a ``litestar.channels`` backend.

The in-process default is ``MemoryChannelsBackend``; several replicas share rooms by
swapping in a Redis backend (selected by ``REDIS_URL``) without touching the callers.
Each process subscribes once per channel and dispatches to local handlers, so a room
with a thousand local sockets costs one subscription, not a thousand.

Channels: ``room:<id>`` (room traffic), ``user:<id>`` (direct messages),
``hub:control`` (hub-wide changes such as per-room plugin enablement).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend

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

    def __init__(self, backend: ChannelsBackend | None = None) -> None:
        self.backend = backend or MemoryChannelsBackend()
        self._handlers: dict[str, list[Handler]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._sub_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.backend.on_startup()
        self._reader = asyncio.create_task(self._read(), name="broker-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self.backend.on_shutdown()

    async def publish(self, channel: str, data: bytes) -> None:
        await self.backend.publish(data, [channel])

    async def subscribe(self, channel: str, handler: Handler) -> Callable[[], Awaitable[None]]:
        """Add a local handler; returns the coroutine function that removes it again."""
        async with self._sub_lock:
            handlers = self._handlers.setdefault(channel, [])
            if not handlers:
                await self.backend.subscribe([channel])
            handlers.append(handler)

        async def unsubscribe() -> None:
            async with self._sub_lock:
                current = self._handlers.get(channel, [])
                if handler in current:
                    current.remove(handler)
                if not current and channel in self._handlers:
                    del self._handlers[channel]
                    await self.backend.unsubscribe([channel])

        return unsubscribe

    async def _read(self) -> None:
        while True:
            try:
                async for channel, data in self.backend.stream_events():
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
