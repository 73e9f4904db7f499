"""One client socket: identity, joined rooms, and a bounded outgoing queue drained by a writer.

Rooms never await a socket: they ``push`` encoded text, and a client too slow to drain
its queue is disconnected (close 4429) rather than slowing the room; it recovers by
offset when it reconnects. A client that does not read at all cannot even be sent the
close frame: after :data:`CLOSE_GRACE` its writer gives up and the socket's session ends
(rooms left, presence offline) without waiting for the client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import Counter, deque

from litestar import WebSocket

from hub.base.auth import Identity
from hub.base.protocol import CloseCode, Frame, UserRef, encode

log = logging.getLogger(__name__)
_ids = itertools.count(1)
NODE = secrets.token_hex(4)
"""This process's id: connection ids must be unique across replicas (presence keys on them)."""
CLOSE_GRACE = 2.0
"""Seconds a socket's writer may take to send what is left and the close frame, once the hub
closes it, before it gives up (a client that stopped reading never takes them)."""


class Outbox:
    """A subscriber's bounded queue of encoded frames, as rooms see it.

    Rooms only ``push``; whoever drains the queue (a socket writer, an SSE response) reads
    it in order until ``None``. A subscriber that falls ``queue_size`` frames behind is closed
    with :attr:`CloseCode.SLOW_CONSUMER` instead of slowing the room (counted under
    :attr:`kind` in ``drops``, one log line); it recovers by offset.
    """

    kind = "sse"
    """What ``drops`` counts this subscriber as."""

    def __init__(
        self, subscriber_id: str, queue_size: int, drops: Counter[str] | None = None
    ) -> None:
        self.id = subscriber_id
        self.identity: Identity | None = None
        self.user: UserRef | None = None
        self.rooms: set[str] = set()
        self.close_code: int | None = None
        self._limit = queue_size
        self._drops = drops
        self._frames: deque[str | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None  # see wait_for_room
        self._room_below = 0
        self._draining = False  # a writer (or an SSE response) reads the queue

    @property
    def limit(self) -> int:
        """The most frames that may wait for this subscriber (``queue_size``)."""
        return self._limit

    @property
    def queued_frames(self) -> int:
        """Frames waiting to be written now (never more than ``queue_size``, plus the end)."""
        return len(self._frames)

    def push(self, text: str) -> None:
        """Queue an encoded frame; close the subscriber if it cannot keep up."""
        if self.close_code is not None:
            return
        if len(self._frames) >= self._limit:
            self.too_slow(f"{self._limit} frames waiting")
            return
        self._frames.append(text)
        self._wake()

    def too_slow(self, why: str) -> None:
        """Close as a slow consumer (4429): one log line, counted under :attr:`kind`."""
        if self.close_code is not None:
            return
        log.warning(
            "closing %s (%s): %s, too slow to read", self.id, self.user and self.user.id, why
        )
        if self._drops is not None:
            self._drops[self.kind] += 1
        self.close(CloseCode.SLOW_CONSUMER)

    async def wait_for_room(self, frames: int) -> None:
        """Wait until fewer than ``frames`` frames are queued, or the subscriber is closed:
        what a long replay does between frames, so that it never overflows the queue.
        Returns at once while nothing drains the queue yet (nothing would make room)."""
        while self._draining and self.close_code is None and len(self._frames) >= frames:
            self._room_below = frames
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _taken(self) -> None:
        """A frame left the queue (or it closed): wake :meth:`wait_for_room` if it fits."""
        room = self._room
        if room is not None and (len(self._frames) < self._room_below or self.close_code):
            self._room = None
            if not room.done():
                room.set_result(None)

    def send(self, frame: Frame) -> None:
        self.push(encode(frame).decode())

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """End the queue after what is in it (dropping it when the subscriber is too slow)."""
        if self.close_code is not None:
            return
        self.close_code = code
        if code == CloseCode.SLOW_CONSUMER:
            self._frames.clear()
        self._frames.append(None)
        self._wake()
        self._taken()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_frame(self) -> str | None:
        """The next queued frame, waiting for one if need be; ``None`` once closed."""
        self._draining = True
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        text = self._frames.popleft()
        if self._room is not None:
            self._taken()
        return text


class Connection(Outbox):
    """Server-side state of one WebSocket."""

    kind = "socket"

    def __init__(
        self,
        socket: WebSocket,
        queue_size: int,
        drops: Counter[str] | None = None,
        close_grace: float = CLOSE_GRACE,
    ) -> None:
        super().__init__(f"{NODE}-{next(_ids)}", queue_size, drops)
        self.socket = socket
        self.opened = time.monotonic()
        self.last_seen = self.opened
        self.close_grace = close_grace
        self._writer: asyncio.Task[None] | None = None
        self._give_up: asyncio.TimerHandle | None = None

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """End the queue; a writer still busy after ``close_grace`` seconds is stopped."""
        if self.close_code is not None:
            return
        super().close(code)
        if self._writer is not None and not self._writer.done():
            loop = self._writer.get_loop()
            self._give_up = loop.call_later(self.close_grace, self._abandon)

    def _abandon(self) -> None:
        """The client read nothing for ``close_grace``: stop writing to it (its send waits
        for room in the transport's buffer, which a client that does not read never makes)."""
        if self._writer is not None and not self._writer.done():
            log.info(
                "dropping %s (%s): it read nothing for %.1f s after close %s",
                self.id,
                self.user and self.user.id,
                self.close_grace,
                self.close_code,
            )
            self._writer.cancel()

    async def write_loop(self) -> None:
        """Send queued frames in order until closed.

        This runs once per frame per socket, the hottest path in a broadcast: frames already
        queued are taken without awaiting the queue, and they go straight to the socket's ASGI
        ``send`` (``send_text`` only adds two coroutine layers around the same message).
        A deque with one waiter future costs less per frame than an ``asyncio.Queue``.
        The task may be cancelled while its send waits (see :meth:`_abandon`): a frame is
        written to the transport whole or not at all.
        """
        self._writer = asyncio.current_task()
        self._draining = True
        frames = self._frames
        send = self.socket.send
        try:
            while True:
                if frames:
                    text = frames.popleft()
                    if self._room is not None:  # a replay waits for room
                        self._taken()
                else:
                    text = await self.next_frame()
                if text is None:
                    await self.socket.close(code=self.close_code or CloseCode.NORMAL)
                    return
                await send({"type": "websocket.send", "text": text, "bytes": None})
        finally:
            self._draining = False
            self.close()  # ended (the client went, or was given up on): nothing more is queued
            if self._give_up is not None:
                self._give_up.cancel()
