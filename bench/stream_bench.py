"""Streaming benchmark (issue 5): the hub's overhead on time to first token and throughput.

    python bench/stream_bench.py                       # 1 and 100 concurrent streams
    python bench/stream_bench.py --tokens 500 --rounds 10 --concurrency 1,10,100

One fake OpenAI-compatible server (``tests/fakes/openai_server.py``) runs in its own
process; one hub (``lydian serve``) runs in another, its OpenAI provider pointed at the
fake. This process is the load. For each concurrency, three paths are measured side by
side in the same run, interleaved round by round:

- ``direct``: a client streaming from the fake server (the baseline);
- ``hub /v1``: the same client streaming from the hub's OpenAI-compatible API;

  the client is aiohttp with msgspec decoding (``--client raw``, the default: light enough
  that 100 streams measure the servers rather than the load generator) or the ``openai``
  library (``--client openai``, ~0.4 ms of pydantic per chunk);
- ``hub room``: a WebSocket client asks ``@assistant`` in a room (one room per stream) and
  reads ``stream_delta`` frames; this path also persists the question and the answer.

Above one stream, ``--arrivals`` runs the streams two ways: ``sustained`` keeps N streams
in flight (N clients in a closed loop, each starting its next stream when the last ends,
as LLM serving benchmarks run "concurrency N") and measures streams started while all N
run; ``burst`` starts N streams at the same instant, so it also measures the queue of N
requests arriving together.

Time to first token is from the request (the ``send`` frame) to the first content; tokens/s
is per stream, after the first token; "agg tok/s" is all tokens over the measured wall time;
"vs direct" is the per-stream tokens/s relative to ``direct``; "hub CPU" is the hub
process's CPU time over the phase's wall time (100 % = one core), and "CPU/stream" that
CPU time over every stream the phase ran (``--tokens 2`` shows the cost of setting one up).
Target: under 5 ms added to the first token (``direct`` → ``hub /v1``, ``hub room``).

The default paces the fake model at 10 ms per token (100 tokens/s, a fast hosted model);
``--token-delay 0`` measures flat-out throughput instead, where the load generator, the
fake server and the hub compete for the same CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import msgspec
import openai
import websockets

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-for-lydian-stream-benchmark-0123456789"
sys.path.insert(0, str(ROOT))

from hub.base.auth import Identity, issue_token  # noqa: E402
from tests.support import free_port  # noqa: E402


class Sample:
    def __init__(self, ttft: float, tokens: int, duration_after_first: float) -> None:
        self.ttft = ttft
        self.tokens = tokens
        self.rate = (tokens - 1) / duration_after_first if duration_after_first > 0 else 0.0


# ---------------------------------------------------------------- processes


async def start_fake(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.openai_server",
            "--tokens",
            str(args.tokens),
            "--first-delay",
            str(args.first_delay),
            "--token-delay",
            str(args.token_delay),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    port = int(line.split()[1])
    return proc, f"http://127.0.0.1:{port}/v1"


async def start_hub(
    base_url: str, data_dir: str, database_url: str | None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "LYDIAN_PORT": str(port),
        "LYDIAN_DATA_DIR": data_dir,
        "LYDIAN_SECRET": SECRET,
        "LYDIAN_LOG_LEVEL": "warning",
        "LYDIAN_SEND_QUEUE_FRAMES": "100000",
        "LYDIAN_PLUGIN_OPENAI_PROVIDER_BASE_URL": base_url,
        "LYDIAN_PLUGIN_OPENAI_PROVIDER_MODEL": "fake-model",
        "LYDIAN_PLUGIN_ASSISTANT_HISTORY_MESSAGES": "0",
    }
    env.pop("REDIS_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)
    log = open(Path(data_dir) / "hub.log", "ab")
    proc = subprocess.Popen(["lydian", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return proc, url
            await asyncio.sleep(0.1)
    raise SystemExit(f"the hub did not start; see {data_dir}/hub.log")


def token(user: str, admin: bool = False) -> str:
    roles = ("admin",) if admin else ()
    return issue_token(Identity(id=user, name=user, roles=roles), SECRET, 3600)


# ---------------------------------------------------------------- one stream per path


async def openai_stream(client: openai.AsyncOpenAI, model: str) -> Sample:
    """One streamed completion read with the ``openai`` client (``--client openai``)."""
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "go"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            tokens += 1
    end = time.perf_counter()
    assert first is not None
    return Sample(first - start, tokens, end - first)


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []


_chunk = msgspec.json.Decoder(_Chunk)


class RawClient:
    """The same request over aiohttp, chunks decoded with msgspec (``--client raw``): a load
    generator light enough (C HTTP parser) that 100 streams measure the servers, not itself."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=KEEPALIVE_SECONDS)
        self.url = f"{base_url}/chat/completions"
        self.session = aiohttp.ClientSession(connector=connector, headers=headers)

    async def aclose(self) -> None:
        await self.session.close()


KEEPALIVE_SECONDS = 4.0
"""Under uvicorn's 5 s: the client never reuses a connection the hub is closing."""


async def raw_stream(client: RawClient, model: str) -> Sample:
    body = {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True}
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.session.post(client.url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            chunk = _chunk.decode(line[6:])
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                if first is None:
                    first = time.perf_counter()
                tokens += 1
    end = time.perf_counter()
    assert first is not None
    return Sample(first - start, tokens, end - first)


async def room_stream(ws: websockets.ClientConnection, room: str) -> Sample:
    await ws.send(json.dumps({"type": "send", "room": room, "text": "@assistant go"}))
    start = time.perf_counter()
    first = None
    while True:
        frame = json.loads(await ws.recv())
        kind = frame["type"]
        if kind == "stream_delta" and first is None:
            first = time.perf_counter()
        elif kind == "stream_end":
            end = time.perf_counter()
            tokens = frame["message"]["meta"]["metrics"]["tokens"]
            assert first is not None
            return Sample(first - start, tokens, end - first)
        elif kind == "stream_error":
            raise RuntimeError(frame)


async def room_clients(
    hub_url: str, count: int, tag: str
) -> list[tuple[websockets.ClientConnection, str]]:
    admin = {"Authorization": f"Bearer {token('bench-admin', admin=True)}"}
    out = []
    async with httpx.AsyncClient(base_url=hub_url, headers=admin, timeout=30) as http:
        for i in range(count):
            room = f"bench-{tag}-{i}"
            resp = await http.post("/api/rooms", json={"id": room})
            assert resp.status_code == 201, resp.text
            resp = await http.put(f"/api/rooms/{room}/plugins/assistant", json={"enabled": True})
            assert resp.status_code == 200, resp.text
    for i in range(count):
        room = f"bench-{tag}-{i}"
        ws = await websockets.connect(f"{hub_url.replace('http', 'ws')}/ws", max_size=None)
        await ws.send(json.dumps({"type": "hello", "token": token(f"user{i}")}))
        await ws.send(json.dumps({"type": "join", "room": room}))
        while json.loads(await ws.recv())["type"] != "joined":
            pass
        out.append((ws, room))
    return out


async def cancel_latency(ws: websockets.ClientConnection, room: str) -> float:
    """Seconds from a ``cancel`` frame to ``stream_end{cancelled}`` (partial persisted)."""
    await ws.send(json.dumps({"type": "send", "room": room, "text": "@assistant go"}))
    stream_id = None
    while stream_id is None:
        frame = json.loads(await ws.recv())
        if frame["type"] == "stream_delta":
            stream_id = frame["stream_id"]
    await ws.send(json.dumps({"type": "cancel", "room": room, "stream_id": stream_id}))
    start = time.perf_counter()
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "stream_end" and frame["stream_id"] == stream_id:
            assert frame["cancelled"], frame
            return time.perf_counter() - start


# ---------------------------------------------------------------- rounds


async def run(args: argparse.Namespace) -> None:
    fake, fake_url = await start_fake(args)
    data_dir = tempfile.mkdtemp(prefix="lydian-stream-bench-")
    hub, hub_url = await start_hub(fake_url, data_dir, args.database_url)
    try:
        await measure(args, fake_url, hub_url, hub.pid)
    finally:
        for proc in (hub, fake):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


async def measure(args: argparse.Namespace, fake_url: str, hub_url: str, hub_pid: int) -> None:
    if args.client == "openai":
        direct_client: Any = openai.AsyncOpenAI(
            base_url=fake_url, api_key="x", max_retries=0, timeout=60
        )
        hub_client: Any = openai.AsyncOpenAI(
            base_url=f"{hub_url}/v1", api_key=token("bench"), max_retries=0, timeout=60
        )
        one = openai_stream
    else:
        direct_client = RawClient(fake_url)
        hub_client = RawClient(f"{hub_url}/v1", {"Authorization": f"Bearer {token('bench')}"})
        one = raw_stream
    print(
        f"tokens/stream {args.tokens}, first delay {args.first_delay * 1000:g} ms, "
        f"token delay {args.token_delay * 1000:g} ms, rounds {args.rounds}, client {args.client}"
    )
    header = (
        f"{'conc':>5} {'arrivals':<9} {'path':<9} {'streams':>7} {'ttft p50':>9} {'ttft p95':>9} "
        f"{'added p50':>10} {'tok/s p50':>10} {'vs direct':>9} {'agg tok/s':>10} "
        f"{'hub CPU':>8} {'CPU/stream':>10}"
    )
    print(header)
    print("-" * len(header))
    for concurrency in args.concurrency:
        rooms = await room_clients(hub_url, concurrency, f"c{concurrency}")
        paths: dict[str, Callable[[int], Awaitable[Sample]]] = {
            "direct": lambda _: one(direct_client, "fake-model"),
            "hub /v1": lambda _: one(hub_client, "assistant"),
            "hub room": lambda i, rooms=rooms: room_stream(*rooms[i]),
        }
        paths = {k: v for k, v in paths.items() if k in args.paths}
        for _ in range(2):  # warm up: connections, plugin paths, JIT-less caches
            for start_one in paths.values():
                await start_one(0)
        modes = ["burst"] if concurrency == 1 else args.arrivals
        for mode in modes:
            results: dict[str, list[Sample]] = {k: [] for k in paths}
            walls: dict[str, float] = dict.fromkeys(paths, 0.0)
            hub_cpu: dict[str, list[float]] = {k: [0.0, 0.0, 0] for k in paths}  # CPU, wall, n
            rounds = args.rounds if concurrency == 1 else max(2, args.rounds // 3)
            for _ in range(rounds):
                for path, start_one in paths.items():
                    cpu0, t0 = cpu_seconds(hub_pid), time.perf_counter()
                    if mode == "burst":
                        samples = await asyncio.gather(*(start_one(i) for i in range(concurrency)))
                        walls[path] += time.perf_counter() - t0
                        ran = concurrency
                    else:
                        samples, wall, ran = await sustained(start_one, concurrency, args)
                        walls[path] += wall
                    hub_cpu[path][0] += cpu_seconds(hub_pid) - cpu0
                    hub_cpu[path][1] += time.perf_counter() - t0
                    hub_cpu[path][2] += ran
                    results[path].extend(samples)
            report(concurrency, mode, results, walls, hub_cpu)
        if concurrency == 1 and args.token_delay > 0:
            waits = sorted([await cancel_latency(*rooms[0]) * 1000 for _ in range(10)])
            print(
                f"{'':>5} cancel → stream_end: p50 {statistics.median(waits):.1f} ms, "
                f"max {waits[-1]:.1f} ms (target < 100 ms)"
            )
        for ws, _ in rooms:
            await ws.close()
    for client in (direct_client, hub_client):
        await (client.close() if args.client == "openai" else client.aclose())


async def sustained(
    start_one: Callable[[int], Awaitable[Sample]], workers: int, args: argparse.Namespace
) -> tuple[list[Sample], float, int]:
    """``workers`` clients, each starting its next stream when its last one ends (a closed
    loop: "concurrency N" as LLM serving benchmarks run it). Their first starts are spread
    over one stream's length, so arrivals are steady; a stream counts if it starts after
    that ramp, when all ``workers`` streams are in flight, and before ``--seconds`` more.
    Returns the samples, the seconds during which they were started and how many streams
    ran in all (ramp and tail included)."""
    ramp = max(args.tokens * args.token_delay, 0.5)
    t0 = time.perf_counter()
    measured_from, measured_to = t0 + ramp, t0 + ramp + args.seconds
    samples: list[Sample] = []
    ran = 0

    async def worker(i: int) -> None:
        nonlocal ran
        await asyncio.sleep(ramp * i / workers)
        while (started := time.perf_counter()) < measured_to:
            sample = await start_one(i)
            ran += 1
            if started >= measured_from:
                samples.append(sample)

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return samples, args.seconds, ran


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(
    concurrency: int,
    mode: str,
    results: dict[str, list[Sample]],
    walls: dict[str, float],
    hub_cpu: dict[str, list[float]],
) -> None:
    direct = results.get("direct")
    base = statistics.median(s.ttft for s in direct) if direct else None
    base_rate = statistics.median(s.rate for s in direct) if direct else None
    for path, samples in results.items():
        ttfts = sorted(s.ttft * 1000 for s in samples)
        p50 = statistics.median(ttfts)
        p95 = ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]
        rate = statistics.median(s.rate for s in samples)
        agg = sum(s.tokens for s in samples) / walls[path]
        added = "" if path == "direct" or base is None else f"{p50 - base * 1000:+.2f} ms"
        versus = f"{rate / base_rate:>9.2f}" if base_rate else f"{'':>9}"
        cpu_s, wall_s, ran = hub_cpu[path]
        cpu = per_stream = ""
        if path != "direct":
            cpu = f"{cpu_s / wall_s * 100:.0f} %"
            per_stream = f"{cpu_s / ran * 1000:.2f} ms"
        print(
            f"{concurrency:>5} {mode:<9} {path:<9} {len(samples):>7} {p50:>7.2f}ms "
            f"{p95:>7.2f}ms {added:>10} {rate:>10.0f} {versus} {agg:>10.0f} "
            f"{cpu:>8} {per_stream:>10}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds")
    parser.add_argument("--token-delay", type=float, default=0.01, help="seconds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1, 100]
    )
    parser.add_argument(
        "--client",
        choices=("raw", "openai"),
        default="raw",
        help="load generator for direct and /v1: httpx + msgspec, or the openai client",
    )
    parser.add_argument(
        "--arrivals",
        type=lambda v: v.split(","),
        default=["sustained", "burst"],
        help="above 1 stream: 'sustained' (a closed loop of N clients, N streams always in "
        "flight) and/or 'burst' (N streams started at the same instant)",
    )
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="sustained: seconds of measured starts"
    )
    parser.add_argument(
        "--paths",
        type=lambda v: v.split(","),
        default=["direct", "hub /v1", "hub room"],
        help="which paths to run (comma-separated; 'direct' is the baseline of 'added')",
    )
    parser.add_argument("--database-url", help="PostgreSQL URL for the hub (default SQLite)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
