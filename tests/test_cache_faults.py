"""Redis stopped and restarted under the cache (a private redis-server this test owns):
no request fails, one warning, L2 and cross-replica invalidation come back by themselves."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from hub.cache import CacheManager
from tests.procs import PrivateRedis
from tests.support import eventually


@pytest.fixture
async def redis_server():
    server = PrivateRedis()
    await server.start()
    yield server
    server.stop()


async def _until(predicate, timeout: float = 10.0) -> None:
    await eventually(predicate, timeout, interval=0.05)


async def test_manager_survives_redis_stop_and_restart(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="hub.cache")
    a = CacheManager(redis_url=redis_server.url, prefix="faults:", redis_timeout=0.3)
    b = CacheManager(redis_url=redis_server.url, prefix="faults:", redis_timeout=0.3)
    await a.start()
    await b.start()
    calls = {"n": 0}

    async def load() -> dict[str, int]:
        calls["n"] += 1
        return {"n": calls["n"]}

    try:
        assert await a.get("warm", load) == {"n": 1}

        redis_server.stop()
        # every operation keeps working: L1 hits, loader fills, writes, invalidations
        for i in range(50):
            assert await a.get("warm", load) == {"n": 1}
            assert await a.get(f"cold{i}", load) is not None
            await a.set(f"written{i}", i)
            assert await a.get(f"written{i}") == i
            await a.invalidate(key=f"default:cold{i}")
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, f"one warning per outage, not one per request: {warnings}"
        assert "Redis L2 unavailable" in warnings[0]
        assert a.l2 is not None and not a.l2.available
        failures = a.l2.failures
        assert failures < 50, "the breaker stops calling a dead Redis on every request"

        await redis_server.start()  # same port, empty

        async def recovered() -> bool:
            await a.get("probe", load)  # traffic probes the breaker after its backoff
            return a.l2 is not None and a.l2.available

        await _until(recovered)
        await a.set("after", {"back": True})
        raw = Redis.from_url(redis_server.url)
        assert await raw.exists("faults:k:default:after") == 1, "L2 writes resumed"
        await raw.aclose()
        assert any("is back" in r.getMessage() for r in caplog.records)

        # the invalidation channel reconnected too: B's L1 follows A's invalidations again
        await b.get("shared", load)

        async def subscribed() -> bool:
            if "default:shared" not in b.l1:
                return True
            await a.invalidate(key="default:shared")  # sent again until B hears one
            return False

        await _until(subscribed)
    finally:
        await a.stop()
        await b.stop()


async def test_hub_requests_never_fail_while_redis_restarts(redis_server, make_server):
    async with make_server(redis_url=redis_server.url) as server:
        await server.create_room("general", owner="alice")
        statuses: list[int] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            async with server.http("alice") as alice:
                i = 0
                while not stop.is_set() and i < 2000:
                    i += 1
                    statuses.append((await alice.get("/api/rooms/general/messages")).status_code)
                    statuses.append((await alice.get("/api/rooms")).status_code)
                    await asyncio.sleep(0.01)  # the clients' pace, not a wait

        def more_traffic(than: int):
            return lambda: len(statuses) >= than + 20

        broker = server.hub.broker
        worker = asyncio.create_task(traffic())
        await eventually(more_traffic(0), what="traffic before the outage")
        redis_server.stop()
        during = len(statuses)
        await eventually(lambda: not broker.connected, what="the hub to notice the outage")
        await eventually(more_traffic(during), what="traffic during the outage")
        await redis_server.start()
        await eventually(lambda: broker.connected, what="the hub to see Redis back")
        await eventually(more_traffic(len(statuses)), what="traffic after the outage")
        stop.set()
        await asyncio.wait_for(worker, 30)
        assert len(statuses) > 50
        assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
        async with server.http("alice") as alice:
            posted = await alice.post("/api/rooms/general/messages", json={"text": "after"})
            assert posted.status_code == 201
            page = await alice.get("/api/rooms/general/messages")
            assert page.json()["messages"][-1]["text"] == "after"


def durable_redis(directory) -> PrivateRedis:
    """A redis-server with an append-only file, so data survives kill -9 and restart."""
    return PrivateRedis(["--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)])


async def test_invalidations_made_during_an_outage_are_replayed(tmp_path):
    redis = durable_redis(tmp_path)
    await redis.start()
    a = CacheManager(redis_url=redis.url, prefix="replay:", redis_timeout=0.3)
    await a.start()
    try:
        await a.set("k", "old")
        redis.stop()
        await a.invalidate(key="default:k")  # reaches L1 only: Redis is down
        assert await a.get("k") is None
        await redis.start()  # the append-only file brings the stale value back
        raw = Redis.from_url(redis.url)
        assert await raw.exists("replay:k:default:k") == 1

        async def recovered() -> bool:
            await a.get("probe")
            return a.l2 is not None and a.l2.available

        await _until(recovered)
        assert await raw.exists("replay:k:default:k") == 0, "the lost invalidation was replayed"
        await raw.aclose()
        b = CacheManager(redis_url=redis.url, prefix="replay:")
        assert await b.get("k") is None
        await b.stop()
    finally:
        await a.stop()
        redis.stop()


async def test_restarted_hub_warms_the_previous_runs_hottest_keys(redis_server, make_server):
    async with make_server(redis_url=redis_server.url) as first:
        await first.create_room("general", owner="alice")
        async with first.http("alice") as alice:
            for _ in range(5):
                assert (await alice.get("/api/rooms/general/messages")).status_code == 200
    # stopped: hot-key counts flushed to Redis; the next process loads them before ready
    async with make_server(redis_url=redis_server.url) as second:
        keys = second.hub.cache.l1.keys()
        assert "http-room-history:alice#|/api/rooms/general/messages?" in keys
        assert any(k.startswith("query:before:general:") for k in keys)
        async with second.http("alice") as alice:
            page = await alice.get("/api/rooms/general/messages")
        assert page.headers["x-cache"] == "HIT"
        assert second.hub.cache.stats_.tiers["l2"].hits == 0, "served from the warmed L1"
