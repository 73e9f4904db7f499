"""What a live room knows about the answers streaming in it, for clients joining mid-stream.

:class:`StreamSnapshots` follows the stream frames that pass through a room's channel
(start, deltas, end, error) and keeps, per active stream, the text so far and the last
``seq``. ``RoomRegistry.join`` hands these snapshots out in ``joined.streams`` at the very
moment the socket is added, so the deltas that follow (higher ``seq``) fit without a gap.
A delta whose ``seq`` is not above the snapshot's was seen already and is dropped.

Only stream frames are decoded: msgspec writes the tag first, so they are recognised by
the prefix ``{"type":"stream_`` without parsing messages or presence frames.

A room that becomes live on a replica while another replica runs a stream in it learns the
stream from a :class:`StreamSeed`: an internal frame (never sent to clients) that the running
replica publishes in order with its deltas when asked. Until then, deltas of a stream this
room never saw start are held back; the seed is passed on to the room's sockets as a
``stream_start`` and one ``stream_delta`` carrying all the text so far, so they fit the
deltas that follow.
"""

from __future__ import annotations

import time

import msgspec

from hub.base.protocol import (
    StreamDelta,
    StreamEnd,
    StreamError,
    StreamSnapshot,
    StreamStart,
    encode,
)

STREAM_PREFIX = '{"type":"stream_'


class StreamSeed(msgspec.Struct, tag_field="type", tag="stream_seed"):
    """Internal: a running stream's state, for rooms that became live after it started."""

    room: str
    snapshot: StreamSnapshot


_decoder = msgspec.json.Decoder(StreamStart | StreamDelta | StreamEnd | StreamError | StreamSeed)


class _Active:
    __slots__ = ("heard", "parts", "seq", "start")

    def __init__(self, start: StreamStart, text: str = "", seq: int = 0) -> None:
        self.start = start
        self.parts = [text] if text else []
        self.seq = seq
        self.heard = time.monotonic()  # last frame of this stream seen here

    def snapshot(self) -> StreamSnapshot:
        return StreamSnapshot(
            stream_id=self.start.stream_id,
            agent=self.start.agent,
            text="".join(self.parts),
            seq=self.seq,
            reply_to=self.start.reply_to,
            requested_by=self.start.requested_by,
        )


class StreamSnapshots:
    """Active streams of one room in this process."""

    def __init__(self, room: str) -> None:
        self.room = room
        self._active: dict[str, _Active] = {}

    def apply(self, text: str) -> list[str]:
        """Follow one stream frame; return the frames to pass on to the room's sockets."""
        try:
            frame = _decoder.decode(text)
        except msgspec.DecodeError:
            return [text]  # not ours to judge; pass it on
        if isinstance(frame, StreamStart):
            self._active.setdefault(frame.stream_id, _Active(frame))
            return [text]
        if isinstance(frame, StreamSeed):
            return self._seeded(frame.snapshot)
        active = self._active.get(frame.stream_id)
        if isinstance(frame, StreamDelta):
            if active is None or frame.seq <= active.seq:
                return []  # seen already, or of a stream whose seed is on its way
            active.parts.append(frame.text)
            active.seq = frame.seq
            active.heard = time.monotonic()
            return [text]
        self._active.pop(frame.stream_id, None)
        return [text]

    def silent(self, first_token_after: float, idle_after: float) -> list[StreamSnapshot]:
        """Streams not heard from for longer than their owner would let them run."""
        now = time.monotonic()
        return [
            a.snapshot()
            for a in self._active.values()
            if now - a.heard > (idle_after if a.seq else first_token_after)
        ]

    def forget(self, stream_id: str) -> None:
        self._active.pop(stream_id, None)

    def _seeded(self, snap: StreamSnapshot) -> list[str]:
        if snap.stream_id in self._active:
            return []  # known here already: the seed is for another room's benefit
        self.seed([snap])
        start = self._active[snap.stream_id].start
        out = [encode(start).decode()]
        if snap.seq:
            delta = StreamDelta(
                room=self.room, stream_id=snap.stream_id, seq=snap.seq, text=snap.text
            )
            out.append(encode(delta).decode())
        return out

    def seed(self, snapshots: list[StreamSnapshot]) -> None:
        """Start from streams already running in this process (the room was not live here)."""
        for snap in snapshots:
            start = StreamStart(
                room=self.room,
                stream_id=snap.stream_id,
                agent=snap.agent,
                reply_to=snap.reply_to,
                requested_by=snap.requested_by,
            )
            self._active.setdefault(snap.stream_id, _Active(start, snap.text, snap.seq))

    def get(self, stream_id: str) -> StreamSnapshot | None:
        active = self._active.get(stream_id)
        return active.snapshot() if active else None

    def list(self) -> list[StreamSnapshot]:
        return [a.snapshot() for a in self._active.values()]
