"""Realtime benchmarks (issue 8): connections held, broadcast latency and fan-out, cross-replica.

    python bench/realtime_bench.py                      # everything, default sizes
    python bench/realtime_bench.py --only broadcast --subscribers 1000 --rate 20 --duration 10

The hub runs as separate ``lydian serve`` processes on loopback; this process is the load
(clients, timing). Fan-out throughput is compared with a bare ``websockets`` broadcast server
measured in the same run, with the same clients. Every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

SECRET = "bench-secret-for-lydian-benchmarks-only-0123456789"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------- processes


class Hub:
    """One ``lydian serve`` process."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.port = free_port()
        self.env = {
            "LYDIAN_PORT": str(self.port),
            "LYDIAN_DATA_DIR": str(data_dir),
            "LYDIAN_SECRET": SECRET,
            "LYDIAN_LOG_LEVEL": "warning",
            "LYDIAN_SEND_QUEUE_FRAMES": "100000",
            # the load comes from guests far faster than people type: limits out of the way
            # (bench/limits_bench.py measures what the limiter costs)
            "LYDIAN_LIMIT_MESSAGES": "*=100000/s",
            "LYDIAN_LIMIT_MESSAGES_SOCKET": "*=100000/s",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> Hub:
        self.proc = subprocess.Popen(
            ["lydian", "serve"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        return self
                await asyncio.sleep(0.1)
        raise RuntimeError("hub did not start")

    async def create_room(self, room: str) -> None:
        from hub.base.auth import Identity, issue_token

        token = issue_token(Identity("bench", "Bench", ("admin",)), SECRET, 3600)
        async with httpx.AsyncClient() as http:
            await http.post(
                f"http://127.0.0.1:{self.port}/api/rooms",
                json={"id": room},
                headers={"Authorization": f"Bearer {token}"},
            )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def base_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LYDIAN_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }


BARE_SERVER = r"""
import asyncio, sys, websockets
clients = set()
async def handler(ws):
    clients.add(ws)
    try:
        async for msg in ws:
            websockets.broadcast(clients, msg)
    finally:
        clients.discard(ws)
async def main():
    compression = "deflate" if sys.argv[2] == "1" else None  # the hub's setting, for fairness
    async with websockets.serve(handler, "127.0.0.1", int(sys.argv[1]), max_size=None,
                                ping_interval=None, max_queue=None, compression=compression):
        await asyncio.Future()
try:
    import uvloop; uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


# ---------------------------------------------------------------------------- clients


async def hub_client(url: str, room: str | None) -> websockets.ClientConnection:
    ws = await websockets.connect(
        url, max_size=None, ping_interval=None, open_timeout=60, max_queue=None
    )
    await ws.send('{"type":"hello"}')
    await ws.recv()  # welcome
    if room:
        await ws.send(json.dumps({"type": "join", "room": room}))
        while '"type":"joined"' not in (await ws.recv()):
            pass
    return ws


async def connect_many(n: int, factory, batch: int = 250) -> list:
    out = []
    for i in range(0, n, batch):
        out.extend(await asyncio.gather(*(factory(j) for j in range(i, min(n, i + batch)))))
    return out


class Receiver:
    """Reads one socket, recording the latency of every message carrying a send timestamp."""

    def __init__(self, ws, marker: str) -> None:
        self.ws = ws
        self.marker = marker
        self.latencies: list[float] = []
        self.count = 0
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, asyncio.CancelledError):
            async for raw in self.ws:
                now = time.perf_counter()
                at = raw.find(self.marker)
                if at < 0:
                    continue
                start = at + len(self.marker)
                sent = float(raw[start : raw.index("|", start)])
                self.latencies.append(now - sent)
                self.count += 1


def stamp(marker: str, i: int) -> str:
    return f"{marker}{time.perf_counter():.9f}|{i}"


# ---------------------------------------------------------------------------- phases


async def bench_connections(n: int, tmp: Path) -> dict:
    hub = await Hub(base_env(), tmp / "conns").start()
    try:
        rooms = max(1, n // 100)
        for r in range(rooms):
            await hub.create_room(f"r{r}")
        await asyncio.sleep(0.5)
        before = rss_kib(hub.proc.pid)
        t0 = time.perf_counter()
        sockets = await connect_many(n, lambda j: hub_client(hub.ws, f"r{j % rooms}"))
        took = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        after = rss_kib(hub.proc.pid)
        # prove they are alive: a message in one room reaches all its members
        alive = 0
        probe = sockets[0]
        await probe.send(json.dumps({"type": "send", "room": "r0", "text": "ping all"}))
        members = [s for j, s in enumerate(sockets) if j % rooms == 0]

        async def got_it(ws) -> bool:
            with contextlib.suppress(TimeoutError):
                while True:
                    if "ping all" in await asyncio.wait_for(ws.recv(), 10):
                        return True
            return False

        alive = sum(await asyncio.gather(*(got_it(s) for s in members)))
        for s in sockets:
            await s.close()
        return {
            "connections": len(sockets),
            "connect_seconds": round(took, 1),
            "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "kib_per_connection": round((after - before) / len(sockets), 1),
            "probe_delivered": f"{alive}/{len(members)}",
        }
    finally:
        hub.stop()


async def steady_latency(
    url_for_sender: str,
    sub_urls: list[str],
    room: str | None,
    subscribers: int,
    rate: float,
    duration: float,
    send,
) -> dict:
    marker = "@T"
    subs = await connect_many(subscribers, lambda j: hub_client(sub_urls[j % len(sub_urls)], room))
    receivers = [Receiver(s, marker) for s in subs]
    sender = await hub_client(url_for_sender, room)
    drain = Receiver(sender, "\x00never")
    gc.collect()
    gc.disable()  # the load's own GC pauses would be counted as hub latency
    total = int(rate * duration)
    t0 = time.perf_counter()
    for i in range(total):
        await send(sender, stamp(marker, i))
        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
    deadline = time.perf_counter() + 15
    while sum(r.count for r in receivers) < total * subscribers and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    gc.enable()
    lat = [x for r in receivers for x in r.latencies]
    for r in [*receivers, drain]:
        r.task.cancel()
    for s in [*subs, sender]:
        await s.close()
    return {
        "subscribers": subscribers,
        "rate_per_s": rate,
        "messages": total,
        "delivered": f"{len(lat)}/{total * subscribers}",
        "p50_ms": round(pct(lat, 0.5) * 1000, 2),
        "p99_ms": round(pct(lat, 0.99) * 1000, 2),
        "max_ms": round(max(lat) * 1000, 2) if lat else None,
    }


async def fan_out(url: str, room: str | None, subscribers: int, messages: int, send) -> float:
    """Deliveries per second when ``messages`` are sent back to back to ``subscribers``."""
    marker = "@F"
    subs = await connect_many(subscribers, lambda j: hub_client(url, room))
    receivers = [Receiver(s, marker) for s in subs]
    sender = await hub_client(url, room)
    drain = Receiver(sender, "\x00never")
    t0 = time.perf_counter()
    for i in range(messages):
        await send(sender, stamp(marker, i))
    deadline = t0 + 60
    want = messages * subscribers
    while sum(r.count for r in receivers) < want and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    got = sum(r.count for r in receivers)
    for r in [*receivers, drain]:
        r.task.cancel()
    for s in [*subs, sender]:
        await s.close()
    return got / elapsed


async def hub_send(room: str):
    async def send(ws, text: str) -> None:
        await ws.send(json.dumps({"type": "send", "room": room, "text": text}))

    return send


async def bare_send(ws, text: str) -> None:
    await ws.send(text)


async def bare_client(url: str, _room: str | None) -> websockets.ClientConnection:
    return await websockets.connect(url, max_size=None, ping_interval=None, max_queue=None)


async def bench_broadcast(
    subscribers: int, rate: float, duration: float, messages: int, tmp: Path
) -> dict:
    hub = await Hub(base_env(), tmp / "broadcast").start()
    try:
        await hub.create_room("big")
        send = await hub_send("big")
        latency = await steady_latency(hub.ws, [hub.ws], "big", subscribers, rate, duration, send)
        hub_rate = await fan_out(hub.ws, "big", subscribers, messages, send)
    finally:
        hub.stop()
    port = free_port()
    compressed = os.environ.get("LYDIAN_WS_COMPRESSION", "false").lower() == "true"
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port), str(int(compressed))])
    try:
        await asyncio.sleep(1.0)
        global hub_client
        real_client = hub_client
        hub_client = bare_client  # the same measuring code, against the bare server
        try:
            bare_rate = await fan_out(
                f"ws://127.0.0.1:{port}", None, subscribers, messages, bare_send
            )
        finally:
            hub_client = real_client
    finally:
        bare.kill()
        bare.wait()
    return {
        **latency,
        "fanout_messages": messages,
        "hub_deliveries_per_s": round(hub_rate),
        "bare_deliveries_per_s": round(bare_rate),
        "ratio_hub_to_bare": round(hub_rate / bare_rate, 2),
    }


async def bench_replicas(
    replicas: int, subscribers: int, rate: float, duration: float, tmp: Path
) -> dict:
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_URL)
    await conn.execute(f"CREATE SCHEMA {schema}")
    env = {
        **base_env(),
        "DATABASE_URL": f"{PG_URL}?search_path={schema}",
        "REDIS_URL": REDIS_URL,
        "LYDIAN_REDIS_PREFIX": schema,
    }
    hubs = [Hub(env, tmp / f"replica{i}") for i in range(replicas)]
    try:
        await hubs[0].start()
        await asyncio.gather(*(h.start() for h in hubs[1:]))
        await hubs[0].create_room("x")
        send = await hub_send("x")
        # the sender is on replica 0; subscribers only on the others: every delivery crosses Redis
        result = await steady_latency(
            hubs[0].ws, [h.ws for h in hubs[1:]], "x", subscribers, rate, duration, send
        )
        return {"replicas": replicas, **result}
    finally:
        for h in hubs:
            h.stop()
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["connections", "broadcast", "replicas"])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of steady load")
    parser.add_argument("--fanout-messages", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--replica-subscribers", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lydian-bench-"))
    results: dict[str, dict] = {}
    try:
        if args.only in (None, "connections"):
            results["connections"] = await bench_connections(args.connections, tmp)
            print("connections:", json.dumps(results["connections"]), flush=True)
        if args.only in (None, "broadcast"):
            results["broadcast"] = await bench_broadcast(
                args.subscribers, args.rate, args.duration, args.fanout_messages, tmp
            )
            print("broadcast:", json.dumps(results["broadcast"]), flush=True)
        if args.only in (None, "replicas"):
            results["replicas"] = await bench_replicas(
                args.replicas, args.replica_subscribers, args.rate, args.duration, tmp
            )
            print("replicas:", json.dumps(results["replicas"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nsummary vs targets:")
    if "connections" in results:
        c = results["connections"]
        print(
            f"  connections held by one process: {c['connections']} (target 10000), "
            f"{c['kib_per_connection']} KiB each"
        )
    if "broadcast" in results:
        b = results["broadcast"]
        print(
            f"  broadcast to {b['subscribers']}: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms "
            f"(target p99 < 50 ms); fan-out {b['ratio_hub_to_bare']}x bare websockets "
            f"(target >= 0.5x)"
        )
    if "replicas" in results:
        r = results["replicas"]
        print(f"  cross-replica ({r['replicas']} replicas) p99 {r['p99_ms']} ms (target < 20 ms)")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
