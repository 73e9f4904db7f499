"""Streamed answers: one :class:`Stream` per answer, fanned out to the room as it arrives.

``StreamRegistry.start(room, agent, ...)`` publishes ``stream_start`` and returns a
:class:`Stream`; ``stream.run(pieces)`` reads an async iterator of text pieces (usually a
provider's) and publishes them as coalesced ``stream_delta`` frames: the first piece at
once (time to first token), then at most one delta per ``stream_flush_interval`` or when
``stream_flush_chars`` have piled up, ``seq`` increasing. The end persists the text
through the ``post`` it was given (``Hub.post_message(kind="agent")``, the one way in) with
the stream id, metrics and whether it was
cancelled, then publishes ``stream_end`` (or ``stream_error`` with the partial text kept).

Cancelling: whichever connection or replica receives the cancel, the process that runs the
stream decides, with one check (:meth:`StreamRegistry.authorize`): the stream must run in the
named room, and the canceller must be the member who asked, the room's owner or an admin.
A stream run elsewhere is asked for over the broker channel ``hub:streams``; its owner
answers on the asking process's reply channel, and no answer means no such stream. Allowed,
the owner cancels the task reading the provider, which closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import msgspec

from hub.ai.llm import BAD_RESPONSE, UPSTREAM_ERROR, UPSTREAM_TIMEOUT, LLMError
from hub.base.auth import Identity
from hub.base.config import Settings
from hub.base.protocol import (
    ChatMessage,
    ErrorCode,
    Frame,
    StreamDelta,
    StreamEnd,
    StreamError,
    StreamSnapshot,
    StreamStart,
    UserRef,
    encode,
)
from hub.realtime.broker import Broker
from hub.realtime.connection import NODE
from hub.realtime.rooms import RoomRegistry, envelope
from hub.realtime.stream_state import StreamSeed
from hub.store.store import Store

log = logging.getLogger(__name__)
_event_encoder = msgspec.json.Encoder()  # room events: frames and internal seeds alike

STREAMS_CHANNEL = "hub:streams"
ORPHAN_GRACE = 2.0
"""Seconds past its owner's own timeouts before a silent stream counts as orphaned."""
ORPHAN_SWEEP = 1.0


def answer_id(stream_id: str) -> str:
    """The idempotency key of a stream's final message (owner and reapers share it)."""
    return f"stream:{stream_id}"


CANCEL_REPLY_TIMEOUT = 2.0
"""Seconds to wait for the process running a stream to answer a cancel; none means unknown."""


def reply_channel(node: str) -> str:
    """The channel on which process ``node`` hears answers to its cancel requests."""
    return f"{STREAMS_CHANNEL}:{node}"


class PostMessage(Protocol):
    """How a finished answer is stored and announced: ``Hub.post_message``, the one way in
    for every message (persist, publish to the room, then the plugins' observers)."""

    async def __call__(
        self,
        room_id: str,
        author: UserRef,
        text: str,
        *,
        kind: str = ...,
        client_id: str | None = ...,
        reply_to: str | None = ...,
        meta: dict[str, Any] | None = ...,
    ) -> tuple[ChatMessage, bool]: ...


class Spawn(Protocol):
    """Runs a background task owned by the hub (cancelled on shutdown, errors logged)."""

    def __call__(self, coro: Awaitable[Any], name: str | None = None) -> Any: ...


class CancelRequest(msgspec.Struct, tag_field="type", tag="stream_cancel"):
    """Stop ``stream_id`` in ``room`` on behalf of ``by``; answered on ``reply_to``'s channel."""

    room: str
    stream_id: str
    by: str
    admin: bool = False
    request: str = ""
    reply_to: str = ""


class CancelReply(msgspec.Struct, tag_field="type", tag="stream_cancel_reply"):
    """The running process's verdict on a :class:`CancelRequest`: ``code`` empty if done."""

    request: str
    code: str = ""
    detail: str = ""


class SeedRequest(msgspec.Struct, tag_field="type", tag="stream_seed_request"):
    """A replica's room just became live: streams running in it elsewhere, please seed it."""

    room: str


_control_decoder = msgspec.json.Decoder(CancelRequest | SeedRequest)
_reply_decoder = msgspec.json.Decoder(CancelReply)


class StreamMetrics(msgspec.Struct, omit_defaults=True):
    """Figures of one finished stream (also stored in the final message's ``meta``)."""

    stream_id: str
    room: str
    agent: str
    started_at: float
    duration_ms: float
    tokens: int
    deltas: int
    cancelled: bool
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    error: str | None = None


class CancelRefused(Exception):
    """A cancel the caller may not make; ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Stream:
    """One answer being streamed into a room by this process."""

    def __init__(
        self,
        registry: StreamRegistry,
        room: str,
        agent: UserRef,
        *,
        reply_to: str | None,
        requested_by: str | None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.registry = registry
        self.id = uuid.uuid4().hex
        self.room = room
        self.agent = agent
        self.reply_to = reply_to
        self.requested_by = requested_by
        self.meta = dict(meta or {})
        self.seq = 0
        self.tokens = 0
        self.cancelled = False
        self.message: ChatMessage | None = None
        self._parts: list[str] = []  # published text
        self._pending: list[str] = []  # received, not yet published
        self._pending_chars = 0
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._started_wall = time.time()
        self._first: float | None = None
        self._last_flush = 0.0
        self._seed_wanted = False
        self.done = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------ state

    @property
    def text(self) -> str:
        """Text published so far."""
        return "".join(self._parts)

    def snapshot(self) -> StreamSnapshot:
        return StreamSnapshot(
            stream_id=self.id,
            agent=self.agent,
            text=self.text,
            seq=self.seq,
            reply_to=self.reply_to,
            requested_by=self.requested_by,
        )

    def request_seed(self) -> None:
        """Publish this stream's state on the room channel, for a room live since it began."""
        self._seed_wanted = True
        self._wake.set()

    def cancel(self) -> bool:
        """Stop reading the provider (closing the upstream request); the end is published."""
        if self.cancelled or self.done.done() or self._closing.is_set():
            return False  # already stopping, or finished reading: let it end as it is
        self.cancelled = True
        if self._pump is not None:
            self._pump.cancel()
        return True

    # ------------------------------------------------------------ running

    async def run(self, pieces: AsyncIterator[str]) -> ChatMessage | None:
        """Stream ``pieces`` to the room; persist and announce the end. Returns the message."""
        flusher = asyncio.create_task(self._flush_loop(), name=f"stream-flush:{self.id}")
        self._pump = asyncio.create_task(self._read(pieces), name=f"stream-read:{self.id}")
        if self.cancelled:
            self._pump.cancel()
        error: LLMError | None = None
        try:
            await self._pump
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the hub is stopping this task
                self._pump.cancel()
                flusher.cancel()
                self._resolve(None)
                self.registry._forget(self)
                raise
            if not self.cancelled:  # the provider cancelled itself: an error, not a stop
                error = LLMError(UPSTREAM_ERROR, "the provider stopped unexpectedly")
        except LLMError as exc:
            error = exc
        except Exception as exc:
            log.warning("stream %s in %s failed", self.id, self.room, exc_info=True)
            error = LLMError(UPSTREAM_ERROR, f"{type(exc).__name__}: {exc}"[:300])
        self._closing.set()
        self._wake.set()
        await flusher
        try:
            return await self._finish(error)
        finally:
            self.registry._forget(self)

    async def _read(self, pieces: AsyncIterator[str]) -> None:
        iterator = aiter(pieces)
        registry = self.registry
        task = asyncio.current_task()
        assert task is not None
        deadline = _Deadline(task, registry.first_token_timeout)
        try:
            try:
                async for piece in iterator:
                    if not isinstance(piece, str):
                        kind = type(piece).__name__
                        raise LLMError(BAD_RESPONSE, f"provider yielded {kind}")
                    if not piece:
                        continue
                    if self._first is None:
                        self._first = time.monotonic()
                        deadline.restart(registry.idle_timeout)
                    else:
                        deadline.touch()
                    self.tokens += 1
                    self._pending.append(piece)
                    self._pending_chars += len(piece)
                    self._wake.set()
            except asyncio.CancelledError:
                if deadline.expired and task.uncancel() == 0:  # only the deadline cancelled it
                    what = "the first token" if self._first is None else "the next token"
                    detail = f"no answer for {deadline.period:g} s (waiting for {what})"
                    raise LLMError(UPSTREAM_TIMEOUT, detail) from None
                raise
        finally:
            deadline.stop()
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(BaseException):
                    await close()

    async def _flush_loop(self) -> None:
        """Publish pending text: the first piece at once, then coalesced by time or size."""
        loop = asyncio.get_running_loop()
        interval = self.registry.flush_interval
        max_chars = self.registry.flush_chars
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._seed_wanted:  # published by this task, so in order with the deltas
                self._seed_wanted = False
                await self.registry.publish(
                    self.room, StreamSeed(room=self.room, snapshot=self.snapshot())
                )
            if not self._closing.is_set() and self.seq > 0 and self._pending_chars < max_chars:
                delay = self._last_flush + interval - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._closing.wait()
            await self._flush()
            if self._closing.is_set() and not self._pending:
                return

    async def _flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        self.seq += 1
        self._parts.append(text)
        self._last_flush = asyncio.get_running_loop().time()
        await self.registry.publish(
            self.room, StreamDelta(room=self.room, stream_id=self.id, seq=self.seq, text=text)
        )

    def metrics(self, error: LLMError | None) -> StreamMetrics:
        end = time.monotonic()
        ttft = (self._first - self._started) * 1000 if self._first is not None else None
        rate = None
        if self._first is not None and self.tokens > 1 and end > self._first:
            rate = round((self.tokens - 1) / (end - self._first), 1)
        return StreamMetrics(
            stream_id=self.id,
            room=self.room,
            agent=self.agent.id,
            started_at=self._started_wall,
            duration_ms=round((end - self._started) * 1000, 2),
            tokens=self.tokens,
            deltas=self.seq,
            cancelled=self.cancelled,
            ttft_ms=round(ttft, 2) if ttft is not None else None,
            tokens_per_s=rate,
            error=error.code if error else None,
        )

    async def _finish(self, error: LLMError | None) -> ChatMessage | None:
        metrics = self.metrics(error)
        self.registry.record(metrics)
        text = self.text
        meta = {
            **self.meta,
            "stream_id": self.id,
            "cancelled": self.cancelled,
            "metrics": msgspec.to_builtins(metrics),
        }
        if error is not None:
            meta["error"] = {"code": error.code, "detail": error.detail}
        message: ChatMessage | None = None
        if error is None or text:
            try:
                message, _ = await self.registry.post(
                    self.room,
                    self.agent,
                    text,
                    kind="agent",
                    client_id=answer_id(self.id),
                    reply_to=self.reply_to,
                    meta=meta,
                )
            except Exception as exc:
                log.exception("stream %s: could not persist the answer", self.id)
                error = error or LLMError("internal", f"could not persist the answer: {exc}")
        self.message = message
        frame: Frame
        if error is None and message is not None:
            frame = StreamEnd(
                room=self.room, stream_id=self.id, message=message, cancelled=self.cancelled
            )
        else:
            assert error is not None
            frame = StreamError(
                room=self.room,
                stream_id=self.id,
                code=error.code,
                detail=error.detail,
                message=message,
            )
        await self.registry.publish(self.room, frame)
        self._resolve(message)
        return message

    def _resolve(self, message: ChatMessage | None) -> None:
        if not self.done.done():
            self.done.set_result(message)


class _Deadline:
    """Cancels ``task`` once ``period`` seconds pass without a :meth:`touch`.

    Touching only notes the time; the one timer re-arms itself when it finds it fired
    early. ``asyncio.timeout``'s ``reschedule`` replaces its timer instead, ~2 µs on every
    token of every stream.
    """

    def __init__(self, task: asyncio.Task[Any], period: float) -> None:
        self.task = task
        self.loop = task.get_loop()
        self.expired = False
        self.period = period
        self.last = self.loop.time()
        self._timer = self.loop.call_at(self.last + period, self._check)

    def touch(self) -> None:
        self.last = self.loop.time()

    def restart(self, period: float) -> None:
        """Count ``period`` from now (a new period may be shorter than the armed one)."""
        self._timer.cancel()
        self.period = period
        self.last = self.loop.time()
        self._timer = self.loop.call_at(self.last + period, self._check)

    def stop(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        due = self.last + self.period
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._check)
        else:
            self.expired = True
            self.task.cancel()


class StreamRegistry:
    """The streams this process runs, their cancel channel, and recent metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        broker: Broker,
        rooms: RoomRegistry,
        spawn: Spawn,
        post: PostMessage,
    ) -> None:
        self.store = store
        self.broker = broker
        self.rooms = rooms
        self.spawn = spawn
        self.post = post
        self.flush_interval = settings.stream_flush_interval
        self.flush_chars = settings.stream_flush_chars
        self.first_token_timeout = settings.stream_first_token_timeout
        self.idle_timeout = settings.stream_idle_timeout
        self.local: dict[str, Stream] = {}
        self.recent: deque[StreamMetrics] = deque(maxlen=500)
        self._unsubscribe: list[Callable[[], Awaitable[None]]] = []
        self._replies: dict[str, asyncio.Future[CancelReply]] = {}

    @property
    def shared(self) -> bool:
        """Whether other replicas may run streams too (the broker is Redis)."""
        return getattr(self.broker, "redis", None) is not None

    async def setup(self) -> None:
        """Follow the control channel and this process's reply channel; seed new live rooms
        with the streams running here."""
        self.rooms.stream_source = self.snapshots
        broker = self.broker
        self._unsubscribe = [
            await broker.subscribe(STREAMS_CHANNEL, self._on_control),
            await broker.subscribe(reply_channel(NODE), self._on_reply),
        ]
        self.spawn(self._reap_loop(), name="stream-orphans")

    async def stop(self) -> None:
        """Cancel running streams and give them a moment to persist their partial answers."""
        streams = list(self.local.values())
        for stream in streams:
            stream.cancel()
        if streams:
            await asyncio.wait([s.done for s in streams], timeout=2)
        for unsubscribe in self._unsubscribe:
            await unsubscribe()
        self._unsubscribe.clear()

    async def publish(self, room: str, frame: Frame | StreamSeed) -> None:
        await self.rooms.publish_event(room, _event_encoder.encode(frame))

    # ------------------------------------------------------------ streams

    async def start(
        self,
        room: str,
        agent: UserRef,
        *,
        reply_to: str | None = None,
        requested_by: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Stream:
        """Announce a new stream in ``room`` (``stream_start``) and return it, not yet running."""
        stream = Stream(self, room, agent, reply_to=reply_to, requested_by=requested_by, meta=meta)
        self.local[stream.id] = stream
        await self.publish(
            room,
            StreamStart(
                room=room,
                stream_id=stream.id,
                agent=agent,
                reply_to=reply_to,
                requested_by=requested_by,
            ),
        )
        return stream

    async def launch(
        self,
        room: str,
        agent: UserRef,
        pieces: AsyncIterator[str],
        *,
        reply_to: str | None = None,
        requested_by: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Stream:
        """Start a stream and run it in the background (a hub task); returns at once."""
        stream = await self.start(
            room, agent, reply_to=reply_to, requested_by=requested_by, meta=meta
        )
        self.spawn(stream.run(pieces), name=f"stream:{stream.id}")
        return stream

    def _forget(self, stream: Stream) -> None:
        self.local.pop(stream.id, None)

    async def reap_orphans(self) -> int:
        """End streams whose replica died: persist the partial once, tell every room.

        A stream silent for longer than its owner's own timeouts (plus ``ORPHAN_GRACE``)
        has no owner left. Its answer is stored under the same idempotency key the owner
        would have used, so whichever replica gets there first stores it and announces
        ``stream_error{replica_lost}``; the others only end it for their local sockets.
        """
        reaped = 0
        for live in list(self.rooms.live.values()):
            for snap in live.streams.silent(
                self.first_token_timeout + ORPHAN_GRACE, self.idle_timeout + ORPHAN_GRACE
            ):
                if snap.stream_id in self.local:
                    continue  # ours: our own timeouts end it
                live.streams.forget(snap.stream_id)
                reaped += 1
                await self._end_orphan(live.id, snap)
        return reaped

    async def _end_orphan(self, room: str, snap: StreamSnapshot) -> None:
        detail = "the replica running this answer stopped; the part streamed so far is kept"
        message, duplicate = await self.post(
            room,
            snap.agent,
            snap.text or "(no answer: the replica running it stopped)",
            kind="agent",
            client_id=answer_id(snap.stream_id),
            reply_to=snap.reply_to,
            meta={
                "stream_id": snap.stream_id,
                "cancelled": False,
                "interrupted": True,
                "error": {"code": "replica_lost", "detail": detail},
            },
        )
        frame = encode(
            StreamError(
                room=room,
                stream_id=snap.stream_id,
                code="replica_lost",
                detail=detail,
                message=message,
            )
        )
        if duplicate:  # another replica (or the owner) stored it: end it for our sockets only
            live = self.rooms.live.get(room)
            if live is not None:
                live.on_event(envelope(frame))
        else:
            await self.rooms.publish_event(room, frame)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(ORPHAN_SWEEP)
            try:
                await self.reap_orphans()
            except Exception:
                log.exception("orphaned stream sweep failed")

    def snapshots(self, room: str) -> list[StreamSnapshot]:
        """Seed a room that just became live here: this process's streams at once, the
        other replicas' through a :class:`SeedRequest` (answered with ``stream_seed``)."""
        if self.shared:  # other replicas may run streams in this room
            request = msgspec.json.encode(SeedRequest(room=room))
            self.spawn(self.broker.publish(STREAMS_CHANNEL, request), name="stream-seed")
        return [s.snapshot() for s in self.local.values() if s.room == room]

    def record(self, metrics: StreamMetrics) -> None:
        self.recent.append(metrics)
        log.info(
            "stream %s in %s: %d tokens, ttft %s ms, %s tok/s%s%s",
            metrics.stream_id,
            metrics.room,
            metrics.tokens,
            metrics.ttft_ms,
            metrics.tokens_per_s,
            ", cancelled" if metrics.cancelled else "",
            f", error {metrics.error}" if metrics.error else "",
        )

    # ------------------------------------------------------------ cancelling

    async def authorize(self, stream: Stream, room: str, who: str, admin: bool) -> None:
        """The one cancel check, made where the stream runs: it must be in ``room``, and
        ``who`` must have asked, own the room or be an admin. Raises :class:`CancelRefused`."""
        if stream.room != room:
            raise CancelRefused(ErrorCode.UNKNOWN_STREAM, f"no active stream in {room!r}")
        if admin or (stream.requested_by is not None and who == stream.requested_by):
            return
        info = await self.store.get_room(room)
        if info is None or info.created_by != who:
            raise CancelRefused(
                ErrorCode.FORBIDDEN,
                "only the member who asked, the room's owner or an admin can stop this answer",
            )

    async def cancel(self, room: str, stream_id: str, identity: Identity) -> None:
        """Stop a stream for everyone, wherever it runs; raise :class:`CancelRefused` if it is
        not running in ``room`` (``unknown_stream``) or ``identity`` may not stop it."""
        stream = self.local.get(stream_id)
        if stream is not None:
            await self.authorize(stream, room, identity.id, identity.is_admin)
            stream.cancel()
            return
        unknown = CancelRefused(
            ErrorCode.UNKNOWN_STREAM, f"no active stream {stream_id!r} in {room!r}"
        )
        if not self.shared:
            raise unknown
        request = CancelRequest(
            room=room,
            stream_id=stream_id,
            by=identity.id,
            admin=identity.is_admin,
            request=uuid.uuid4().hex,
            reply_to=NODE,
        )
        answer = asyncio.get_running_loop().create_future()
        self._replies[request.request] = answer
        try:
            await self.broker.publish(STREAMS_CHANNEL, msgspec.json.encode(request))
            reply = await asyncio.wait_for(answer, CANCEL_REPLY_TIMEOUT)
        except TimeoutError:
            raise unknown from None
        finally:
            self._replies.pop(request.request, None)
        if reply.code:
            raise CancelRefused(ErrorCode(reply.code), reply.detail)

    def _on_reply(self, data: bytes) -> None:
        try:
            reply = _reply_decoder.decode(data)
        except msgspec.DecodeError:
            log.warning("undecodable cancel reply: %r", data[:200])
            return
        answer = self._replies.get(reply.request)
        if answer is not None and not answer.done():
            answer.set_result(reply)

    def _on_control(self, data: bytes) -> None:
        """``hub:streams`` handler: cancel requests for streams running here, and seed
        requests of rooms that just became live on another replica."""
        try:
            request = _control_decoder.decode(data)
        except msgspec.DecodeError:
            log.warning("undecodable stream control message: %r", data[:200])
            return
        if isinstance(request, SeedRequest):
            for running in list(self.local.values()):
                if running.room == request.room:
                    running.request_seed()
            return
        stream = self.local.get(request.stream_id)
        if stream is not None:  # only the process running it answers
            self.spawn(self._answer(stream, request), name=f"stream-cancel:{stream.id}")

    async def _answer(self, stream: Stream, request: CancelRequest) -> None:
        reply = CancelReply(request=request.request)
        try:
            await self.authorize(stream, request.room, request.by, request.admin)
            stream.cancel()
        except CancelRefused as exc:
            log.info("refused cancel of %s by %s: %s", stream.id, request.by, exc.code)
            reply = CancelReply(request=request.request, code=exc.code, detail=exc.detail)
        if request.reply_to:
            await self.broker.publish(reply_channel(request.reply_to), msgspec.json.encode(reply))
