"""Logging of refused HTTP requests: one short line, no traceback, and bounded under a flood.

Litestar logs every exception a route raises with its full traceback (~3 KB), expected
refusals included: a client hammering with a bad token wrote ~880 KiB per 300 requests. Here
a refusal (any 4xx, and a 503 while the database is unavailable) is one line: 401 and 403 at
WARNING, the rest at INFO, and repeats of the same refusal from the same address within
:data:`WINDOW` seconds are counted and summed up in the next line instead of each logged.
Real failures (other 5xx) keep their traceback at ERROR.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from litestar.exceptions import HTTPException
from litestar.types import Logger, Scope

from hub.base.errors import MessageRefused, Refusal, RoomNotVisible
from hub.store.errors import StoreUnavailable

log = logging.getLogger("hub.http")

WINDOW = 10.0
"""Seconds during which repeats of one refusal (status, method, address) are only counted."""
MAX_KEYS = 1024
"""Distinct refusals tracked at once; beyond that the table starts afresh."""

_seen: dict[tuple[int, str, str], tuple[float, int]] = {}


def _client(scope: Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def log_refusal(status: int, scope: Any, detail: str, now: float | None = None) -> bool:
    """Log one refused request briefly (rate-limited per status, method and address); return
    whether a line was written."""
    now = time.monotonic() if now is None else now
    method = str(scope.get("method") or scope.get("type", "-")).upper()
    key = (status, method, _client(scope))
    first, suppressed = _seen.get(key, (None, 0))
    if first is not None and now - first < WINDOW:
        _seen[key] = (first, suppressed + 1)
        return False
    if len(_seen) >= MAX_KEYS:
        _seen.clear()
    _seen[key] = (now, 0)
    more = f" (+{suppressed} like it in the last {WINDOW:g}s)" if suppressed else ""
    level = logging.WARNING if status in (401, 403, 503) else logging.INFO
    log.log(
        level,
        "%s %s %s from %s: %s%s",
        status,
        method,
        scope.get("path", "-"),
        key[2],
        detail[:200],
        more,
    )
    return True


def exception_logging_handler(logger: Logger, scope: Scope, tb: list[str]) -> None:
    """Litestar's ``exception_logging_handler``: short lines for refusals, tracebacks for bugs."""
    exc = sys.exc_info()[1]
    if isinstance(exc, HTTPException) and (exc.status_code < 500 or exc.status_code == 503):
        log_refusal(exc.status_code, scope, str(exc.detail))
        return
    if isinstance(exc, StoreUnavailable):
        log_refusal(503, scope, str(exc))
        return
    if isinstance(exc, RoomNotVisible):
        log_refusal(404 if exc.missing else 403, scope, exc.detail)
        return
    if isinstance(exc, MessageRefused):
        log_refusal(413 if exc.reason == Refusal.TOO_LONG else 400, scope, exc.detail)
        return
    logger.exception(  # Litestar's own default: called while the exception is handled
        "Uncaught exception (connection_type=%s, path=%r):", scope.get("type"), scope.get("path")
    )
