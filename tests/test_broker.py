"""The broker on the shared Redis at 127.0.0.1:6379: hubs with different prefixes are separate."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from hub.broker import CONTROL_CHANNEL, Broker, room_channel
from tests.procs import REDIS_URL
from tests.support import eventually


async def test_hubs_with_different_prefixes_on_one_redis_do_not_hear_each_other():
    """Two replicas of one hub and another hub (say, another test's cluster) on one Redis."""
    mine, theirs = (f"t{uuid.uuid4().hex[:8]}" for _ in range(2))
    brokers = [Broker.from_redis_url(REDIS_URL, p) for p in (mine, mine, theirs)]
    got: list[list[tuple[str, bytes]]] = [[], [], []]
    redis = Redis.from_url(REDIS_URL)
    for broker in brokers:
        await broker.start()
    try:
        for i, broker in enumerate(brokers):
            for channel in (room_channel("ops"), CONTROL_CHANNEL):
                await broker.subscribe(
                    channel, lambda data, i=i, c=channel: got[i].append((c, data))
                )

        async def all_subscribed() -> bool:  # 3 brokers x 2 channels, each under its prefix
            names = [n for p in (mine, theirs) for n in await redis.pubsub_channels(f"*{p}*")]
            return bool(names) and sum(n for _, n in await redis.pubsub_numsub(*names)) == 6

        await eventually(all_subscribed, what="the subscriptions")
        await brokers[2].publish(room_channel("ops"), b"other hub")
        await brokers[2].publish(CONTROL_CHANNEL, b"other control")
        await brokers[0].publish(room_channel("ops"), b"hello")
        await brokers[0].publish(CONTROL_CHANNEL, b"enable")
        ours = [(room_channel("ops"), b"hello"), (CONTROL_CHANNEL, b"enable")]
        for i in (0, 1):  # both replicas of the hub hear its traffic, and only that
            await eventually(lambda i=i: len(got[i]) >= 2, what=f"broker {i}'s frames")
            assert got[i] == ours
        await eventually(lambda: len(got[2]) >= 2, what="the other hub's frames")
        assert got[2] == [(room_channel("ops"), b"other hub"), (CONTROL_CHANNEL, b"other control")]
    finally:
        for broker in brokers:
            await broker.stop()
        await redis.aclose()
