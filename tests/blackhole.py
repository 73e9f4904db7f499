"""A local TCP proxy that can black-hole traffic, to simulate an unreachable database.

``BlackHoleProxy(upstream_port)`` listens on 127.0.0.1 (a free port) and forwards every
connection to ``127.0.0.1:upstream_port``. After :meth:`drop` it forwards nothing: bytes from
either side are read and discarded, nothing is answered, nothing is closed, and new
connections are accepted and then ignored the same way (packets dropped, not refused).
:meth:`heal` closes the connections that were black-holed (as TCP would give up on them)
and forwards new connections again.
"""

from __future__ import annotations

import asyncio
import contextlib


class BlackHoleProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.dropping = False
        self.replies_only = False
        self.dropped_bytes = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._holed: set[asyncio.StreamWriter] = set()

    async def start(self) -> BlackHoleProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop(self, replies_only: bool = False) -> None:
        """From now on, read and discard everything; never reply, never close. With
        ``replies_only`` requests still reach the server but its answers are lost (a write
        may commit without the client knowing)."""
        self.dropping = True
        self.replies_only = replies_only

    def heal(self) -> None:
        """Forward again; connections that lost traffic to the hole are closed."""
        self.dropping = False
        for writer in list(self._holed):
            writer.transport.abort()
        self._holed.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def __aenter__(self) -> BlackHoleProxy:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.dropping:
            self._holed.add(writer)
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        pair = (writer, up_writer)
        for src, dst, is_reply in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, pair, is_reply))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                self.dropped_bytes += len(data)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        is_reply: bool,
    ) -> None:
        try:
            while data := await src.read(65536):
                if self.dropping and (is_reply or not self.replies_only):
                    self._holed.update(pair)
                    self.dropped_bytes += len(data)
                    continue
                if not self.dropping and any(w in self._holed for w in pair):
                    continue  # healed, but this connection lost bytes: it is closed below
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not self.dropping or not any(w in self._holed for w in pair):
                for w in pair:
                    w.transport.abort()
