"""Database engines from URLs, and binding the hub's tables to one of them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, dict_factory

from hub.store.errors import unavailable_as_store_error

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_STATEMENT_TIMEOUT = 10.0
DEFAULT_ACQUIRE_TIMEOUT = 5.0

STATEMENT_CONNECTIONS = 4
"""Persistent connections for statements outside transactions (reads, mostly)."""

T = TypeVar("T")


class EmbeddedSQLiteEngine(SQLiteEngine):
    """SQLite tuned for the embedded default: WAL with ``synchronous=NORMAL``.

    In WAL mode NORMAL keeps every commit across a process crash (kill -9 included); only an
    OS crash or power cut can roll back the last commits. FULL would fsync every message
    (~15 ms each on this class of disk). Set ``?synchronous=full`` on the URL for that.
    """

    def __init__(self, path: str, synchronous: str = "normal", **kwargs: Any) -> None:
        super().__init__(path=path, **kwargs)
        self.synchronous = synchronous
        self._keeper: sqlite3.Connection | None = None
        self._shared: aiosqlite.Connection | None = None
        self._lease_lock: asyncio.Lock | None = None
        self._idle: asyncio.Queue[aiosqlite.Connection] | None = None
        self._statement_connections: list[aiosqlite.Connection] = []
        self._opened = 0
        self._writer: ThreadPoolExecutor | None = None
        self._writer_connection: sqlite3.Connection | None = None

    def hold_open(self) -> None:
        """Keep one connection open for the engine's lifetime.

        Piccolo opens a connection per query; when the last one to a WAL database closes,
        SQLite checkpoints and deletes the WAL, fsyncing on every single write. One idle
        connection held open avoids that (measured: 13.8 ms -> see docs/benchmarks.md).
        """
        if self._keeper is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._keeper = sqlite3.connect(self.path, check_same_thread=False)
            self._keeper.execute("PRAGMA journal_mode=WAL")

    def release(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None

    async def get_connection(self) -> _Lease:  # type: ignore[override]
        """Lease the engine's one transaction connection (transactions queue for it).

        Opening an aiosqlite connection starts a thread; doing that per write cost ~5 ms. One
        persistent connection, leased to one transaction at a time, costs ~0.3 ms.
        """
        if self._lease_lock is None:
            self._lease_lock = asyncio.Lock()
        await self._lease_lock.acquire()
        try:
            if self._shared is None:
                self._shared = await self._open()
            return _Lease(self._shared, self._lease_lock)
        except BaseException:
            self._lease_lock.release()
            raise

    async def _run_in_new_connection(
        self,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: Any = None,
    ) -> Any:
        """A statement outside a transaction, on one of a few persistent connections.

        Piccolo opens a connection, and with it a thread, for every such statement (reads
        mostly): 0.86 ms a read against 0.04 ms here (``bench/store_bench.py``). WAL lets
        these connections read side by side while the transaction connection writes.
        """
        connection = await self._statement_connection()
        try:  # autocommit connections (isolation_level None): each statement commits itself
            return await self._run_in_existing_connection(
                connection, query, args, query_type, table
            )
        finally:
            if self._idle is not None:  # None once the engine is closed
                self._idle.put_nowait(connection)

    async def _run_in_existing_connection(
        self,
        connection: Any,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: Any = None,
    ) -> Any:
        """Piccolo's, in one trip to the connection's thread instead of four: no ``PRAGMA
        foreign_keys = 1`` before every statement (this engine's connections set it once when
        they open; inside a transaction it does nothing anyway), and execute, fetch and close
        together. Each trip waits for its turn on a busy event loop."""
        if query_type == "insert" and self.get_version_sync() < 3.35:  # no RETURNING there
            return await super()._run_in_existing_connection(
                connection, query, args, query_type, table
            )
        return await connection.execute_fetchall(query, args or [])

    async def _statement_connection(self) -> aiosqlite.Connection:
        if self._idle is None:
            self._idle = asyncio.Queue()
        if self._idle.empty() and self._opened < STATEMENT_CONNECTIONS:
            self._opened += 1  # counted before the await: concurrent callers see the slot taken
            try:
                connection = await self._open()
            except BaseException:
                self._opened -= 1
                raise
            self._statement_connections.append(connection)
            return connection
        return await self._idle.get()

    async def run_querystring(self, querystring: Any, in_pool: bool = False) -> Any:
        """Piccolo's, with a busy database (past the busy timeout) as ``StoreUnavailable``."""
        with unavailable_as_store_error():
            return await super().run_querystring(querystring, in_pool)

    async def run_on_writer(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the engine's writer thread: a whole transaction in one
        trip to a thread, where piccolo's takes one trip per statement (begin, each statement,
        commit), each waiting for its turn on a busy event loop. ``work`` begins and ends its
        own transaction (the connection autocommits otherwise). Callers serialize writes
        (``Store`` holds its write lock), as for piccolo's transactions on this engine."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="lydian-sqlite-writer")
        with unavailable_as_store_error():
            return await asyncio.get_running_loop().run_in_executor(
                self._writer, self._on_writer, work
            )

    def _on_writer(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer_connection is None:
            connection = sqlite3.connect(
                self.path, timeout=self.connection_kwargs.get("timeout", 5.0), isolation_level=None
            )
            connection.execute("PRAGMA foreign_keys = 1")
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._writer_connection = connection
        return work(self._writer_connection)

    def _close_writer(self) -> None:
        if self._writer_connection is not None:
            self._writer_connection.close()
            self._writer_connection = None

    async def _open(self) -> aiosqlite.Connection:
        """Piccolo's connection setup, on a daemon thread: an unclosed store must not keep the
        interpreter from exiting."""
        pending = aiosqlite.connect(**self.connection_kwargs)
        thread = getattr(pending, "_thread", None)
        if thread is not None:
            thread.daemon = True
        connection = await pending
        connection.row_factory = dict_factory  # type: ignore[assignment]
        await connection.execute("PRAGMA foreign_keys = 1")
        await connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        return connection

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.close()
            self._shared = None
        for connection in self._statement_connections:
            await connection.close()
        self._statement_connections.clear()
        self._opened = 0
        self._idle = None
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._close_writer)
            self._writer.shutdown()
            self._writer = None
        self.release()


class _Lease:
    """A borrowed connection: everything goes to the shared one; ``close`` gives it back."""

    def __init__(self, connection: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self._connection = connection
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    async def close(self) -> None:
        if self._lock.locked():
            self._lock.release()


class _TimedPool:
    """An asyncpg pool whose ``acquire`` waits at most ``timeout`` seconds by default (piccolo
    acquires without a timeout: with every connection stuck, callers would queue forever)."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return self._pool.acquire(timeout=timeout or self._timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class TimedPostgresEngine(PostgresEngine):
    """PostgreSQL with a timeout on each step: connecting (``timeout``), waiting for a pooled
    connection (``acquire_timeout``) and every statement (``command_timeout``); a database
    that does not answer in time raises :class:`~hub.store.errors.StoreUnavailable` instead
    of hanging its caller. A connection whose statement timed out is closed by asyncpg."""

    def __init__(self, config: dict[str, Any], acquire_timeout: float) -> None:
        super().__init__(config=config)
        self.acquire_timeout = acquire_timeout

    async def start_connection_pool(self, **kwargs: Any) -> None:
        with unavailable_as_store_error():
            await super().start_connection_pool(**kwargs)
        if self.pool is not None:
            self.pool = _TimedPool(self.pool, self.acquire_timeout)

    async def run_querystring(self, querystring: Any, in_pool: bool = True) -> Any:
        with unavailable_as_store_error():
            return await super().run_querystring(querystring, in_pool)

    async def run_ddl(self, ddl: str, in_pool: bool = True) -> Any:
        with unavailable_as_store_error():
            return await super().run_ddl(ddl, in_pool)


def engine_for_url(
    url: str,
    server_settings: dict[str, str] | None = None,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
) -> Engine:
    """``sqlite:///path`` or ``postgresql://...`` to a Piccolo engine (not yet connected).

    On PostgreSQL each step has its timeout (see :class:`TimedPostgresEngine`); on SQLite
    ``statement_timeout`` is the busy timeout, how long a statement waits for a lock."""
    if url.startswith("sqlite:///"):
        path, _, query = url.removeprefix("sqlite:///").partition("?")
        sync = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("synchronous")
        if sync not in (None, "normal", "full", "extra"):
            raise ValueError(f"synchronous must be normal, full or extra, not {sync!r}")
        return EmbeddedSQLiteEngine(
            path=path, synchronous=sync or "normal", timeout=statement_timeout
        )
    if url.startswith(("postgres://", "postgresql://")):
        config: dict[str, Any] = {
            "dsn": url,
            "timeout": connect_timeout,
            "command_timeout": statement_timeout,
        }
        if server_settings:
            config["server_settings"] = server_settings
        return TimedPostgresEngine(config=config, acquire_timeout=acquire_timeout)
    raise ValueError(f"unsupported DATABASE_URL {url!r}: use sqlite:///PATH or postgresql://...")
