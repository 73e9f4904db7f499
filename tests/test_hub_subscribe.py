"""``Hub.subscribe``: a room's server frames for in-process consumers (the bridge), in
offset order with gaps filled from the store, as sockets get them; a slow or failing
consumer holds up neither the room's sockets nor its own later frames."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

from hub.base.protocol import MessageFrame, ServerFrame, UserRef
from hub.core import Hub
from tests.procs import REDIS_URL, pg_schema
from tests.support import eventually
from tests.support import test_settings as hub_settings

ALICE = UserRef(id="alice", name="Alice")


class Frames:
    """A consumer recording ``(offset, frame)``; message offsets via :attr:`offsets`."""

    def __init__(self) -> None:
        self.got: list[tuple[int, ServerFrame]] = []

    async def __call__(self, offset: int, frame: ServerFrame) -> None:
        self.got.append((offset, frame))

    @property
    def offsets(self) -> list[int]:
        return [o for o, f in self.got if isinstance(f, MessageFrame)]

    @property
    def texts(self) -> list[str]:
        return [f.message.text for _, f in self.got if isinstance(f, MessageFrame)]


@pytest.fixture
async def hub(tmp_path) -> AsyncIterator[Hub]:
    hub = await Hub.create(hub_settings(str(tmp_path)))
    try:
        await hub.store.create_room("ops", created_by="alice")
        yield hub
    finally:
        await hub.stop()


async def test_frames_come_in_offset_order_with_gaps_filled_from_the_store(hub):
    frames = Frames()
    unsubscribe = await hub.subscribe("ops", frames)
    # stored but never published (a replica's publish lost): filled in from the store
    await hub.store.append_message("ops", ALICE, "one")
    await hub.store.append_message("ops", ALICE, "two")
    await hub.post_message("ops", ALICE, "three")
    await eventually(lambda: len(frames.offsets) == 3, what="the gap filled")
    assert frames.offsets == [1, 2, 3]
    assert frames.texts == ["one", "two", "three"]
    assert all(offset == f.message.offset for offset, f in frames.got)

    # published out of order: delivered in order, each once
    four, _ = await hub.store.append_message("ops", ALICE, "four")
    five, _ = await hub.store.append_message("ops", ALICE, "five")
    await hub.rooms.publish_message(five)
    await hub.rooms.publish_message(four)
    await hub.rooms.publish_message(four)
    await eventually(lambda: len(frames.offsets) == 5, what="the reordered pair")
    await hub.post_message("ops", ALICE, "six")  # a witness: anything duplicated came first
    await eventually(lambda: len(frames.offsets) >= 6, what="the witness")
    assert frames.offsets == [1, 2, 3, 4, 5, 6]

    await unsubscribe()
    assert "ops" not in hub.rooms.live  # no socket and no consumer left: room dropped
    await hub.post_message("ops", ALICE, "seven")
    late = Frames()
    stop = await hub.subscribe("ops", late)  # a new subscriber starts from now
    await hub.post_message("ops", ALICE, "eight")
    await eventually(lambda: late.texts == ["eight"], what="the new subscriber's frame")
    await stop()
    assert frames.texts[-1] == "six"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_slow_or_failing_consumer_stalls_neither_sockets_nor_itself(make_server):
    async with make_server() as server:
        hub: Hub = server.hub
        await server.create_room("ops")
        bob = await server.client("bob")
        await bob.send({"type": "join", "room": "ops"})
        await bob.expect("joined")

        release = asyncio.Event()
        slow = Frames()

        async def slow_consumer(offset: int, frame: ServerFrame) -> None:
            await release.wait()
            await slow(offset, frame)

        failing = Frames()

        async def failing_consumer(offset: int, frame: ServerFrame) -> None:
            await failing(offset, frame)
            if isinstance(frame, MessageFrame) and frame.message.text == "one":
                raise RuntimeError("consumer bug")

        stops = [await hub.subscribe("ops", slow_consumer)]
        stops.append(await hub.subscribe("ops", failing_consumer))
        errors = Records()
        logging.getLogger("hub.core").addHandler(errors)
        try:
            for text in ("one", "two", "three"):
                await hub.post_message("ops", ALICE, text)
            for text in ("one", "two", "three"):  # the socket is not held up by the slow one
                frame = await bob.expect("message")
                assert frame["message"]["text"] == text
            await eventually(lambda: len(failing.offsets) == 3, what="frames after the failure")
            assert failing.texts == ["one", "two", "three"]
        finally:
            logging.getLogger("hub.core").removeHandler(errors)
        [logged] = errors.records  # the failure is logged, once, with its traceback
        assert logged.exc_info and str(logged.exc_info[1]) == "consumer bug"
        assert "room subscriber of ops failed on offset 1" in logged.getMessage()
        assert slow.got == []  # still blocked on its first frame
        release.set()
        await eventually(lambda: len(slow.offsets) == 3, what="the slow consumer catching up")
        assert slow.texts == ["one", "two", "three"]
        for stop in stops:
            await stop()
        assert "ops" in hub.rooms.live  # bob is still in the room
        await bob.close()


@pytest.fixture
async def replicas(tmp_path) -> AsyncIterator[tuple[Hub, Hub]]:
    """Two hubs on one PostgreSQL schema and one Redis prefix, like two replicas."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with pg_schema() as url:
        hubs = []
        try:
            for i in range(2):
                settings = hub_settings(
                    str(tmp_path / f"r{i}"),
                    database_url=url,
                    redis_url=REDIS_URL,
                    redis_prefix=prefix,
                )
                hubs.append(await Hub.create(settings))
            yield hubs[0], hubs[1]
        finally:
            for hub in reversed(hubs):
                await hub.stop()


async def test_a_replica_gets_the_frames_posted_on_another_in_order(replicas):
    first, second = replicas
    await first.store.create_room("ops", created_by="alice")
    frames = Frames()
    unsubscribe = await second.subscribe("ops", frames)

    async def subscribed() -> bool:  # Redis subscriptions settle: post until one is heard
        await first.post_message("ops", ALICE, "sync")
        return bool(frames.got)

    await eventually(subscribed, what="the subscription on Redis")
    await first.store.append_message("ops", ALICE, "lost on the way")  # never published
    last, _ = await first.post_message("ops", ALICE, "last")
    await eventually(lambda: frames.offsets[-1:] == [last.offset], what="the last message")
    # every offset once, in order, from the first after subscribing: the gap was filled
    assert frames.offsets == list(range(1, last.offset + 1))
    assert frames.texts[-2:] == ["lost on the way", "last"]
    await unsubscribe()
