"""The one error a caller sees when the database does not answer (in time)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import asyncpg


class StoreUnavailable(Exception):
    """The database did not answer in time or the connection to it failed: nothing was
    changed by this call as far as the caller can know; retry later (idempotently)."""


_PG_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # connection lost or refused mid-way
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.QueryCanceledError,  # a server-side statement timeout
)
_SQLITE_UNAVAILABLE = ("locked", "busy", "disk i/o", "unable to open")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database is not answering", not "this query is wrong"."""
    if isinstance(exc, (StoreUnavailable, TimeoutError, ConnectionError, *_PG_UNAVAILABLE)):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "not connected" in str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return any(word in str(exc).lower() for word in _SQLITE_UNAVAILABLE)
    return isinstance(exc, OSError)


@contextlib.contextmanager
def unavailable_as_store_error() -> Iterator[None]:
    """Turn a database outage (timeout, lost connection, busy SQLite) into
    :class:`StoreUnavailable`; other errors pass unchanged."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise StoreUnavailable(f"database unavailable: {exc!r}") from exc
        raise


def find_unavailable(exc: BaseException | None) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` behind ``exc`` (itself or a cause/context), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, StoreUnavailable):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
