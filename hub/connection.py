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

from litestar import WebSocket

from hub.auth import Identity
from hub.protocol import CloseCode, Frame, UserRef, encode

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
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    def push(self, text: str) -> None:
        """Queue an encoded frame; close the subscriber if it cannot keep up."""
        if self.close_code is not None:
            return
        if self._queue.qsize() >= self._limit:
            log.warning("closing %s (%s): send queue full", self.id, self.user and self.user.id)
            self.close(CloseCode.SLOW_CONSUMER)
            return
        self._queue.put_nowait(text)

    def send(self, frame: Frame) -> None:
        self.push(encode(frame).decode())

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """End the queue after what is in it (dropping it when the subscriber is too slow)."""
        if self.close_code is not None:
            return
        self.close_code = code
        if code == CloseCode.SLOW_CONSUMER:
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put_nowait(None)


class Connection(Outbox):
    """Server-side state of one WebSocket."""

    def __init__(self, socket: WebSocket, queue_size: int) -> None:
        super().__init__(f"{NODE}-{next(_ids)}", queue_size)
        self.socket = socket
        self.opened = time.monotonic()
        self.last_seen = self.opened

    async def write_loop(self) -> None:
        """Send queued frames in order until closed."""
        while True:
            text = await self._queue.get()
            if text is None:
                await self.socket.close(code=self.close_code or CloseCode.NORMAL)
                return
            await self.socket.send_text(text)
