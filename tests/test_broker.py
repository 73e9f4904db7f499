"""The broker on the shared Redis at 127.0.0.1:6379: hubs with different prefixes are separate."""

from __future__ import annotations

import uuid

from hub.realtime.broker import CONTROL_CHANNEL, Broker, room_channel
from tests.procs import REDIS_URL
from tests.support import eventually


async def test_hubs_with_different_prefixes_on_one_redis_do_not_hear_each_other():
    """Two replicas of one hub and another hub (say, another test's cluster) on one Redis."""
    mine, theirs = (f"t{uuid.uuid4().hex[:8]}" for _ in range(2))
    brokers = [Broker.from_redis_url(REDIS_URL, p) for p in (mine, mine, theirs)]
    got: list[list[tuple[str, bytes]]] = [[], [], []]
    for broker in brokers:
        await broker.start()
    try:
        for i, broker in enumerate(brokers):
            for channel in (room_channel("ops"), CONTROL_CHANNEL):
                await broker.subscribe(
                    channel, lambda data, i=i, c=channel: got[i].append((c, data))
                )

        channels = (room_channel("ops"), CONTROL_CHANNEL)

        async def subscribed() -> bool:  # each hub pings itself until every replica hears it
            for hub, broker in (("mine", brokers[0]), ("theirs", brokers[2])):
                for channel in channels:
                    await broker.publish(channel, f"sync {hub}".encode())
            return all(
                {(c, f"sync {hub}".encode()) for c in channels} <= set(got[i])
                for i, hub in ((0, "mine"), (1, "mine"), (2, "theirs"))
            )

        await eventually(subscribed, what="the subscriptions")
        await brokers[2].publish(room_channel("ops"), b"other hub")
        await brokers[2].publish(CONTROL_CHANNEL, b"other control")
        await brokers[0].publish(room_channel("ops"), b"hello")
        await brokers[0].publish(CONTROL_CHANNEL, b"enable")
        ours = [(room_channel("ops"), b"hello"), (CONTROL_CHANNEL, b"enable")]
        theirs_ = [(room_channel("ops"), b"other hub"), (CONTROL_CHANNEL, b"other control")]

        def heard(i: int) -> list[tuple[str, bytes]]:
            return [(c, data) for c, data in got[i] if not data.startswith(b"sync")]

        for i in (0, 1):  # both replicas of the hub hear its traffic, and only that
            await eventually(lambda i=i: len(heard(i)) >= 2, what=f"broker {i}'s frames")
            assert heard(i) == ours
        await eventually(lambda: len(heard(2)) >= 2, what="the other hub's frames")
        assert heard(2) == theirs_
    finally:
        for broker in brokers:
            await broker.stop()
