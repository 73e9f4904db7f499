"""Read timeouts for HTTP requests: uvicorn's httptools protocol, cutting slow or half-sent ones.

uvicorn has no header or body read timeout: a client that sends half a request line, half
its headers or half a body holds its connection (and a file descriptor) forever. This
protocol keeps one lazy deadline per connection while it is *reading a request*:

* **headers**: from the connection's opening (or, on a kept-alive connection, from the
  next request's first byte) the request line and headers must be complete within
  ``http_header_timeout``;
* **body**: after the headers, the next piece of body must arrive within
  ``http_body_timeout``; and, past that first allowance, the body must average
  ``http_body_min_rate`` bytes/s (so a client cannot trickle a byte per timeout).

When the deadline passes the connection is closed, with ``408 Request Timeout`` when no
response has started. Nothing else is timed: once a request is read the deadline is off,
so long responses (Server-Sent Events) and WebSocket upgrades are never cut, and an idle
kept-alive connection is left to uvicorn's own ``timeout_keep_alive``. A body the server
is not reading (flow control paused it, or ``Expect: 100-continue`` still waits for the
application) does not count against the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hub.http")

_HEADERS = "headers"
_BODY = "body"

_408 = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"request too slow"
)


class ReadTimeouts:
    """The three limits, read once per process from the hub's settings."""

    header: float = 10.0
    body: float = 30.0
    min_rate: float = 1024.0
    loaded = False

    @classmethod
    def load(cls) -> None:
        if cls.loaded:
            return
        from hub.base.config import load_settings

        settings = load_settings()
        cls.header = settings.http_header_timeout
        cls.body = settings.http_body_timeout
        cls.min_rate = float(settings.http_body_min_rate)
        cls.loaded = True


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read deadlines (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ReadTimeouts.load()
        self._reading: str | None = None  # _HEADERS, _BODY or None (not reading a request)
        self._deadline = 0.0  # loop time by which the current read must progress
        self._timer: asyncio.TimerHandle | None = None
        self._body_start = 0.0
        self._body_bytes = 0

    # -- the deadline ------------------------------------------------------------------
    # One lazy timer per connection, in the loop's clock: arming only moves ``_deadline``
    # (a timer is made or moved only when none would fire by then) and disarming only clears
    # ``_reading``; a timer that fires early re-schedules itself for the current deadline,
    # one with nothing to time goes away. A busy kept-alive connection thus makes about one
    # timer per header timeout, not two per request.

    def _arm(self, kind: str, deadline: float) -> None:
        self._reading = kind
        self._deadline = deadline
        timer = self._timer
        if timer is None:
            self._timer = self.loop.call_at(deadline, self._expired)
        elif timer.when() > deadline:
            timer.cancel()
            self._timer = self.loop.call_at(deadline, self._expired)

    def _disarm(self) -> None:
        self._reading = None

    def _cancel_timer(self) -> None:
        self._reading = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _body_deadline(self, now: float) -> float:
        deadline = now + ReadTimeouts.body
        if ReadTimeouts.min_rate > 0:
            earned = self._body_start + ReadTimeouts.body + self._body_bytes / ReadTimeouts.min_rate
            deadline = min(deadline, earned)
        return deadline

    def _expired(self) -> None:
        self._timer = None
        if self._reading is None or self.transport is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < self._deadline:  # moved on since the timer was set
            self._timer = self.loop.call_at(self._deadline, self._expired)
            return
        cycle = self.cycle
        if self._reading == _BODY and (
            self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue)
        ):
            # the server, not the client, is holding the body back: start the count afresh
            self._body_start, self._body_bytes = now, 0
            self._arm(_BODY, now + ReadTimeouts.body)
            return
        kind = self._reading
        self._reading = None
        if self._reading_owns_response(kind):
            self.transport.write(_408)
        if cycle is not None and not cycle.response_complete:
            # the application gets http.disconnect and writes nothing after our answer
            cycle.disconnected = True
            cycle.message_event.set()
        log.debug("closed %s: request %s too slow", self.client, kind)
        self.transport.close()

    def _reading_owns_response(self, kind: str | None) -> bool:
        """True when a 408 can be written: no response to this connection is in progress."""
        cycle = self.cycle
        if kind == _HEADERS:
            return cycle is None or cycle.response_complete
        return cycle is not None and not cycle.response_started

    # -- uvicorn's hooks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(_HEADERS, self.loop.time() + ReadTimeouts.header)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._reading is None:  # a new request on a kept-alive connection
            self._arm(_HEADERS, self.loop.time() + ReadTimeouts.header)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            return  # a WebSocket: the handshake is the WebSocket protocol's business
        now = self.loop.time()
        self._body_start, self._body_bytes = now, 0
        self._arm(_BODY, now + ReadTimeouts.body)  # on_message_complete disarms it

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._reading == _BODY:
            self._body_bytes += len(body)
            self._arm(_BODY, self._body_deadline(self.loop.time()))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timer()
        super().handle_websocket_upgrade()
