"""This process's authenticated sockets: by id and by user, direct messages on user channels,
heartbeats, and the goodbye at shutdown.

A DM is published on each user's channel (``user:<id>``) as a :class:`DirectEnvelope`; every
process with a socket of that user delivers it to those of its sockets that have not joined
the DM room (the room's own fan-out reaches the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import msgspec

from hub.base.protocol import CloseCode, Ping, Reconnect, encode
from hub.realtime.broker import Broker, user_channel
from hub.realtime.connection import Connection
from hub.realtime.rooms import RoomRegistry

log = logging.getLogger(__name__)


class DirectEnvelope(msgspec.Struct):
    """A DM on a user channel: the encoded message frame and the DM room it belongs to."""

    room: str
    frame: msgspec.Raw


_direct_encoder = msgspec.json.Encoder()
_direct_decoder = msgspec.json.Decoder(DirectEnvelope)


class Sockets:
    """The authenticated sockets of one process."""

    def __init__(
        self,
        broker: Broker,
        rooms: RoomRegistry,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        retry_after: float,
    ) -> None:
        """``retry_after``: the reconnect hint's seconds at shutdown (plus client jitter)."""
        self.broker = broker
        self.rooms = rooms
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.retry_after = retry_after
        self.connections: dict[str, Connection] = {}
        self._by_user: dict[str, set[Connection]] = {}
        self._user_unsub: dict[str, Callable[[], Awaitable[None]]] = {}
        self._drained: asyncio.Event | None = None  # while saying goodbye (shutdown)

    async def register(self, conn: Connection) -> None:
        """Track an authenticated connection and subscribe its user channel (DMs)."""
        assert conn.user is not None
        self.connections[conn.id] = conn
        user_id = conn.user.id
        conns = self._by_user.setdefault(user_id, set())
        conns.add(conn)
        if user_id not in self._user_unsub:
            self._user_unsub[user_id] = await self.broker.subscribe(
                user_channel(user_id), functools.partial(self._to_user, user_id)
            )

    async def unregister(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        if not self.connections and self._drained is not None:
            self._drained.set()
        if conn.user is None:
            return
        await self.rooms.leave_all(conn)
        conns = self._by_user.get(conn.user.id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[conn.user.id]
                unsub = self._user_unsub.pop(conn.user.id, None)
                if unsub is not None:
                    await unsub()

    async def publish_direct(self, room: str, frame: bytes, user_ids: Iterable[str]) -> None:
        """Publish an encoded DM frame of ``room`` on each of ``user_ids``' channels."""
        data = _direct_encoder.encode(DirectEnvelope(room=room, frame=msgspec.Raw(frame)))
        for user_id in user_ids:
            await self.broker.publish(user_channel(user_id), data)

    def _to_user(self, user_id: str, data: bytes) -> None:
        """A DM for ``user_id``: to each of their sockets not in the DM room (it has it)."""
        env = _direct_decoder.decode(data)
        text = bytes(env.frame).decode()
        for conn in tuple(self._by_user.get(user_id, ())):
            if env.room not in conn.rooms:
                conn.push(text)

    async def sweep(self) -> None:
        """Ping every connection each interval; close those silent for ``heartbeat_timeout``.

        (Sockets that never say hello are closed by their own auth timer in the gateway.)"""
        ping = encode(Ping()).decode()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            now = time.monotonic()
            for conn in tuple(self.connections.values()):
                if now - conn.last_seen > self.heartbeat_timeout:
                    log.info("dropping %s: silent for %.1f s", conn.id, now - conn.last_seen)
                    conn.close(CloseCode.HEARTBEAT_TIMEOUT)
                else:
                    conn.push(ping)

    async def goodbye(self, grace: float = 0.0) -> int:
        """Tell every socket to reconnect elsewhere (``reconnect``, then close 1001) and wait
        up to ``grace`` seconds for the frames to flush; return how many sockets were told."""
        conns = list(self.connections.values())
        hint = Reconnect(reason="shutdown", retry_after=self.retry_after)
        for conn in conns:
            if conn.close_code is None:
                conn.send(hint)
                conn.close(CloseCode.GOING_AWAY)
        if self.connections and grace > 0:
            self._drained = asyncio.Event()  # set by unregister once none is left
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        return len(conns)
