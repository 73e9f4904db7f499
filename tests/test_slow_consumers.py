"""Slow consumers: a room's consumer that stops reading never grows the hub's memory nor
holds up the room or the others.

- ``Hub.subscribe`` (plugins, the bridge): the subscriber's queue is bounded by
  ``subscriber_queue_frames``; when it is full the queue is dropped and the consumer, once it
  reads again, gets ``error{slow_consumer}`` with the offset of the last message it had, then
  every message after it from the store: all persisted messages, in order, each once.
- A WebSocket client that stops reading: its outbox is bounded by ``send_queue_frames``; it
  is closed (4429) and, since it reads nothing, dropped after the close grace: it leaves the
  room (presence offline) without anyone waiting for it, and resumes with ``since``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from hub.base.config import SettingsError, load_settings
from hub.base.protocol import (
    Error,
    ErrorCode,
    MessageFrame,
    RoomEvent,
    ServerFrame,
    UserRef,
)
from hub.core import Hub
from hub.realtime.rooms import Follower
from tests.support import eventually
from tests.support import test_settings as hub_settings

ALICE = UserRef(id="alice", name="Alice")
BOUND = 32


class Consumer:
    """Records ``(offset, frame)``; holds (awaits ``release``) on the frames ``hold`` picks."""

    def __init__(self, hold: Any = None) -> None:
        self.got: list[tuple[int, ServerFrame]] = []
        self.hold = hold or (lambda offset, frame: False)
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, offset: int, frame: ServerFrame) -> None:
        self.got.append((offset, frame))
        if self.hold(offset, frame):
            self.held.set()
            await self.release.wait()
            self.release.clear()

    @property
    def offsets(self) -> list[int]:
        return [f.message.offset for _, f in self.got if isinstance(f, MessageFrame)]

    @property
    def notices(self) -> list[tuple[int, Error]]:
        return [(o, f) for o, f in self.got if isinstance(f, Error)]

    @property
    def events(self) -> list[str]:
        return [f.event for _, f in self.got if isinstance(f, RoomEvent)]


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
async def hub(tmp_path) -> AsyncIterator[Hub]:
    hub = await Hub.create(hub_settings(str(tmp_path), subscriber_queue_frames=BOUND))
    try:
        await hub.store.create_room("ops", created_by="alice")
        yield hub
    finally:
        await hub.stop()


def followers(hub: Hub, room: str = "ops") -> list[Follower]:
    return list(hub.rooms.live[room].consumers.values())


async def test_a_subscriber_that_stops_reading_stays_bounded_and_gets_every_message_back(hub):
    # blocks on its first frame, message 1
    stalled = Consumer(hold=lambda offset, frame: isinstance(frame, MessageFrame) and offset == 1)
    normal = Consumer()
    stops = [await hub.subscribe("ops", stalled), await hub.subscribe("ops", normal)]
    slow_queue, normal_queue = followers(hub)
    warnings = Warnings()
    logging.getLogger("hub.realtime.rooms").addHandler(warnings)
    try:
        total = 10 * BOUND
        for n in range(1, total + 1):
            message, _ = await hub.post_message("ops", ALICE, f"m{n}")
            assert message.offset == n  # the room is never held up
            if n % BOUND == 0:  # events too: the normal consumer gets them, in place
                await hub.publish_event("ops", RoomEvent(room="ops", event=f"e{n}", detail=""))
            assert slow_queue.queued <= BOUND
        await eventually(lambda: len(normal.offsets) == total, what="the normal consumer")
        assert normal.offsets == list(range(1, total + 1))
        assert normal.events == [f"e{n}" for n in range(BOUND, total + 1, BOUND)]
        assert normal.notices == [] and normal_queue.drops == 0
        await stalled.held.wait()
        assert stalled.offsets == [1]

        # bounded: the stalled one's queue never held more than the bound, dropped once
        assert slow_queue.peak == BOUND and slow_queue.queued == 0
        assert slow_queue.drops == 1 and hub.rooms.slow_consumers["subscriber"] == 1
        [line] = [w for w in warnings.lines if "fell" in w]  # one line per drop, not per frame
        assert f"room subscriber of ops fell {BOUND} frames behind after offset 1" in line

        stalled.release.set()  # it reads again: told what it missed, then all from the store
        await eventually(lambda: len(stalled.offsets) == total, what="the replay")
        [(offset, notice)] = stalled.notices
        assert offset == 1 and notice.code == ErrorCode.SLOW_CONSUMER and notice.room == "ops"
        assert stalled.got[1] == (offset, notice)  # right after the last message it had
        assert stalled.offsets == list(range(1, total + 1))  # in order, each once
        assert stalled.events == []  # the events it missed are not replayed (not stored)

        # live again: both get what comes next
        await hub.publish_event("ops", RoomEvent(room="ops", event="after", detail=""))
        last, _ = await hub.post_message("ops", ALICE, "after")
        for consumer in (stalled, normal):
            await eventually(lambda c=consumer: c.offsets[-1] == last.offset, what="live again")
            assert consumer.events[-1] == "after"
        assert stalled.offsets == list(range(1, last.offset + 1))
        assert slow_queue.drops == 1
    finally:
        logging.getLogger("hub.realtime.rooms").removeHandler(warnings)
        for stop in stops:
            await stop()
    assert "ops" not in hub.rooms.live


async def test_a_subscriber_too_slow_during_its_replay_is_dropped_again_and_loses_nothing(hub):
    # holds on offset 1 (live), then on offset 2 (the first replayed message)
    slow = Consumer(hold=lambda offset, frame: isinstance(frame, MessageFrame) and offset <= 2)
    stop = await hub.subscribe("ops", slow)
    [queue] = followers(hub)
    for n in range(2 * BOUND):
        await hub.post_message("ops", ALICE, f"a{n}")
    await slow.held.wait()  # on offset 1
    room = hub.rooms.live["ops"]
    await eventually(lambda: room.delivered == 2 * BOUND, what="the first posts fanned out")
    assert queue.drops == 1
    slow.held.clear()
    slow.release.set()
    await slow.held.wait()  # on offset 2, from the store; meanwhile the room goes on
    first_target = 2 * BOUND
    for n in range(2 * BOUND):
        await hub.post_message("ops", ALICE, f"b{n}")
        assert queue.queued <= BOUND
    await eventually(lambda: room.delivered == 4 * BOUND, what="the next posts fanned out")
    assert queue.drops == 2
    slow.release.set()
    total = 4 * BOUND
    await eventually(lambda: len(slow.offsets) == total, what="both replays")
    assert slow.offsets == list(range(1, total + 1))
    # told twice: after offset 1, then after the end of the first replay
    assert [offset for offset, _ in slow.notices] == [1, first_target]
    assert queue.peak <= BOUND
    assert hub.rooms.slow_consumers["subscriber"] == 2
    await stop()


async def test_a_failing_subscriber_is_not_a_slow_one(hub):
    def boom(offset: int, frame: ServerFrame) -> bool:
        raise RuntimeError("consumer bug")

    failing = Consumer(hold=boom)
    stop = await hub.subscribe("ops", failing)
    for n in range(3 * BOUND):
        await hub.post_message("ops", ALICE, f"m{n}")
    await eventually(lambda: len(failing.offsets) == 3 * BOUND, what="every frame")
    assert failing.notices == [] and hub.rooms.slow_consumers["subscriber"] == 0
    await stop()


def test_the_queue_bound_must_be_at_least_one(tmp_path):
    for value in (0, -5):
        with pytest.raises(SettingsError, match=r">= 1 - at `\$\.subscriber_queue_frames`"):
            hub_settings(str(tmp_path), subscriber_queue_frames=value)
    with pytest.raises(SettingsError, match=r"LYDIAN_SUBSCRIBER_QUEUE_FRAMES: .* at least 1"):
        load_settings(env={"LYDIAN_SUBSCRIBER_QUEUE_FRAMES": "0"})
    config = tmp_path / "lydian.toml"
    config.write_text("[hub]\nsubscriber_queue_frames = 0\n")
    with pytest.raises(SettingsError, match=r"subscriber_queue_frames: .* at least 1, got 0"):
        load_settings(env={"LYDIAN_CONFIG": str(config)})
    assert load_settings(env={}).subscriber_queue_frames == 1024


# --------------------------------------------------------------------------- WebSockets

SOCKET_BOUND = 16
PAYLOAD = "x" * 15_000  # big frames fill the loopback buffers in a few hundred messages


async def stalled_client(server: Any, user: str) -> websockets.ClientConnection:
    """A real client that says hello, joins ``ops`` and then reads nothing: a tiny receive
    buffer, and the library pauses reading the socket once one frame waits unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    ws = await websockets.connect(
        server.ws_url, sock=sock, max_size=None, ping_interval=None, max_queue=1
    )
    await ws.send(json.dumps({"type": "hello", "token": server.token(user)}))
    assert json.loads(await ws.recv())["type"] == "welcome"
    await ws.send(json.dumps({"type": "join", "room": "ops"}))
    assert json.loads(await ws.recv())["type"] == "joined"
    return ws


async def test_a_socket_that_stops_reading_is_dropped_and_resumes_without_a_gap(make_server):
    async with make_server(send_queue_frames=SOCKET_BOUND) as server:
        hub: Hub = server.hub
        await server.create_room("ops")
        bob = await server.client("bob")
        await bob.join("ops")
        ws = await stalled_client(server, "carol")
        [carol] = [c for c in hub.connections.values() if c.user and c.user.id == "carol"]
        got: list[int] = []

        async def read_bob() -> None:  # bob reads all along
            while True:
                frame = await bob.expect("message", timeout=30)
                got.append(frame["message"]["offset"])

        reader = asyncio.create_task(read_bob())
        try:
            posted = 0
            while carol.close_code is None:  # until the loopback buffers are full
                assert posted < 3000, "the stalled client was never closed"
                message, _ = await hub.post_message("ops", ALICE, PAYLOAD)
                posted = message.offset
                assert carol.queued_frames <= SOCKET_BOUND
            for n in range(10 * SOCKET_BOUND):  # the room carries on regardless
                message, _ = await hub.post_message("ops", ALICE, f"more {n}")
                posted = message.offset
                assert carol.queued_frames <= SOCKET_BOUND + 1  # + the end marker
            assert carol.close_code == 4429
            assert hub.rooms.slow_consumers["socket"] == 1

            # carol, reading nothing, cannot even be sent the close: dropped after the grace
            await eventually(lambda: carol.id not in hub.connections, 20, what="carol dropped")
            assert list(hub.rooms.live["ops"].subscribers) != [] and all(
                sub.conn.user.id == "bob" for sub in hub.rooms.live["ops"].subscribers.values()
            )
            await eventually(lambda: len(got) == posted, 30, what="bob's messages")
            assert got == list(range(1, posted + 1))  # bob: everything, in order
            async with server.http() as http:
                health = (await http.get("/healthz")).json()
            assert health["slow_consumers"] == {"socket": 1, "sse": 0, "subscriber": 0}
        finally:
            reader.cancel()

        # carol reads again: what was already on its way, in order, then the connection ends
        seen: list[int] = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] == "message":
                    seen.append(frame["message"]["offset"])
        assert seen == list(range(1, len(seen) + 1))
        # and she resumes where she was, without a gap
        again = await server.client("carol")
        joined = await again.join("ops", since=seen[-1] if seen else 0)
        assert joined["recovered"] is True
        rest = [
            (await again.expect("message"))["message"]["offset"] for _ in range(joined["replayed"])
        ]
        assert seen + rest == list(range(1, posted + 1))
        await again.close()
        await bob.close()


async def test_a_replay_longer_than_the_send_queue_is_paced_not_cut(make_server):
    # before: the replay was queued at once, so resuming after more than send_queue_frames
    # messages always ended in 4429, and resuming again did the same
    async with make_server(send_queue_frames=8) as server:
        hub: Hub = server.hub
        await server.create_room("ops")
        for n in range(100):
            await hub.post_message("ops", ALICE, f"m{n}")
        carol = await server.client("carol")
        joined = await carol.join("ops", since=0)
        assert joined["recovered"] is True and joined["replayed"] == 100
        offsets = [(await carol.expect("message"))["message"]["offset"] for _ in range(100)]
        assert offsets == list(range(1, 101))
        last, _ = await hub.post_message("ops", ALICE, "live")  # and live after it
        assert (await carol.expect("message"))["message"]["offset"] == last.offset
        assert hub.rooms.slow_consumers["socket"] == 0
        await carol.close()
