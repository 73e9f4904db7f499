"""Cache benchmarks (issue 6), each figure next to its baseline measured in the same run.

    python bench/cache_bench.py                 # everything
    python bench/cache_bench.py --only l1,zipf  # some of: l1, l2, zipf, http

- ``l1``:   latency of an L1 hit through ``CacheManager.get`` (target < 5 µs).
- ``l2``:   an L2 hit (L1 disabled) versus a raw redis-py ``GET`` of the same bytes, same
            Redis, interleaved rounds (target ratio <= 1.3).
- ``zipf``: hit rate of the L1 LRU on a Zipf(s) workload (target >= 90 %).
- ``http``: requests/s of a cached GET (the HTTP cache middleware serving a hit) versus a
            bare Litestar endpoint returning the same body (target ratio >= 0.8). Both run
            under uvicorn + httptools on loopback in their own processes; this process is
            the load (keep-alive connections, raw HTTP/1.1), bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from hub.cache import CacheManager
from hub.cache.http import HttpCache, HttpCacheRule, http_cache_middleware
from lydian_plugins.cache_strategies import lydian_cache_strategies

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PAYLOAD = {
    "room": "general",
    "messages": [
        {"offset": i, "user": {"id": f"u{i % 7}", "name": "User"}, "text": "hello " * 8}
        for i in range(50)
    ],
    "has_more": True,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- l1


async def bench_l1(n: int) -> dict[str, Any]:
    cache = CacheManager()
    value = {"id": "general", "name": "General", "topic": "", "last_offset": 1234}

    async def load() -> dict[str, Any]:
        return value

    await cache.get("room:general", load)
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            await cache.get("room:general", load)
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    await cache.stop()
    best, median = min(rounds), statistics.median(rounds)
    print(f"L1 hit: median {median:.2f} µs, best {best:.2f} µs per get ({n} x 5)  target < 5 µs")
    return {"l1_hit_us_median": median, "l1_hit_us_best": best}


# ---------------------------------------------------------------------------- l2


ROOM = {"id": "general", "name": "General", "topic": "", "kind": "public", "last_offset": 1234}


async def bench_l2(n: int, value: Any, label: str) -> dict[str, Any]:
    prefix = f"bench:{secrets.token_hex(4)}:"
    cache = CacheManager(redis_url=REDIS_URL, prefix=prefix, max_entries=0)  # L1 never keeps
    await cache.start()
    raw = Redis.from_url(
        REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )

    async def load() -> Any:
        return value

    await cache.get("page", load)
    raw_key = f"{prefix}raw"
    await raw.set(raw_key, await cache.l2.client.get(f"{prefix}k:default:page"))
    for _ in range(500):  # warm both connections
        await cache.get("page", load)
        await raw.get(raw_key)
    plain = msgspec.msgpack.encode(value)
    plain_key = f"{prefix}plain"
    await raw.set(plain_key, plain)
    ours, theirs, decoded = [], [], []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            await raw.get(raw_key)
        theirs.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for _ in range(n):
            msgspec.msgpack.decode(await raw.get(plain_key))
        decoded.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for _ in range(n):
            await cache.get("page", load)
        ours.append((time.perf_counter() - t0) / n * 1e6)
    assert cache.stats_.tiers["l2"].hits >= 7 * n, "every measured get must be an L2 hit"
    ratios = [o / t for o, t in zip(ours, theirs, strict=True)]
    ratio = statistics.median(ratios)
    size = len(await raw.get(raw_key))
    print(
        f"L2 hit ({label}, {size} bytes in Redis): {statistics.median(ours):.1f} µs vs raw "
        f"redis-py GET {statistics.median(theirs):.1f} µs -> ratio {ratio:.2f} "
        f"(rounds {min(ratios):.2f}..{max(ratios):.2f})  target <= 1.3"
    )
    with_decode = statistics.median(o / d for o, d in zip(ours, decoded, strict=True))
    print(
        f"    vs raw GET + msgspec decode of the same value {statistics.median(decoded):.1f} µs"
        f" -> ratio {with_decode:.2f} (the cache's own overhead)"
    )
    keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()
    await cache.stop()
    return {"l2_us": statistics.median(ours), "raw_get_us": statistics.median(theirs)}


async def bench_l2_both(n: int) -> None:
    await bench_l2(n, ROOM, "room record")
    await bench_l2(n, PAYLOAD, "50-message history page, decoded")


# ---------------------------------------------------------------------------- zipf


def zipf_sampler(keys: int, s: float, rng: random.Random):
    weights = [1 / (k**s) for k in range(1, keys + 1)]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    return lambda: bisect.bisect_left(cumulative, rng.random() * total)


async def bench_zipf(requests: int, keys: int, s: float, capacity: int) -> dict[str, Any]:
    rng = random.Random(6)
    sample = zipf_sampler(keys, s, rng)
    cache = CacheManager(max_entries=capacity)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    for _ in range(requests):
        await cache.get(f"k{sample()}", load)
    l1 = cache.stats_.tiers["l1"]
    rate = l1.hits / (l1.hits + l1.misses)
    print(
        f"Zipf hit rate: {rate:.1%} ({requests} gets, {keys} keys, s={s}, "
        f"L1 {capacity} entries = {capacity / keys:.0%} of keys; {loads} loads, "
        f"{cache.l1.evictions} evictions)  target >= 90 %"
    )
    return {"zipf_hit_rate": rate}


# ---------------------------------------------------------------------------- http


def make_app(kind: str):
    from litestar import Litestar, get

    body = PAYLOAD

    @get("/page", sync_to_thread=False)
    def page() -> dict[str, Any]:
        return body

    if kind == "bare":
        return Litestar([page])
    app = Litestar([page], middleware=[http_cache_middleware])
    http = HttpCache(CacheManager(strategies=lydian_cache_strategies()), rules=())
    http.add_rule(HttpCacheRule("page", r"/page", private=False, ttl=3600))
    app.state.hub = SimpleNamespace(http_cache=http)
    return app


def serve(kind: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        make_app(kind),
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )


async def _connection(port: int, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /page HTTP/1.1\r\nhost: bench\r\n\r\n"
    done = 0
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:100])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            done += 1
    finally:
        counts.append(done)
        writer.close()


async def _load(port: int, seconds: float, connections: int) -> float:
    counts: list[int] = []
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_connection(port, deadline, counts) for _ in range(connections)))
    return sum(counts) / (time.perf_counter() - t0)


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


async def bench_http(seconds: float, connections: int, rounds: int) -> dict[str, Any]:
    procs, ports = {}, {}
    try:
        for kind in ("bare", "cached"):
            ports[kind] = free_port()
            procs[kind] = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind, str(ports[kind])]
            )
        for port in ports.values():
            await _wait_port(port)
        results: dict[str, list[float]] = {"bare": [], "cached": []}
        for kind in ("bare", "cached"):  # warm up
            await _load(ports[kind], 1.0, connections)
        for _ in range(rounds):  # interleaved so drift hits both alike
            for kind in ("bare", "cached"):
                results[kind].append(await _load(ports[kind], seconds, connections))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
    bare, cached = statistics.median(results["bare"]), statistics.median(results["cached"])
    ratios = [c / b for c, b in zip(results["cached"], results["bare"], strict=True)]
    print(
        f"HTTP GET: cached {cached:,.0f} req/s vs bare Litestar {bare:,.0f} req/s -> "
        f"ratio {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}..{max(ratios):.2f})"
        f"  target >= 0.8  ({connections} connections, {rounds} x {seconds:g} s each, "
        f"body {len(str(PAYLOAD))} chars)"
    )
    return {"http_cached_rps": cached, "http_bare_rps": bare}


# ---------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> None:
    only = set(args.only.split(",")) if args.only else {"l1", "l2", "zipf", "http"}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load}, {REDIS_URL}")
    if "l1" in only:
        await bench_l1(args.n)
    if "l2" in only:
        await bench_l2_both(max(1000, args.n // 20))
    if "zipf" in only:
        await bench_zipf(args.requests, args.keys, args.s, args.capacity)
    if "http" in only:
        await bench_http(args.seconds, args.connections, args.rounds)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated: l1,l2,zipf,http")
    parser.add_argument("--n", type=int, default=100_000, help="L1 gets per round")
    parser.add_argument("--requests", type=int, default=200_000, help="Zipf gets")
    parser.add_argument("--keys", type=int, default=10_000, help="Zipf key universe")
    parser.add_argument("--s", type=float, default=1.2, help="Zipf exponent")
    parser.add_argument("--capacity", type=int, default=2_000, help="L1 entries for Zipf")
    parser.add_argument("--seconds", type=float, default=3.0, help="HTTP load per round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
