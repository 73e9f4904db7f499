"""CacheManager against the real Redis at 127.0.0.1:6379: tiers, TTL, LRU, single-flight,
strategies, invalidation by key/tag/event, coherence between managers, bad values."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from hub.cache import (
    CacheLoaderError,
    CacheLoaderTimeout,
    CacheManager,
    CacheStrategy,
    CacheValueError,
    CacheValueTooLarge,
)
from hub.cache.tiers import MemoryTier
from lydian_plugins.cache_strategies import lydian_cache_strategies
from lydian_plugins.cache_strategies.strategies import AdaptiveStrategy
from tests.support import eventually

REDIS = "redis://127.0.0.1:6379/0"


class Counter:
    """A loader that counts its calls and returns ``value`` (or the call number)."""

    def __init__(self, value: Any = None, gate: asyncio.Event | None = None) -> None:
        self.calls = 0
        self.value = value
        self.gate = gate  # a slow loader: returns once the test opens the gate

    async def __call__(self) -> Any:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.value if self.value is not None else {"n": self.calls}


@pytest.fixture
def prefix():
    return f"lydian:test:{secrets.token_hex(4)}:"


@pytest.fixture
async def redis_cleanup(prefix):
    yield
    client = Redis.from_url(REDIS)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def make_manager(prefix, redis_cleanup):
    managers: list[CacheManager] = []

    async def factory(redis: bool = True, **kw: Any) -> CacheManager:
        kw.setdefault("strategies", lydian_cache_strategies())
        manager = CacheManager(redis_url=REDIS if redis else None, prefix=prefix, **kw)
        await manager.start()
        managers.append(manager)
        return manager

    yield factory
    for manager in managers:
        await manager.stop()


def l2_lookups(m: CacheManager) -> int:
    """How many reads have finished their L2 lookup: a caller past it has decided whether to
    start a load or join one (nothing awaits in between)."""
    l2 = m.stats_.tiers["l2"]
    return l2.hits + l2.misses + l2.errors


# ---------------------------------------------------------------------- tiers


async def test_tier_walk_populates_the_tiers_above(make_manager, prefix):
    a = await make_manager()
    loader = Counter({"rooms": ["general"]})
    assert await a.get("k", loader) == {"rooms": ["general"]}
    assert loader.calls == 1
    assert a.stats_.tiers["l1"].misses == 1 and a.stats_.tiers["l2"].misses == 1
    assert "default:k" in a.l1
    assert await a.get("k", loader) == {"rooms": ["general"]}
    assert loader.calls == 1 and a.stats_.tiers["l1"].hits == 1
    raw = await a.l2.client.get(f"{prefix}k:default:k")
    assert raw is not None

    b = await make_manager()  # a second replica: empty L1, shared L2
    assert "default:k" not in b.l1
    assert await b.get("k", loader) == {"rooms": ["general"]}
    assert loader.calls == 1, "L2 hit must not call the loader"
    assert b.stats_.tiers["l2"].hits == 1
    assert "default:k" in b.l1, "an L2 hit populates L1"


async def test_l1_only_without_redis(make_manager):
    m = await make_manager(redis=False)
    loader = Counter()
    assert await m.get("k", loader) == {"n": 1}
    assert await m.get("k", loader) == {"n": 1}
    assert loader.calls == 1
    assert m.stats()["l2"] == {"configured": False, "available": False, "failures": 0}


async def test_ttl_expiry_in_both_tiers(make_manager, prefix):
    now = [0.0]  # L1's clock: stands still until the test moves it, however busy the machine
    m = await make_manager(clock=lambda: now[0])
    m.configure("short", strategy="ttl", ttl=0.2)
    loader = Counter()
    assert await m.get("k", loader, namespace="short") == {"n": 1}
    assert await m.get("k", loader, namespace="short") == {"n": 1}
    now[0] += 0.35

    async def l2_expired() -> bool:
        return not await m.l2.client.exists(f"{prefix}k:short:k")

    await eventually(l2_expired, what="Redis to expire the L2 copy")
    assert await m.get("k", loader, namespace="short") == {"n": 2}
    assert m.stats_.tiers["l2"].misses == 2, "L2 expired too"


def test_lru_eviction_by_bytes_and_entries():
    now = [0.0]
    tier = MemoryTier(max_entries=100, max_bytes=3 * (1000 + 1 + 96), clock=lambda: now[0])
    for name in "abc":
        assert tier.set(name, b"x" * 1000, None)
    assert tier.get("a") is not None  # a is now most recent; b is the LRU
    tier.set("d", b"x" * 1000, None)
    assert tier.get("b") is None and tier.get("a") is not None
    assert tier.evictions == 1 and tier.bytes <= tier.max_bytes
    assert not tier.set("huge", b"x" * 10_000, None), "one entry over the bound is refused"
    assert tier.get("huge") is None and tier.bytes <= tier.max_bytes

    small = MemoryTier(max_entries=2, max_bytes=10**6, clock=lambda: now[0])
    for name in "xyz":
        small.set(name, b"1", ttl=5)
    assert small.keys() == ["y", "z"]
    now[0] = 6
    assert small.get("y") is None and small.expirations == 1


async def test_single_flight_100_concurrent_misses_one_loader_call(make_manager):
    m = await make_manager()
    gate = asyncio.Event()
    loader = Counter({"v": 1}, gate=gate)
    reads = asyncio.gather(*(m.get("hot", loader) for _ in range(100)))
    await eventually(lambda: l2_lookups(m) == 100, what="all 100 reads to miss")
    gate.set()
    results = await reads
    assert loader.calls == 1
    assert all(r == {"v": 1} for r in results)
    results[0]["v"] = 999  # callers get copies: mutating one poisons nothing
    assert await m.get("hot", loader) == {"v": 1}


async def test_typed_values_round_trip(make_manager):
    class Page(msgspec.Struct):
        room: str
        offsets: list[int]

    m = await make_manager()

    async def load() -> Page:
        return Page("general", [1, 2])

    assert await m.get("p", load, type=Page) == Page("general", [1, 2])
    b = await make_manager()
    assert await b.get("p", None, type=Page) == Page("general", [1, 2])


# ---------------------------------------------------------------------- strategies


async def test_each_builtin_strategy(make_manager):
    m = await make_manager()
    assert {"ttl", "lru", "adaptive", "per-user", "none"} <= set(m.strategies.names())

    m.configure("lru", strategy="lru", ttl=0.1)  # lru ignores the TTL
    loader = Counter()
    await m.get("k", loader, namespace="lru")
    await asyncio.sleep(0.2)  # part of the scenario: more than the TTL really passes
    await m.get("k", loader, namespace="lru")
    assert loader.calls == 1

    m.configure("none", strategy="none")
    loader = Counter()
    for _ in range(3):
        await m.get("k", loader, namespace="none")
    assert loader.calls == 3 and "none:k" not in m.l1

    m.configure("mine", strategy="per-user", ttl=60)
    for user in ("alice", "bob"):
        assert await m.get("inbox", Counter({"owner": user}), namespace="mine", user=user) == {
            "owner": user
        }
    assert await m.get("inbox", None, namespace="mine", user="bob") == {"owner": "bob"}
    with pytest.raises(ValueError, match="needs a user"):
        await m.get("inbox", Counter(), namespace="mine")
    await m.invalidate(event="user:alice")
    assert await m.get("inbox", None, namespace="mine", user="alice") is None
    assert await m.get("inbox", None, namespace="mine", user="bob") == {"owner": "bob"}


def test_adaptive_rule():
    now = [0.0]
    s = AdaptiveStrategy(half_life=100, clock=lambda: now[0])
    assert s.ttl("a", 10) == 10  # no history: base
    for _ in range(200):
        s.observe_read("a", True)
    assert s.ttl("a", 10) == 80  # read often, never changed: 8 x base (the cap)
    for _ in range(3):
        s.observe_read("b", True)
        s.observe_change("b")
    assert s.ttl("b", 10) == pytest.approx(10 * 4 / 16)  # changes as often as read: shrinks
    for _ in range(50):
        s.observe_change("c")
    assert s.ttl("c", 10) == 10 / 8  # floor
    now[0] = 1000  # ten half-lives later the history has faded
    assert s.ttl("a", 10) == pytest.approx(10 * (1 + 200 / 1024), rel=0.01)


async def test_adaptive_ttl_is_used_by_the_manager(make_manager):
    now = [0.0]  # L1's clock, moved by the test: a slow machine cannot age the entry
    m = await make_manager(clock=lambda: now[0])
    m.configure("ad", strategy="adaptive", ttl=0.1)
    strategy = m.strategies.get("adaptive")
    for _ in range(40):
        await m.get("k", Counter(), namespace="ad")
    assert strategy.ttl("ad:k", 0.1) > 0.5
    loader = Counter()
    await m.invalidate(key="ad:k")
    await m.get("k", loader, namespace="ad")  # stored with the grown TTL
    now[0] += 0.3  # past the base TTL, within the grown one
    await asyncio.sleep(0.3)  # part of the scenario: an L2 copy kept for the base TTL expires
    await m.get("k", loader, namespace="ad")
    assert loader.calls == 1


async def test_third_party_strategy_plugs_in(make_manager):
    class Shouting(CacheStrategy):
        name = "shouting"

        def scoped_key(self, key: str, user: str | None) -> str:
            return key.upper()

        def ttl(self, full_key: str, default: float | None) -> float | None:
            return 123.0

    m = await make_manager()
    m.register_strategy(Shouting())
    m.configure("loud", strategy="shouting")
    await m.get("quiet", Counter(), namespace="loud")
    assert "loud:QUIET" in m.l1
    with pytest.raises(TypeError, match="no name"):
        m.register_strategy(object())  # type: ignore[arg-type]


async def test_unknown_strategy_falls_back_to_fixed_ttl(make_manager, caplog):
    m = await make_manager()
    m.configure("odd", strategy="does-not-exist", ttl=30)
    loader = Counter()
    await m.get("k", loader, namespace="odd")
    await m.get("k", loader, namespace="odd")
    assert loader.calls == 1
    assert "not registered" in caplog.text


# ---------------------------------------------------------------------- invalidation


async def test_invalidate_by_key_tag_event_and_namespace(make_manager):
    a = await make_manager()
    a.configure("rooms", strategy="ttl", ttl=60, events=["rooms-changed"])
    await a.get("x", Counter(1), namespace="rooms", tags=["t1"])
    await a.get("y", Counter(2), namespace="rooms", events=["room:general"])
    await a.get("z", Counter(3), namespace="rooms")
    await a.set("w", 4, namespace="rooms", tags=["t1"])

    assert await a.delete("z", namespace="rooms") == 1
    assert await a.get("z", namespace="rooms") is None
    assert await a.invalidate(tag="t1") == 2
    assert await a.get("x", namespace="rooms") is None
    assert await a.get("w", namespace="rooms") is None
    assert await a.get("y", namespace="rooms") == 2
    await a.invalidate(event="room:general")
    assert await a.get("y", namespace="rooms") is None

    await a.get("v", Counter(5), namespace="rooms")
    await a.invalidate(event="rooms-changed")  # the namespace's own event drops all of it
    assert await a.get("v", namespace="rooms") is None
    assert len(a.l1) == 0
    b = await make_manager()  # and nothing is left in L2 either
    for key in "xyzwv":
        assert await b.get(key, namespace="rooms") is None


async def test_invalidation_on_one_manager_empties_the_others_l1(make_manager):
    a = await make_manager()
    b = await make_manager()
    await a.get("shared", Counter({"v": 1}), tags=["grp"])
    await b.get("shared", Counter({"v": 2}))
    assert "default:shared" in b.l1
    await a.invalidate(tag="grp")
    await eventually(lambda: "default:shared" not in b.l1)
    assert b.stats_.remote_invalidations >= 1

    await b.get("k2", Counter())
    await a.set("k2", {"new": True})  # a write also drops the other replicas' copy
    await eventually(lambda: "default:k2" not in b.l1)
    assert await b.get("k2") == {"new": True}


async def test_load_racing_an_invalidation_is_not_cached(make_manager):
    m = await make_manager()
    gate = asyncio.Event()
    version = {"v": 1}

    loading = asyncio.Event()

    async def slow() -> dict[str, int]:
        seen = dict(version)
        loading.set()
        await gate.wait()
        return seen

    first = asyncio.create_task(m.get("k", slow))
    await asyncio.wait_for(loading.wait(), 10)  # the first load is in flight, holding v1
    version["v"] = 2
    await m.invalidate(key="default:k")
    second = asyncio.create_task(m.get("k", slow))  # must not join the stale load
    await eventually(lambda: l2_lookups(m) == 2, what="the second read to pick its load")
    gate.set()
    assert await first == {"v": 1}
    assert await second == {"v": 2}
    assert await m.get("k") == {"v": 2}


# ---------------------------------------------------------------------- bad values and loaders


async def test_unserializable_value_is_a_clear_error_and_nothing_is_stored(make_manager):
    m = await make_manager()
    with pytest.raises(CacheValueError, match="default:bad"):
        await m.set("bad", object())
    with pytest.raises(CacheValueError, match="cannot be cached"):
        await m.get("bad", Counter(value={1, 2, object()}))
    assert await m.get("bad") is None and len(m.l1) == 0
    assert m.stats_.rejected == 2


async def test_oversize_value(make_manager):
    m = await make_manager(max_value_bytes=1000)
    with pytest.raises(CacheValueTooLarge, match="limit is 1000"):
        await m.set("big", "x" * 5000)
    loader = Counter(value="y" * 5000)
    assert await m.get("big", loader) == "y" * 5000  # served, not cached
    assert await m.get("big") is None
    assert len(m.l1) == 0


async def test_failing_and_hanging_loaders(make_manager):
    m = await make_manager(loader_timeout=0.2)

    async def boom() -> None:
        raise RuntimeError("database on fire")

    with pytest.raises(CacheLoaderError, match="database on fire") as info:
        await m.get("k", boom)
    assert isinstance(info.value.__cause__, RuntimeError)

    async def hang() -> None:
        await asyncio.sleep(3600)  # hangs on purpose: the manager must time it out

    waiters = [m.get("h", hang) for _ in range(5)]
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, CacheLoaderTimeout) for r in results)
    assert m.stats_.tiers["l3"].errors == 2  # one shared hanging call, one failing call
    assert len(m.l1) == 0 and not m._inflight
    assert await m.get("k", Counter(7)) == 7, "a failure is not cached"


async def test_cancelled_caller_does_not_cancel_the_shared_load(make_manager):
    m = await make_manager()
    gate = asyncio.Event()
    loader = Counter({"v": 1}, gate=gate)
    first = asyncio.create_task(m.get("k", loader))
    await eventually(lambda: loader.calls == 1, what="the shared load to start")
    second = asyncio.create_task(m.get("k", loader))
    await eventually(lambda: l2_lookups(m) == 2, what="the second caller to join the load")
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first  # the cancellation has landed before the load may finish
    gate.set()
    assert await second == {"v": 1}
    assert loader.calls == 1


# ---------------------------------------------------------------------- warming and stats


async def test_warming_declared_keys_and_previous_hottest(make_manager):
    a = await make_manager()
    for _ in range(5):
        await a.get("popular", Counter({"p": 1}))
    await a.get("rare", Counter({"r": 1}))
    await a.stop()  # flushes the hot-key counts to Redis

    b = await make_manager()
    loader = Counter({"declared": True})
    b.add_warmer("declared", loader)
    loaded = await b.warm(hottest=1)
    assert loaded == 2 and loader.calls == 1
    assert "default:declared" in b.l1 and "default:popular" in b.l1
    assert "default:rare" not in b.l1


async def test_stats_shape(make_manager):
    m = await make_manager()
    await m.get("k", Counter())
    await m.get("k", Counter())
    stats = msgspec.json.decode(msgspec.json.encode(m.stats()))
    assert stats["tiers"]["l1"]["hits"] == 1
    assert stats["tiers"]["l1"]["hit_rate"] == 0.5
    assert sum(stats["tiers"]["l1"]["latency_us"]["counts"]) == 1
    assert stats["top_keys"][0] == {"key": "default:k", "reads": 2}
    assert stats["l1"]["entries"] == 1 and stats["l1"]["bytes"] > 0
    assert stats["l2"]["available"] is True
