"""HTTP doors to streams: a room's frames over SSE, cancelling a stream, stream metrics.

``GET /api/rooms/{room}/events`` is the WebSocket's room feed for HTTP clients: the same
frames (``joined`` first, with the streams in progress, then messages, presence, stream
start/delta/end/error), each as an SSE event named after the frame type; message events
carry their offset as the event id, so a reconnecting ``EventSource`` (``Last-Event-ID``)
or ``?since=N`` gets what it missed replayed first.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_202_ACCEPTED

from hub.ai.streams import CancelRefused, StreamMetrics
from hub.base.auth import Identity
from hub.base.protocol import INT64_MAX, CloseCode, Error, ErrorCode, UserRef, encode
from hub.core import Hub
from hub.realtime.connection import Outbox

AuthRequest = Request[Identity, Any, Any]

KEEPALIVE_SECONDS = 15.0
"""An SSE comment this often keeps proxies from closing an idle feed."""


class _Offset(msgspec.Struct):
    offset: int


class _MessageEnvelope(msgspec.Struct):
    message: _Offset


class _Typed(msgspec.Struct):
    type: str


_offset_decoder = msgspec.json.Decoder(_MessageEnvelope)
_type_decoder = msgspec.json.Decoder(_Typed)


_TOKEN_ENDS = {
    CloseCode.UNAUTHENTICATED: ErrorCode.TOKEN_EXPIRED,
    CloseCode.TOKEN_REVOKED: ErrorCode.TOKEN_REVOKED,
}


class SSESubscriber(Outbox):
    """A room subscriber feeding an SSE response instead of a socket."""

    def __init__(
        self, identity: Identity, queue_size: int, drops: Counter[str] | None = None
    ) -> None:
        super().__init__(f"sse-{secrets.token_hex(6)}", queue_size, drops)
        self.identity = identity
        self.user = UserRef(id=identity.id, name=identity.name, guest=identity.is_guest)

    async def events(self) -> AsyncIterator[ServerSentEventMessage]:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    text = await self.next_frame()
            except TimeoutError:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            if text is None:
                if self.close_code == CloseCode.SLOW_CONSUMER:
                    detail = '{"type":"error","code":"slow_consumer","detail":"feed too slow"}'
                    yield ServerSentEventMessage(data=detail, event="error")
                elif self.close_code in _TOKEN_ENDS:  # the feed ends with its token
                    code = _TOKEN_ENDS[self.close_code]
                    error = Error(code=code, detail="the feed's token ended")
                    yield ServerSentEventMessage(data=encode(error).decode(), event="error")
                return
            yield _event(text)


def _event(text: str) -> ServerSentEventMessage:
    kind = _type_decoder.decode(text).type
    event_id = None
    if kind == "message":
        event_id = _offset_decoder.decode(text).message.offset
    return ServerSentEventMessage(data=text, event=kind, id=event_id)


@get("/api/rooms/{room_id:str}/events", tags=["streams"])
async def room_events(
    request: AuthRequest,
    room_id: FromPath[str],
    since: Annotated[
        int | None,
        QueryParameter(ge=0, le=INT64_MAX, description="replay messages after this offset first"),
    ] = None,
    last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
) -> ServerSentEvent:
    """The room's live frames as Server-Sent Events (``text/event-stream``)."""
    hub: Hub = request.app.state.hub
    room = await hub.visible_room(room_id, request.user)
    if since is None and last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        since = min(int(last_event_id[:20]), INT64_MAX)  # a client's header: bounded
    subscriber = SSESubscriber(
        request.user, hub.settings.send_queue_frames, hub.rooms.slow_consumers
    )
    await hub.rooms.join(
        subscriber,  # type: ignore[arg-type]
        room.id,
        room.name,
        room.epoch,
        since,
        None,
        None,
    )

    untrack = hub.revocations.track(subscriber)  # identity: ends at token expiry/revocation

    async def feed() -> AsyncIterator[ServerSentEventMessage]:
        try:
            async for event in subscriber.events():
                yield event
        finally:
            untrack()
            await asyncio.shield(hub.rooms.leave(subscriber, room.id))  # type: ignore[arg-type]

    return ServerSentEvent(feed(), headers={"Cache-Control": "no-store"})


@delete(
    "/api/rooms/{room_id:str}/streams/{stream_id:str}",
    status_code=HTTP_202_ACCEPTED,
    tags=["streams"],
)
async def cancel_stream(
    request: AuthRequest, room_id: FromPath[str], stream_id: FromPath[str]
) -> dict[str, str]:
    """Stop a streamed answer (the member who asked, the room's owner, admins)."""
    hub: Hub = request.app.state.hub
    await hub.visible_room(room_id, request.user)
    try:
        await hub.streams.cancel(room_id, stream_id, request.user)
    except CancelRefused as exc:
        if exc.code == ErrorCode.UNKNOWN_STREAM:
            raise NotFoundException(exc.detail) from None
        if exc.code == ErrorCode.FORBIDDEN:
            raise PermissionDeniedException(exc.detail) from None
        raise HTTPException(status_code=400, detail=exc.detail) from None
    return {"status": "cancelling", "stream_id": stream_id}


class MetricsReport(msgspec.Struct):
    streams: int
    cancelled: int
    errors: int
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    tokens_per_s_p50: float | None
    recent: list[StreamMetrics]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


@get("/api/streams/metrics", tags=["streams"])
async def stream_metrics(
    request: AuthRequest, limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50
) -> MetricsReport:
    """Per-stream figures of this process (time to first token, tokens/s, cancelled); admins."""
    if not request.user.is_admin:
        raise PermissionDeniedException("stream metrics are for admins")
    hub: Hub = request.app.state.hub
    recent = list(hub.streams.recent)
    ttft = [m.ttft_ms for m in recent if m.ttft_ms is not None]
    rate = [m.tokens_per_s for m in recent if m.tokens_per_s is not None]
    return MetricsReport(
        streams=len(recent),
        cancelled=sum(m.cancelled for m in recent),
        errors=sum(m.error is not None for m in recent),
        ttft_ms_p50=_percentile(ttft, 0.5),
        ttft_ms_p95=_percentile(ttft, 0.95),
        tokens_per_s_p50=_percentile(rate, 0.5),
        recent=recent[-limit:],
    )


stream_routes = [room_events, cancel_stream, stream_metrics]
