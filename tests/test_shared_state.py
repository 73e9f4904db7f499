"""``hub.shared`` (hub.realtime.shared): keys with a TTL, leases and plugin channels, on the
in-memory default (time driven by an injected clock) and on the real Redis at
127.0.0.1:6379 (two replicas sharing one prefix, TTLs waited on, never slept)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from hub.realtime.broker import Broker
from hub.realtime.shared import MemorySharedState, RedisSharedState
from tests.procs import REDIS_URL
from tests.support import eventually
from tests.support import test_settings as hub_settings


class Clock:
    """A monotonic clock the test moves on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- memory


@pytest.fixture
async def memory() -> AsyncIterator[tuple[MemorySharedState, Clock]]:
    broker, clock = Broker(), Clock()
    await broker.start()
    try:
        yield MemorySharedState(broker, clock=clock), clock
    finally:
        await broker.stop()


async def test_memory_keys_expire_on_the_clock(memory):
    shared, clock = memory
    assert await shared.set("k", b"v", ttl=5)
    assert await shared.set("forever", b"f")
    assert not await shared.set("k", b"other", only_if_absent=True)
    assert await shared.get("k") == b"v"
    clock.now += 4.9
    assert await shared.get("k") == b"v"
    clock.now += 0.1
    assert await shared.get("k") is None
    assert await shared.set("k", b"again", only_if_absent=True)  # expired counts as absent
    assert await shared.get("k") == b"again"
    assert await shared.get("forever") == b"f"
    await shared.delete("forever")
    await shared.delete("never-was")
    assert await shared.get("forever") is None


async def test_memory_leases_are_exclusive_renewable_and_released_by_their_holder(memory):
    shared, clock = memory
    assert await shared.acquire_lease("leader", "a", ttl=6)
    assert not await shared.acquire_lease("leader", "b", ttl=6)
    clock.now += 5
    assert await shared.acquire_lease("leader", "a", ttl=6)  # renewed: lasts 6 from now
    clock.now += 5
    assert not await shared.acquire_lease("leader", "b", ttl=6)
    await shared.release_lease("leader", "b")  # not the holder: nothing happens
    assert not await shared.acquire_lease("leader", "b", ttl=6)
    clock.now += 1
    assert await shared.acquire_lease("leader", "b", ttl=6)  # a's lease expired
    await shared.release_lease("leader", "b")
    assert await shared.acquire_lease("leader", "a", ttl=6)


async def test_memory_channels_and_bad_input(memory):
    shared, _ = memory
    got: list[bytes] = []
    unsubscribe = await shared.subscribe("news", got.append)
    await shared.publish("news", b"one")
    await eventually(lambda: got == [b"one"], what="the message")
    await unsubscribe()
    await shared.publish("news", b"two")
    await shared.publish("other", b"x")  # a witness after it: "two" would have come first
    witness: list[bytes] = []
    stop = await shared.subscribe("other", witness.append)
    await shared.publish("other", b"y")
    await eventually(lambda: witness == [b"y"], what="the witness")
    await stop()
    assert got == [b"one"]
    with pytest.raises(ValueError, match="ttl must be a positive"):
        await shared.set("k", b"v", ttl=0)
    with pytest.raises(ValueError, match="ttl must be a positive"):
        await shared.acquire_lease("l", "a", ttl=-1)
    with pytest.raises(ValueError, match="channel name"):
        await shared.publish("", b"x")


async def test_plugin_channels_do_not_reach_the_hubs_own_channels(memory):
    shared, _ = memory
    broker = shared._broker
    raw: list[bytes] = []
    await broker.subscribe("room:ops", raw.append)
    mine: list[bytes] = []
    await shared.subscribe("room:ops", mine.append)
    await shared.publish("room:ops", b"plugin")
    await eventually(lambda: mine == [b"plugin"], what="the plugin's message")
    assert raw == []


# --------------------------------------------------------------------------- Redis


@pytest.fixture
async def replicas() -> AsyncIterator[list[RedisSharedState]]:
    """Two replicas of one hub (one prefix, their own Redis connections), like two Hubs."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    brokers = [Broker.from_redis_url(REDIS_URL, prefix) for _ in range(2)]
    for broker in brokers:
        await broker.start()
    try:
        yield [RedisSharedState(b.redis, prefix, b) for b in brokers]  # type: ignore[arg-type]
    finally:
        redis = brokers[0].redis
        assert redis is not None
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        for broker in brokers:
            await broker.stop()


async def test_redis_keys_are_shared_and_expire(replicas):
    a, b = replicas
    assert await a.set("k", b"v", ttl=0.3)
    assert await b.get("k") == b"v"
    assert not await b.set("k", b"other", only_if_absent=True)
    assert await a.set("forever", b"f")
    await eventually(lambda: _absent(b, "k"), what="the key's expiry")
    assert await b.set("k", b"again", only_if_absent=True)
    assert await a.get("k") == b"again"
    assert await a.get("forever") == b"f"
    await b.delete("forever")
    assert await a.get("forever") is None
    redis = a._redis
    assert await redis.exists(a._prefix + "k")  # under <prefix>:shared:
    assert a._prefix.endswith(":shared:")


async def _absent(shared: RedisSharedState, key: str) -> bool:
    return await shared.get(key) is None


async def test_redis_leases_are_exclusive_between_replicas(replicas):
    a, b = replicas
    assert await a.acquire_lease("leader", "a", ttl=0.5)
    assert not await b.acquire_lease("leader", "b", ttl=0.5)
    assert await a.acquire_lease("leader", "a", ttl=30)  # renewed, now for long
    ttl_ms = await a._redis.pttl(a._lease("leader"))
    assert ttl_ms > 20_000
    await b.release_lease("leader", "b")  # not the holder: ignored
    assert not await b.acquire_lease("leader", "b", ttl=0.5)
    await a.release_lease("leader", "a")
    assert await b.acquire_lease("leader", "b", ttl=0.3)
    assert not await a.acquire_lease("leader", "a", ttl=0.3)
    await eventually(  # b stops renewing: its lease runs out and a may take it
        lambda: a.acquire_lease("leader", "a", ttl=5), what="the lease's expiry"
    )
    assert not await b.acquire_lease("leader", "b", ttl=5)


async def test_redis_channels_reach_every_replica(replicas):
    a, b = replicas
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    await a.subscribe("links", got["a"].append)
    unsubscribe_b = await b.subscribe("links", got["b"].append)

    async def both_hear() -> bool:  # subscriptions settle on Redis: ping until both hear
        await a.publish("links", b"sync")
        return b"sync" in got["a"] and b"sync" in got["b"]

    def heard(replica: str) -> list[bytes]:
        return [m for m in got[replica] if m != b"sync"]

    await eventually(both_hear, what="the subscriptions")
    await b.publish("links", b"from b")
    await eventually(lambda: heard("a") == [b"from b"] == heard("b"), what="the message")
    await unsubscribe_b()
    await a.publish("links", b"after")
    await eventually(lambda: heard("a") == [b"from b", b"after"], what="the second message")
    assert heard("b") == [b"from b"]


# --------------------------------------------------------------------------- Hub.shared


async def test_hub_shared_is_redis_with_redis_url_and_memory_otherwise(tmp_path):
    from hub.core import Hub
    from hub.store.store import Store

    store = await Store.open(f"sqlite:///{tmp_path}/s.sqlite3")
    try:
        plain = Hub(hub_settings(str(tmp_path)), store, Broker())
        assert isinstance(plain.shared, MemorySharedState)
        prefix = f"t{uuid.uuid4().hex[:8]}"
        broker = Broker.from_redis_url(REDIS_URL, prefix)
        shared = Hub(hub_settings(str(tmp_path), redis_prefix=prefix), store, broker).shared
        assert isinstance(shared, RedisSharedState)
        assert shared._prefix == f"{prefix}:shared:"
        assert broker.redis is not None
        await broker.redis.aclose()
    finally:
        await store.close()
