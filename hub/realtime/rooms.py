"""Live rooms in this process: ordered fan-out to local sockets, replay on join, typing.

Every process keeps one :class:`LiveRoom` per room that has local subscribers (sockets, or
in-process consumers such as the bridge, see :meth:`RoomRegistry.follow` and
:class:`Follower`). It holds
one broker subscription and delivers room messages to its sockets **in offset order,
each once**: an offset that arrives early waits in ``pending`` (filled from the store
if the gap does not close by itself), one already delivered is dropped. A socket
joining with ``since`` gets the stored messages after that offset, then whatever went
live meanwhile, without a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from hub.base.protocol import (
    ChatMessage,
    Joined,
    MessageFrame,
    StreamSnapshot,
    TypingFrame,
    UserRef,
    encode,
)
from hub.realtime.broker import Broker, room_channel
from hub.realtime.connection import Connection
from hub.realtime.stream_state import STREAM_PREFIX, StreamSnapshots

if TYPE_CHECKING:
    from hub.realtime.presence import Presence
    from hub.store.store import Store

log = logging.getLogger(__name__)

GAP_WAIT = 0.05
"""Seconds an out-of-order offset waits for the missing ones before the store is asked."""

REPLAY_PAGE = 200
"""Messages read from the store at once when a :class:`Follower` catches up."""

REPLAY_RETRY = 1.0
"""Seconds a :class:`Follower` waits before reading the store again after it failed."""

MISSED = None
"""What :meth:`Follower.frames` yields instead of a frame's text when frames were dropped."""


class Envelope(msgspec.Struct, omit_defaults=True):
    """What travels on a room channel: an encoded server frame, plus its offset if a message."""

    frame: msgspec.Raw
    offset: int = 0


_envelope_decoder = msgspec.json.Decoder(Envelope)


def envelope(frame_bytes: bytes, offset: int = 0) -> bytes:
    return encode_envelope(Envelope(frame=msgspec.Raw(frame_bytes), offset=offset))


encode_envelope = msgspec.json.Encoder().encode


class _Subscriber:
    """A socket in a room; ``backlog`` is not None while its replay is being sent."""

    __slots__ = ("backlog", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.backlog: list[tuple[int, str]] | None = []


class LiveRoom:
    """The local end of one room's channel."""

    def __init__(self, room_id: str, store: Store) -> None:
        self.id = room_id
        self._store = store
        self.subscribers: dict[str, _Subscriber] = {}
        self.consumers: dict[int, Follower] = {}  # in-process followers (Hub.subscribe)
        self.delivered: int | None = None  # highest offset fanned out; None while starting
        self._pending: dict[int, str] = {}
        self._gap_task: asyncio.Task[None] | None = None
        self.unsubscribe: Callable[[], Awaitable[None]] | None = None
        self.typing: dict[str, asyncio.TimerHandle] = {}
        self.streams = StreamSnapshots(room_id)  # answers streaming now, for mid-stream joins

    # ------------------------------------------------------------ broker side

    def on_event(self, data: bytes) -> None:
        """Broker callback: order messages by offset, pass other events straight through."""
        env = _envelope_decoder.decode(data)
        text = bytes(env.frame).decode()
        if env.offset == 0:
            if text.startswith(STREAM_PREFIX):  # held back, passed on, or seeded
                for frame in self.streams.apply(text):
                    self._fan_out(0, frame)
                return
            self._fan_out(0, text)
            return
        self._hold(env.offset, text)
        self._drain()

    def start(self, latest: int) -> None:
        """Begin delivering after ``latest`` (read from the store after subscribing)."""
        self.delivered = latest
        for offset in [o for o in self._pending if o <= latest]:
            del self._pending[offset]
        self._drain()

    def _hold(self, offset: int, text: str) -> None:
        """Keep a message until its turn. The invariant of ``_pending``: once delivering has
        begun, it holds only offsets above ``delivered`` (earlier ones were fanned out)."""
        if self.delivered is None or offset > self.delivered:
            self._pending.setdefault(offset, text)

    def _drain(self) -> None:
        """Fan out every held message that is next in line; start a filler for a gap."""
        if self.delivered is None:
            return
        while (text := self._pending.pop(self.delivered + 1, None)) is not None:
            self.delivered += 1
            self._fan_out(self.delivered, text)
        if self._pending and (self._gap_task is None or self._gap_task.done()):
            self._gap_task = asyncio.create_task(self._fill_gap(), name=f"gap:{self.id}")

    async def _fill_gap(self) -> None:
        """Read the missing offsets from the store until no gap is left, then stop.

        After :meth:`_drain`, a non-empty ``_pending`` is exactly a gap: its offsets are all
        above ``delivered + 1``. What the store returns goes through :meth:`_hold` after the
        read, so offsets delivered meanwhile (the gap closed by itself) are dropped, and
        the count asked for is always at least 1.
        """
        await asyncio.sleep(GAP_WAIT)  # most gaps close by themselves (broker reordering)
        while self._pending and self.delivered is not None:
            count = max(self._pending) - self.delivered - 1  # offsets between: the gap
            try:
                missing = await self._store.messages_after(self.id, self.delivered, count)
            except Exception as exc:  # database away: keep what is held, try again later
                log.warning("gap fill in %s failed: %s", self.id, exc)
                missing = []
            for message in missing:
                self._hold(message.offset, encode(MessageFrame(message)).decode())
            before = self.delivered
            self._drain()
            if self._pending and self.delivered == before:  # store behind too: wait a little
                await asyncio.sleep(GAP_WAIT)

    def _fan_out(self, offset: int, text: str) -> None:
        for sub in tuple(self.subscribers.values()):
            if sub.backlog is None:
                sub.conn.push(text)
            elif len(sub.backlog) < sub.conn.limit:
                sub.backlog.append((offset, text))
            else:  # the replay is too slow to keep up with the room: bounded like its queue
                sub.backlog.clear()
                sub.conn.too_slow(f"{sub.conn.limit} live frames waiting behind its replay")
        for follower in tuple(self.consumers.values()):
            follower.push(offset, text)  # never blocks, never raises: a bounded queue

    @property
    def idle(self) -> bool:
        """No socket and no in-process consumer follows the room any more."""
        return not self.subscribers and not self.consumers

    # ------------------------------------------------------------ socket side

    def add(self, conn: Connection) -> _Subscriber:
        sub = _Subscriber(conn)
        self.subscribers[conn.id] = sub
        return sub

    def go_live(self, sub: _Subscriber, cursor: int) -> None:
        """Send what went live during replay (offsets after ``cursor``), then stream live."""
        backlog, sub.backlog = sub.backlog or [], None
        for offset, text in backlog:
            if offset == 0 or offset > cursor:
                sub.conn.push(text)


class RoomRegistry:
    """The live rooms of this process, created on first join and dropped on last leave."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        presence: Presence,
        *,
        max_replay: int,
        typing_ttl: float,
    ) -> None:
        self.store = store
        self.broker = broker
        self.presence = presence
        self.max_replay = max_replay
        self.typing_ttl = typing_ttl
        self.live: dict[str, LiveRoom] = {}
        self._lock = asyncio.Lock()
        self._consumer_ids = itertools.count(1)
        self.slow_consumers: Counter[str] = Counter()
        """Consumers this process dropped for falling behind, by kind (``socket``, ``sse``,
        ``subscriber``); shown by ``/healthz``."""
        self.stream_source: Callable[[str], list[StreamSnapshot]] | None = None

    async def _live(self, room_id: str) -> LiveRoom:
        async with self._lock:
            room = self.live.get(room_id)
            if room is None:
                room = LiveRoom(room_id, self.store)
                room.unsubscribe = await self.broker.subscribe(room_channel(room_id), room.on_event)
                if self.stream_source is not None:  # streams this process runs, begun earlier
                    room.streams.seed(self.stream_source(room_id))
                room.start(await self.store.latest_offset(room_id))
                self.live[room_id] = room
            return room

    async def join(
        self,
        conn: Connection,
        room_id: str,
        name: str,
        epoch: str,
        since: int | None,
        client_epoch: str | None,
        ref: str | None,
    ) -> None:
        """Subscribe ``conn``; send ``joined``, the replay after ``since``, then live frames."""
        assert conn.user is not None
        room = await self._live(room_id)
        room.subscribers.pop(conn.id, None)  # a re-join replays afresh; presence is unchanged
        sub = room.add(conn)  # from here on, live frames collect in its backlog
        snapshots = room.streams.list()  # same instant: later deltas are in the backlog
        latest = room.delivered or 0  # read with no await since add(): backlog holds the rest
        conn.rooms.add(room_id)
        if await self.presence.connect(room_id, conn.user, conn.id):
            await self.publish_presence(room_id, conn.user, "online")
        recovered = True
        replay: list[ChatMessage] = []
        cursor = latest
        if since is not None:
            if (
                (client_epoch is not None and client_epoch != epoch)
                or since > latest
                or latest - since > self.max_replay
            ):
                recovered = False
            elif latest > since:
                replay = await self.store.messages_after(room_id, since, latest - since)
                cursor = replay[-1].offset if replay else since
        conn.send(
            Joined(
                room=room_id,
                name=name,
                offset=latest,
                epoch=epoch,
                presence=await self.presence.snapshot(room_id),
                recovered=recovered,
                replayed=len(replay),
                streams=snapshots,
                id=ref,
            )
        )
        room_for = max(1, conn.limit // 2)  # paced: a long replay never fills the queue
        for message in replay:
            if conn.queued_frames >= room_for:
                await conn.wait_for_room(room_for)
            if conn.close_code is not None:
                break
            conn.send(MessageFrame(message))
        room.go_live(sub, cursor)

    async def leave(self, conn: Connection, room_id: str, announce: bool = True) -> None:
        room = self.live.get(room_id)
        conn.rooms.discard(room_id)
        if room is None or room.subscribers.pop(conn.id, None) is None:
            return
        assert conn.user is not None
        if await self.presence.disconnect(room_id, conn.user.id, conn.id) and announce:
            self.stop_typing(room_id, conn.user)
            await self.publish_presence(room_id, conn.user, "offline")
        await self._drop_if_idle(room)

    async def _drop_if_idle(self, room: LiveRoom) -> None:
        async with self._lock:
            if room.idle and self.live.get(room.id) is room:
                del self.live[room.id]
                if room.unsubscribe is not None:
                    await room.unsubscribe()

    async def follow(self, room_id: str, limit: int) -> Follower:
        """A bounded queue of the room's frames from now on, in offset order and gap-filled
        like a socket (see :class:`Follower`); ``await follower.stop()`` ends it."""
        if limit < 1:
            raise ValueError(f"a follower's queue holds at least 1 frame, not {limit}")
        room = await self._live(room_id)
        key = next(self._consumer_ids)

        async def stop() -> None:
            if room.consumers.pop(key, None) is not None:
                await self._drop_if_idle(room)

        follower = Follower(room, self.store, limit, self.slow_consumers, stop)
        room.consumers[key] = follower
        return follower

    async def leave_all(self, conn: Connection) -> None:
        for room_id in list(conn.rooms):
            await self.leave(conn, room_id)

    def is_joined(self, conn: Connection, room_id: str) -> bool:
        return room_id in conn.rooms

    # ------------------------------------------------------------ publishing

    async def publish_message(self, message: ChatMessage) -> None:
        """Publish a committed message on its room channel.

        If the broker is unreachable the message is still committed: local sockets get it at
        once, and other replicas catch up from the store (gap fill, or resync on reconnect).
        """
        data = envelope(encode(MessageFrame(message)), message.offset)
        try:
            await self.broker.publish(room_channel(message.room), data)
        except Exception:
            log.warning(
                "broker publish failed for %s@%d; delivering locally", message.room, message.offset
            )
            room = self.live.get(message.room)
            if room is not None:
                room.on_event(data)

    async def resync(self) -> None:
        """Deliver from the store whatever each live room missed (after a broker outage)."""
        for room in list(self.live.values()):
            if room.delivered is None:
                continue
            missed = await self.store.messages_after(room.id, room.delivered, self.max_replay)
            for message in missed:
                room.on_event(envelope(encode(MessageFrame(message)), message.offset))

    async def publish_event(self, room_id: str, frame_bytes: bytes) -> None:
        """Publish an unordered room event (presence, typing, stream frames, announcements).

        Events are not persisted: during a broker outage only local sockets get them.
        """
        data = envelope(frame_bytes)
        try:
            await self.broker.publish(room_channel(room_id), data)
        except Exception:
            room = self.live.get(room_id)
            if room is not None:
                room.on_event(data)

    async def publish_presence(self, room_id: str, user: UserRef, status: str) -> None:
        from hub.base.protocol import PresenceFrame

        await self.publish_event(
            room_id, encode(PresenceFrame(room=room_id, user=user, status=status))
        )

    # ------------------------------------------------------------ typing

    def typing(self, room_id: str, user: UserRef, active: bool) -> None:
        """Start (or renew) or stop ``user`` typing; a start expires by itself after the TTL."""
        room = self.live.get(room_id)
        if room is None:
            return
        handle = room.typing.pop(user.id, None)
        if handle is not None:
            handle.cancel()
        if active:
            loop = asyncio.get_running_loop()
            room.typing[user.id] = loop.call_later(self.typing_ttl, self.stop_typing, room_id, user)
            if handle is None:
                self._publish_typing(room_id, user, True)
        elif handle is not None:
            self._publish_typing(room_id, user, False)

    def stop_typing(self, room_id: str, user: UserRef) -> None:
        room = self.live.get(room_id)
        handle = room.typing.pop(user.id, None) if room else None
        if handle is not None:  # also reached from the expiry timer itself
            handle.cancel()
            self._publish_typing(room_id, user, False)

    def _publish_typing(self, room_id: str, user: UserRef, active: bool) -> None:
        frame = encode(TypingFrame(room=room_id, user=user, active=active))
        asyncio.get_running_loop().create_task(self.publish_event(room_id, frame))


class Follower:
    """An in-process consumer's bounded queue of one room's frames (``Hub.subscribe``).

    The room's fan-out calls :meth:`push` and never waits; whoever consumes reads
    :meth:`frames`. Messages come in offset order, each once, events (offset 0) in between
    as they came. A consumer that falls ``limit`` frames behind does not hold anything up
    and does not grow the queue: the queue is dropped (one log line, ``slow_consumers``
    counted) and frames are ignored until the consumer reads again. It then gets
    ``(cursor, MISSED)``, ``cursor`` being the offset of the last message it got, followed by
    every message after ``cursor`` read from the store, and the live frames after those.
    Persisted messages are never lost that way; the dropped events (typing, presence,
    stream frames, announcements) are, like a socket's after a resume.
    """

    def __init__(
        self,
        room: LiveRoom,
        store: Store,
        limit: int,
        drops: Counter[str],
        stop: Callable[[], Awaitable[None]],
    ) -> None:
        self.room = room
        self.limit = limit
        self.stop = stop
        """Stop following (the coroutine function :meth:`RoomRegistry.follow` made)."""
        self.cursor = room.delivered or 0
        """The offset of the last message handed on (or already fanned out when following began)."""
        self.lagging = False
        """True from a drop until the consumer reads again; frames meanwhile are ignored."""
        self.drops = 0
        """Times this follower's queue was dropped."""
        self.peak = 0
        """The most frames its queue ever held (never above ``limit``)."""
        self._store = store
        self._counts = drops
        self._frames: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    @property
    def queued(self) -> int:
        """Frames waiting for the consumer now."""
        return len(self._frames)

    def push(self, offset: int, text: str) -> None:
        """The room's fan-out: queue a frame, or drop the queue if the consumer is too slow."""
        if self.lagging:
            return
        if len(self._frames) >= self.limit:
            self._frames.clear()
            self.lagging = True
            self.drops += 1
            self._counts["subscriber"] += 1
            log.warning(
                "room subscriber of %s fell %d frames behind after offset %d: queue dropped, "
                "it resumes from the store",
                self.room.id,
                self.limit,
                self.cursor,
            )
        else:
            self._frames.append((offset, text))
            self.peak = max(self.peak, len(self._frames))
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def frames(self) -> AsyncIterator[tuple[int, str | None]]:
        """``(offset, encoded frame)`` in order, forever; ``(cursor, MISSED)`` after a drop,
        then the messages after ``cursor`` from the store (see the class)."""
        while True:
            if self.lagging:
                yield self.cursor, MISSED
                # From here on live frames queue again, and they are above ``delivered``
                # (read with no await in between): the store has everything up to it.
                target = self.room.delivered or 0
                self.lagging = False
                async for offset, text in self._replay(target):
                    yield offset, text
                continue
            if not self._frames:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                continue
            offset, text = self._frames.popleft()
            if offset:
                if offset <= self.cursor:  # already read from the store
                    continue
                self.cursor = offset
            yield offset, text

    async def _replay(self, target: int) -> AsyncIterator[tuple[int, str]]:
        """The stored messages after :attr:`cursor` up to ``target``, a page at a time."""
        while self.cursor < target:
            try:
                page = await self._store.messages_after(
                    self.room.id, self.cursor, min(target - self.cursor, REPLAY_PAGE)
                )
            except Exception as exc:  # database away: live frames drop meanwhile, try again
                log.warning("room subscriber of %s: replay failed: %s", self.room.id, exc)
                await asyncio.sleep(REPLAY_RETRY)
                continue
            if not page:  # nothing stored up to target (the history was reset): give up
                log.warning(
                    "room subscriber of %s: offsets %d-%d are not stored",
                    self.room.id,
                    self.cursor + 1,
                    target,
                )
                self.cursor = target
                return
            for message in page:
                if message.offset > target:
                    return
                self.cursor = message.offset
                yield message.offset, encode(MessageFrame(message)).decode()
