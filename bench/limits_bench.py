"""Abuse-limit benchmarks (issue 13): what the limiter costs per message, and fan-out with it.

    python bench/limits_bench.py                       # everything
    python bench/limits_bench.py --only check,fanout --subscribers 500 --messages 200

- ``check``: the gateway's check per message (the socket's bucket, then the user's), in
  process: no limiter vs the embedded memory buckets vs Redis (127.0.0.1:6379, one Lua script
  per check, awaited one at a time and 64 at once). Target: < 20 µs per message embedded.
- ``send``: one socket sending messages back to back (each acked) to a ``lydian serve``
  (embedded SQLite) with ``LYDIAN_LIMITS`` false vs true, rounds rotating; microseconds per
  message. A second hub without limits shows how far two identical hubs differ (noise).
- ``fanout``: deliveries per second of ``bench/realtime_bench.py``'s fan-out (one sender,
  many subscribers) with the limiter off vs on, alternating rounds in the same run (medians),
  and the hub process's CPU time per delivery (from ``/proc``, subscribers' connections
  included), which the load of other processes disturbs far less than wall-clock rates.
  Target: within 5 % of no limiter.

Limits are set far above the load (``*=1G/s``): every check runs in full, none refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import realtime_bench as rb
from http_bench import cpu_seconds

from hub.access.limits import Bucket, Limits
from hub.base.config import load_settings

HIGH = "*=1G/s"  # about 10^9 per second: never refuses, every check runs in full
LIMIT_ENV = {"LYDIAN_LIMIT_MESSAGES": HIGH, "LYDIAN_LIMIT_MESSAGES_SOCKET": HIGH}


# ---------------------------------------------------------------------------- check


class Gate:
    """The gateway's per-message check (``Session._limit`` + ``Limits.take``), standalone."""

    def __init__(self, limits: Limits, user: str) -> None:
        self.limits = limits
        self.user = user
        self.rate = limits.rate("messages_socket", "user")
        self.bucket = Bucket(self.rate.burst if self.rate else 0.0, time.monotonic())

    def local(self) -> float:
        rate = self.rate
        if rate is not None:
            wait = self.bucket.take(rate, time.monotonic())
            if wait:
                return wait
        if self.limits.local:
            return self.limits.take_now("messages", "user", self.user)
        return -1.0

    async def check(self) -> float:
        wait = self.local()
        if wait < 0:
            wait = await self.limits.take("messages", "user", self.user)
        return wait


def _settings(**extra) -> object:
    return load_settings(
        env={},
        limit_messages=HIGH,
        limit_messages_socket=HIGH,
        redis_prefix=f"bench{uuid.uuid4().hex[:6]}",
        **extra,
    )


async def bench_check(n: int, rounds: int) -> dict:
    from redis.asyncio import Redis

    off = Gate(Limits(_settings(limits=False)), "u")
    memory = Gate(Limits(_settings()), "u")
    redis = Redis.from_url(rb.REDIS_URL)
    shared = Limits(_settings(), redis=redis)
    gate = Gate(shared, "u")

    def timed_sync(g: Gate) -> float:
        local = g.local
        t0 = time.perf_counter()
        for _ in range(n):
            if local():
                raise AssertionError("refused")
        return (time.perf_counter() - t0) / n * 1e6

    async def timed_async(g: Gate, count: int) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            if await g.check():
                raise AssertionError("refused")
        return (time.perf_counter() - t0) / count * 1e6

    async def timed_concurrent(g: Gate, count: int, width: int = 64) -> float:
        t0 = time.perf_counter()
        for _ in range(count // width):
            waits = await asyncio.gather(*(g.check() for _ in range(width)))
            if any(waits):
                raise AssertionError("refused")
        return (time.perf_counter() - t0) / (count // width * width) * 1e6

    users = Limits(_settings())
    t0 = time.perf_counter()  # 100k distinct users: the dict grows, pruning runs
    for i in range(100_000):
        users.take_now("messages", "user", f"user{i}")
    distinct_us = (time.perf_counter() - t0) / 100_000 * 1e6

    results: dict[str, list[float]] = {"none": [], "memory": [], "memory_await": [], "redis": []}
    redis_n = max(500, n // 50)
    await timed_async(gate, 200)  # load the script, warm the connection
    for _ in range(rounds):
        results["none"].append(timed_sync(off))
        results["memory"].append(timed_sync(memory))
        results["memory_await"].append(await timed_async(memory, n))
        results["redis"].append(await timed_async(gate, redis_n))
    concurrent = await timed_concurrent(gate, redis_n * 4)
    t0 = time.perf_counter()  # the floor: one Redis round trip through the same client
    for _ in range(redis_n):
        await redis.ping()
    ping_us = (time.perf_counter() - t0) / redis_n * 1e6
    await redis.aclose()
    best = {k: round(min(v), 3) for k, v in results.items()}
    return {
        "checks": n,
        "us_per_message_no_limiter": best["none"],
        "us_per_message_memory": best["memory"],
        "us_per_message_memory_awaited": best["memory_await"],
        "us_per_message_memory_100k_users": round(distinct_us, 3),
        "us_per_message_redis_sequential": best["redis"],
        "us_per_message_redis_64_in_flight": round(concurrent, 3),
        "us_per_redis_ping_same_client": round(ping_us, 3),
        "memory_added_us": round(best["memory"] - best["none"], 3),
    }


# ---------------------------------------------------------------------------- send


async def send_round(url: str, room: str, n: int) -> float:
    """Microseconds per message: ``n`` sends back to back, then every ack."""
    ws: websockets.ClientConnection = await rb.hub_client(url, room)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            await ws.send(json.dumps({"type": "send", "room": room, "text": "x", "id": f"m{i}"}))
        acks = 0
        while acks < n:
            raw = await asyncio.wait_for(ws.recv(), 30)
            if '"type":"ack"' in raw:
                acks += 1
            elif '"type":"error"' in raw:
                raise AssertionError(raw)
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        await ws.close()


async def bench_send(n: int, rounds: int, tmp: Path) -> dict:
    hubs = {
        "off": rb.Hub({**rb.base_env(), **LIMIT_ENV, "LYDIAN_LIMITS": "false"}, tmp / "s-off"),
        "on": rb.Hub({**rb.base_env(), **LIMIT_ENV, "LYDIAN_LIMITS": "true"}, tmp / "s-on"),
        # a second hub without limits: the spread between two identical hubs (noise floor)
        "off2": rb.Hub({**rb.base_env(), **LIMIT_ENV, "LYDIAN_LIMITS": "false"}, tmp / "s-off2"),
    }
    try:
        for hub in hubs.values():
            await hub.start()
            await hub.create_room("s")
            await send_round(hub.ws, "s", 200)  # warm up
        got: dict[str, list[float]] = {k: [] for k in hubs}
        for r in range(rounds):
            items = list(hubs.items())
            order = items[r % 3 :] + items[: r % 3]  # each hub goes first, second, third
            for name, hub in order:
                got[name].append(await send_round(hub.ws, "s", n))
    finally:
        for hub in hubs.values():
            hub.stop()
    off, on = statistics.median(got["off"]), statistics.median(got["on"])
    off2 = statistics.median(got["off2"])
    return {
        "messages": n,
        "rounds": rounds,
        "us_per_message_limits_off": round(off, 1),
        "us_per_message_limits_on": round(on, 1),
        "us_per_message_limits_off_second_hub": round(off2, 1),
        "ratio_on_to_off": round(on / off, 3),
        "ratio_off_second_hub_to_off": round(off2 / off, 3),
        "all_rounds": {k: [round(v, 1) for v in vs] for k, vs in got.items()},
    }


# ---------------------------------------------------------------------------- fan-out


async def bench_fanout(subscribers: int, messages: int, rounds: int, tmp: Path) -> dict:
    hubs = {
        "off": rb.Hub({**rb.base_env(), **LIMIT_ENV, "LYDIAN_LIMITS": "false"}, tmp / "f-off"),
        "on": rb.Hub({**rb.base_env(), **LIMIT_ENV, "LYDIAN_LIMITS": "true"}, tmp / "f-on"),
        # a second hub without limits: the spread between two identical hubs (noise floor)
        "off2": rb.Hub({**rb.base_env(), **LIMIT_ENV, "LYDIAN_LIMITS": "false"}, tmp / "f-off2"),
    }
    try:
        for hub in hubs.values():
            await hub.start()
            await hub.create_room("big")
        send = await rb.hub_send("big")
        got: dict[str, list[float]] = {k: [] for k in hubs}
        cpu: dict[str, list[float]] = {k: [] for k in hubs}  # hub CPU µs per delivery
        for r in range(rounds):
            items = list(hubs.items())
            order = items[r % 3 :] + items[: r % 3]  # each hub goes first, second, third
            for name, hub in order:
                assert hub.proc is not None
                before = cpu_seconds(hub.proc.pid)
                got[name].append(await rb.fan_out(hub.ws, "big", subscribers, messages, send))
                used = cpu_seconds(hub.proc.pid) - before
                cpu[name].append(used / (subscribers * messages) * 1e6)
    finally:
        for hub in hubs.values():
            hub.stop()
    off, on = statistics.median(got["off"]), statistics.median(got["on"])
    off2 = statistics.median(got["off2"])
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    cpu_off2 = statistics.median(cpu["off2"])
    return {
        "cpu_us_per_delivery_limits_off": round(cpu_off, 3),
        "cpu_us_per_delivery_limits_on": round(cpu_on, 3),
        "cpu_us_per_delivery_limits_off_second_hub": round(cpu_off2, 3),
        "cpu_ratio_on_to_off": round(cpu_on / cpu_off, 3),
        "cpu_ratio_off_second_hub_to_off": round(cpu_off2 / cpu_off, 3),
        "all_cpu_rounds": {k: [round(v, 3) for v in vs] for k, vs in cpu.items()},
        "subscribers": subscribers,
        "messages": messages,
        "rounds": rounds,
        "deliveries_per_s_limits_off": round(off),
        "deliveries_per_s_limits_on": round(on),
        "deliveries_per_s_limits_off_second_hub": round(off2),
        "ratio_on_to_off": round(on / off, 3),
        "ratio_off_second_hub_to_off": round(off2 / off, 3),
        "all_rounds": {k: [round(v) for v in vs] for k, vs in got.items()},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated: check,send,fanout")
    parser.add_argument("--checks", type=int, default=200_000)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else {"check", "send", "fanout"}
    tmp = Path(tempfile.mkdtemp(prefix="lydian-limits-bench-"))
    results: dict[str, dict] = {}
    try:
        if "check" in only:
            results["check"] = await bench_check(args.checks, args.rounds)
            print("check:", json.dumps(results["check"]), flush=True)
        if "send" in only:
            results["send"] = await bench_send(args.sends, args.rounds, tmp)
            print("send:", json.dumps(results["send"]), flush=True)
        if "fanout" in only:
            results["fanout"] = await bench_fanout(
                args.subscribers, args.messages, args.rounds, tmp
            )
            print("fanout:", json.dumps(results["fanout"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nsummary vs targets:")
    if "check" in results:
        c = results["check"]
        print(
            f"  check per message: none {c['us_per_message_no_limiter']} µs, memory "
            f"{c['us_per_message_memory']} µs (target < 20), Redis "
            f"{c['us_per_message_redis_sequential']} µs one at a time, "
            f"{c['us_per_message_redis_64_in_flight']} µs with 64 in flight "
            f"(a PING: {c['us_per_redis_ping_same_client']} µs)"
        )
    if "send" in results:
        s = results["send"]
        print(
            f"  send+ack per message: off {s['us_per_message_limits_off']} µs, on "
            f"{s['us_per_message_limits_on']} µs ({s['ratio_on_to_off']}x; two hubs without "
            f"limits differ by {s['ratio_off_second_hub_to_off']}x)"
        )
    if "fanout" in results:
        f = results["fanout"]
        print(
            f"  fan-out to {f['subscribers']}: {f['ratio_on_to_off']}x of no limiter "
            f"(target >= 0.95; two hubs without limits: {f['ratio_off_second_hub_to_off']}x)"
        )
        print(
            f"  fan-out hub CPU per delivery: off {f['cpu_us_per_delivery_limits_off']} µs, on "
            f"{f['cpu_us_per_delivery_limits_on']} µs ({f['cpu_ratio_on_to_off']}x, target "
            f"<= 1.05; two hubs without limits: {f['cpu_ratio_off_second_hub_to_off']}x)"
        )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
