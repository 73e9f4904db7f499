"""What a live room knows about the answers streaming in it, for clients joining mid-stream.

:class:`StreamSnapshots` follows the stream frames that pass through a room's channel
(start, deltas, end, error) and keeps, per active stream, the text so far and the last
``seq``. ``RoomRegistry.join`` hands these snapshots out in ``joined.streams`` at the very
moment the socket is added, so the deltas that follow (higher ``seq``) fit without a gap.
A delta whose ``seq`` is not above the snapshot's was seen already and is dropped.

Only stream frames are decoded: msgspec writes the tag first, so they are recognised by
the prefix ``{"type":"stream_`` without parsing messages or presence frames.
"""

from __future__ import annotations

import msgspec

from hub.protocol import StreamDelta, StreamEnd, StreamError, StreamSnapshot, StreamStart

STREAM_PREFIX = '{"type":"stream_'

_decoder = msgspec.json.Decoder(StreamStart | StreamDelta | StreamEnd | StreamError)


class _Active:
    __slots__ = ("parts", "seq", "start")

    def __init__(self, start: StreamStart, text: str = "", seq: int = 0) -> None:
        self.start = start
        self.parts = [text] if text else []
        self.seq = seq

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

    def apply(self, text: str) -> bool:
        """Follow one stream frame; return False if it is a duplicate to drop."""
        try:
            frame = _decoder.decode(text)
        except msgspec.DecodeError:
            return True  # not ours to judge; pass it on
        if isinstance(frame, StreamStart):
            self._active.setdefault(frame.stream_id, _Active(frame))
            return True
        active = self._active.get(frame.stream_id)
        if isinstance(frame, StreamDelta):
            if active is None:
                return True
            if frame.seq <= active.seq:
                return False
            active.parts.append(frame.text)
            active.seq = frame.seq
            return True
        self._active.pop(frame.stream_id, None)
        return True

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
