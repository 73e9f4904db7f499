"""One client socket: identity, joined rooms, and a bounded outgoing queue drained by a writer.

Rooms never await a socket: they ``push`` encoded text, and a client too slow to drain
its queue is disconnected (close 4429) rather than slowing the room; it recovers by
offset when it reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque

from litestar import WebSocket

from hub.base.auth import Identity
from hub.base.protocol import CloseCode, Frame, UserRef, encode

log = logging.getLogger(__name__)
_ids = itertools.count(1)
NODE = secrets.token_hex(4)
"""This process's id: connection ids must be unique across replicas (presence keys on them)."""


class Outbox:
    """A subscriber's bounded queue of encoded frames, as rooms see it.

    Rooms only ``push``; whoever drains the queue (a socket writer, an SSE response) reads
    it in order until ``None``. A subscriber that falls ``queue_size`` frames behind is closed
    with :attr:`CloseCode.SLOW_CONSUMER` instead of slowing the room; it recovers by offset.
    """

    def __init__(self, subscriber_id: str, queue_size: int) -> None:
        self.id = subscriber_id
        self.identity: Identity | None = None
        self.user: UserRef | None = None
        self.rooms: set[str] = set()
        self.close_code: int | None = None
        self._limit = queue_size
        self._frames: deque[str | None] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def push(self, text: str) -> None:
        """Queue an encoded frame; close the subscriber if it cannot keep up."""
        if self.close_code is not None:
            return
        if len(self._frames) >= self._limit:
            log.warning("closing %s (%s): send queue full", self.id, self.user and self.user.id)
            self.close(CloseCode.SLOW_CONSUMER)
            return
        self._frames.append(text)
        self._wake()

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

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_frame(self) -> str | None:
        """The next queued frame, waiting for one if need be; ``None`` once closed."""
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._frames.popleft()


class Connection(Outbox):
    """Server-side state of one WebSocket."""

    def __init__(self, socket: WebSocket, queue_size: int) -> None:
        super().__init__(f"{NODE}-{next(_ids)}", queue_size)
        self.socket = socket
        self.opened = time.monotonic()
        self.last_seen = self.opened

    async def write_loop(self) -> None:
        """Send queued frames in order until closed.

        This runs once per frame per socket, the hottest path in a broadcast: frames already
        queued are taken without awaiting the queue, and they go straight to the socket's ASGI
        ``send`` (``send_text`` only adds two coroutine layers around the same message).
        A deque with one waiter future costs less per frame than an ``asyncio.Queue``.
        """
        frames = self._frames
        send = self.socket.send
        while True:
            text = frames.popleft() if frames else await self.next_frame()
            if text is None:
                await self.socket.close(code=self.close_code or CloseCode.NORMAL)
                return
            await send({"type": "websocket.send", "text": text, "bytes": None})
