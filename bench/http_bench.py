"""The cost of the HTTP read timeouts (issue 13), next to plain uvicorn in the same run.

    python bench/http_bench.py [--seconds 3] [--rounds 3] [--connections 32]

Requests/s of one Litestar app served by uvicorn + httptools, once with uvicorn's own
protocol and once with ``hub.web.timeouts.TimedHttpToolsProtocol`` (what ``lydian serve``
runs), each in its own process; this process is the load: keep-alive connections sending
raw HTTP/1.1, half of them ``GET`` and half ``POST`` with a small JSON body (the body path
moves the deadline), interleaved rounds so drift hits both alike. Besides requests/s (noisy on
a shared machine) it reports the server process's CPU time per request (user + system, from
``/proc``), which the load of other processes disturbs far less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROTOCOLS = {
    "uvicorn": "httptools",
    "timed": "hub.web.timeouts:TimedHttpToolsProtocol",
}
BODY = b'{"text": "' + b"x" * 200 + b'"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(kind: str, port: int) -> None:
    import uvicorn
    from litestar import Litestar, get, post

    @get("/page")
    async def page() -> dict[str, Any]:
        return {"ok": True}

    @post("/echo", status_code=200)
    async def echo(data: dict[str, Any]) -> dict[str, Any]:
        return {"chars": len(data["text"])}

    uvicorn.run(
        Litestar([page, echo]),
        host="127.0.0.1",
        port=port,
        http=PROTOCOLS[kind],
        log_level="warning",
        access_log=False,
    )


async def _connection(port: int, deadline: float, counts: list[int], post: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if post:
        request = (
            b"POST /echo HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
        )
    else:
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


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(port: int, seconds: float, connections: int, pid: int) -> tuple[float, float]:
    """(requests/s, server CPU µs per request)."""
    counts: list[int] = []
    deadline = time.perf_counter() + seconds
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(
        *(_connection(port, deadline, counts, i % 2 == 1) for i in range(connections))
    )
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    return sum(counts) / elapsed, cpu / max(1, sum(counts)) * 1e6


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


async def main(args: argparse.Namespace) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load}")
    procs, ports = {}, {}
    try:
        for kind in PROTOCOLS:
            ports[kind] = free_port()
            procs[kind] = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind, str(ports[kind])]
            )
        for port in ports.values():
            await _wait_port(port)
        results: dict[str, list[float]] = {kind: [] for kind in PROTOCOLS}
        cpu: dict[str, list[float]] = {kind: [] for kind in PROTOCOLS}
        for kind in PROTOCOLS:  # warm up
            await _load(ports[kind], 1.0, args.connections, procs[kind].pid)
        for _ in range(args.rounds):
            for kind in PROTOCOLS:
                rps, us = await _load(ports[kind], args.seconds, args.connections, procs[kind].pid)
                results[kind].append(rps)
                cpu[kind].append(us)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
    plain, timed = statistics.median(results["uvicorn"]), statistics.median(results["timed"])
    ratios = [t / p for t, p in zip(results["timed"], results["uvicorn"], strict=True)]
    print(
        f"HTTP GET+POST: with read timeouts {timed:,.0f} req/s vs uvicorn's protocol "
        f"{plain:,.0f} req/s -> ratio {statistics.median(ratios):.3f} "
        f"(rounds {min(ratios):.3f}..{max(ratios):.3f})  "
        f"({args.connections} connections, {args.rounds} x {args.seconds:g} s each)"
    )
    plain_us, timed_us = statistics.median(cpu["uvicorn"]), statistics.median(cpu["timed"])
    print(
        f"server CPU per request: with read timeouts {timed_us:.0f} µs vs uvicorn's protocol "
        f"{plain_us:.0f} µs -> +{timed_us - plain_us:.1f} µs, ratio {timed_us / plain_us:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
    else:
        asyncio.run(main(args))
