"""Gap filling in a live room, against a real store made slow on purpose: a gap that closes
by itself while the store is being read re-queues nothing, no read asks for fewer than one
row, and the filler stops once there is no gap (issue 13, item 3)."""

from __future__ import annotations

import asyncio
import json

import pytest

from hub.base.protocol import ChatMessage, MessageFrame, UserRef, encode
from hub.realtime.connection import Outbox
from hub.realtime.rooms import LiveRoom, envelope
from hub.store.store import Store
from tests.procs import opened_store

ALICE = UserRef(id="alice", name="Alice")


class GatedReads:
    """The store's ``messages_after``, held at a gate the test opens; every call recorded."""

    def __init__(self, store: Store, failures: int = 0) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.reading = asyncio.Event()
        self.asked: list[tuple[int, int]] = []
        self.failures = failures

    async def messages_after(self, room: str, after: int, limit: int) -> list[ChatMessage]:
        self.asked.append((after, limit))
        self.reading.set()
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        return await self.store.messages_after(room, after, limit)


@pytest.fixture
async def store(tmp_path):
    async with opened_store("sqlite", tmp_path) as opened:
        await opened.create_room("r", created_by="alice")
        yield opened


async def _messages(store: Store, count: int) -> list[ChatMessage]:
    return [(await store.append_message("r", ALICE, f"m{i}"))[0] for i in range(count)]


def _live(room: LiveRoom, message: ChatMessage) -> None:
    room.on_event(envelope(encode(MessageFrame(message)), message.offset))


def _offsets(outbox: Outbox) -> list[int]:
    frames = []
    while outbox._frames:
        text = outbox._frames.popleft()
        assert text is not None
        frames.append(json.loads(text)["message"]["offset"])
    return frames


def _room(reads: GatedReads) -> tuple[LiveRoom, Outbox]:
    room = LiveRoom("r", reads)  # type: ignore[arg-type]
    outbox = Outbox("sub", 100)
    room.go_live(room.add(outbox), 0)  # type: ignore[arg-type]
    room.start(0)
    return room, outbox


async def test_a_gap_closing_during_the_read_requeues_nothing_and_the_filler_stops(store):
    m1, m2, m3, m4 = await _messages(store, 4)
    reads = GatedReads(store)
    room, outbox = _room(reads)

    _live(room, m2)  # 1 is missing: a filler starts and blocks in the store
    await asyncio.wait_for(reads.reading.wait(), 5)
    _live(room, m1)  # ...while the gap closes by itself, and more arrives
    _live(room, m3)
    reads.gate.set()
    filler = room._gap_task
    assert filler is not None
    await asyncio.wait_for(filler, 5)  # stops: no gap is left

    assert _offsets(outbox) == [1, 2, 3]
    assert room._pending == {} and room.delivered == 3
    assert all(limit >= 1 for _, limit in reads.asked), reads.asked
    _live(room, m4)  # the next message is delivered at once, with no filler behind it
    assert _offsets(outbox) == [4]
    assert room._gap_task is filler and len(reads.asked) == 1


async def test_a_real_gap_is_read_from_the_store_once_in_order(store):
    await _messages(store, 4)
    messages = await store.messages_after("r", 0, 10)
    reads = GatedReads(store)
    reads.gate.set()
    room, outbox = _room(reads)

    _live(room, messages[3])  # 1..3 never arrive live
    assert room._gap_task is not None
    await asyncio.wait_for(room._gap_task, 5)

    assert _offsets(outbox) == [1, 2, 3, 4]
    assert reads.asked == [(0, 3)]  # exactly the missing offsets
    assert room._pending == {}


async def test_a_failing_store_is_retried_and_nothing_is_lost(store):
    messages = await _messages(store, 3)
    reads = GatedReads(store, failures=2)
    reads.gate.set()
    room, outbox = _room(reads)

    _live(room, messages[2])
    assert room._gap_task is not None
    await asyncio.wait_for(room._gap_task, 5)

    assert room._gap_task.exception() is None
    assert _offsets(outbox) == [1, 2, 3]
    assert len(reads.asked) == 3 and reads.failures == 0
