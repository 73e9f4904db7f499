"""Replay after reconnect: every missed message once, in order, then live ones."""

from __future__ import annotations

import asyncio
import json

from hub.base.protocol import ChatMessage, MessageFrame, UserRef, encode
from hub.realtime.rooms import LiveRoom, envelope
from tests.support import eventually


async def test_reconnect_with_since_gets_exactly_the_missed_messages_then_live(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    await alice.say("lobby", "before", "m0")
    last_seen = (await bob.expect("message"))["message"]["offset"]
    await bob.close()

    for i in range(50):
        await alice.say("lobby", f"missed {i}", f"m{i + 1}")

    bob = await server.client("bob")
    joined = await bob.join("lobby", since=last_seen, epoch=(await server.hub.room("lobby")).epoch)
    assert joined["recovered"] is True and joined["replayed"] == 50
    replayed = [(await bob.expect("message"))["message"] for _ in range(50)]
    assert [m["text"] for m in replayed] == [f"missed {i}" for i in range(50)]
    assert [m["offset"] for m in replayed] == list(range(last_seen + 1, last_seen + 51))

    await alice.say("lobby", "live", "m-live")
    live = await bob.expect("message")
    assert live["message"]["text"] == "live" and live["message"]["offset"] == last_seen + 51
    assert [f for f in await bob.silent_for(0.3) if f["type"] == "message"] == []


async def test_messages_sent_during_replay_are_neither_lost_nor_doubled(server):
    await server.create_room("lobby")
    writer = await server.client("writer")
    await writer.join("lobby")
    for i in range(30):
        await writer.say("lobby", f"old {i}", f"o{i}")

    async def keep_writing() -> None:
        for i in range(30):
            await writer.send({"type": "send", "room": "lobby", "text": f"new {i}", "id": f"n{i}"})
            await asyncio.sleep(0.002)  # the writer's pace: writes interleave with the join

    reader = await server.client("reader")
    task = asyncio.create_task(keep_writing())
    await reader.send({"type": "join", "room": "lobby", "since": 0})
    await task
    offsets: list[int] = []
    while len(offsets) < 60:
        frame = await reader.expect(lambda f: f["type"] in ("message", "joined"))
        if frame["type"] == "message":
            offsets.append(frame["message"]["offset"])
    assert offsets == list(range(1, 61))
    assert [f for f in await reader.silent_for(0.3) if f["type"] == "message"] == []


async def test_unrecoverable_positions_are_reported_not_skipped(make_server):
    async with make_server(max_replay=5) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        for i in range(10):
            await alice.say("lobby", f"m{i}", f"m{i}")
        bob = await server.client("bob")
        too_far = await bob.join("lobby", since=1)
        assert too_far["recovered"] is False and too_far["replayed"] == 0
        wrong_epoch = await bob.join("lobby", since=8, epoch="another-history")
        assert wrong_epoch["recovered"] is False
        ahead = await bob.join("lobby", since=99)
        assert ahead["recovered"] is False
        ok = await bob.join("lobby", since=8)
        assert ok["recovered"] is True and ok["replayed"] == 2


async def test_resending_with_the_same_id_is_acked_once_and_stored_once(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    first = await alice.say("lobby", "once", "same-id")
    again = await alice.say("lobby", "once", "same-id")
    assert again["offset"] == first["offset"] and again["duplicate"] is True
    history = await server.hub.store.messages_after("lobby", 0, 10)
    assert [m.text for m in history] == ["once"]


class _Sink:
    """A connection stand-in that records what a LiveRoom pushes (LiveRoom is the unit here)."""

    id = "sink"

    def __init__(self) -> None:
        self.frames: list[str] = []

    def push(self, text: str) -> None:
        self.frames.append(text)


async def test_live_room_orders_out_of_order_offsets_and_fills_gaps_from_the_store(server):
    store = server.hub.store
    await server.create_room("ordered")
    author = UserRef(id="a", name="A")
    stored = [(await store.append_message("ordered", author, f"t{i}"))[0] for i in range(4)]

    room = LiveRoom("ordered", store)
    sink = _Sink()
    sub = room.add(sink)  # type: ignore[arg-type]
    room.start(0)
    room.go_live(sub, 0)

    def deliver(message: ChatMessage) -> None:
        room.on_event(envelope(encode(MessageFrame(message)), message.offset))

    deliver(stored[2])  # offset 3 arrives first: held back
    deliver(stored[0])  # offset 1: delivered
    assert len(sink.frames) == 1
    deliver(stored[0])  # duplicate: dropped
    # offset 2 never arrives live: fetched from the store, then offset 3 is released
    await eventually(lambda: len(sink.frames) == 3, what="the gap to be filled")
    deliver(stored[3])
    deliver(stored[1])  # late duplicate of a gap-filled offset: dropped
    texts = [json.loads(f)["message"]["text"] for f in sink.frames]
    assert texts == ["t0", "t1", "t2", "t3"]
