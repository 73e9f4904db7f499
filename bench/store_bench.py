"""Embedded SQLite store: the cost of a read and of appending a message.

    python bench/store_bench.py [--reads 2000] [--appends 500]

A read outside a transaction runs on the engine's persistent statement connections; the
baseline, measured in the same run, is piccolo's own way (a new connection and thread for
every statement). Appends are ``Store.append_message`` one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from piccolo.engine.sqlite import SQLiteEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.protocol import UserRef
from hub.store.store import Store

QUERY = "SELECT * FROM lydian_room WHERE slug = 'lobby'"


async def per_call(run, count: int) -> tuple[float, float]:
    """Milliseconds of wall and CPU time per call."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(count):
        await run()
    return (time.perf_counter() - t0) / count * 1000, (time.process_time() - c0) / count * 1000


async def main(args: argparse.Namespace) -> None:
    store = await Store.open(f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3")
    await store.create_room("lobby", created_by="bench")
    engine = store.engine
    author = UserRef(id="bench", name="Bench")
    try:
        rounds: dict[str, list[tuple[float, float]]] = {"persistent": [], "piccolo": []}
        for _ in range(3):  # interleaved, so both see the same machine
            rounds["persistent"].append(
                await per_call(lambda: engine._run_in_new_connection(QUERY), args.reads)
            )
            rounds["piccolo"].append(
                await per_call(
                    lambda: SQLiteEngine._run_in_new_connection(engine, QUERY), args.reads // 10
                )
            )
        best = {name: min(r) for name, r in rounds.items()}
        for name, (wall, cpu) in best.items():
            print(f"read, {name:<10} {wall:7.3f} ms wall {cpu:7.3f} ms CPU (best of 3 rounds)")
        ratio = best["piccolo"][0] / best["persistent"][0]
        print(f"persistent read vs piccolo's: {ratio:.0f}x faster")
        wall, cpu = await per_call(
            lambda: store.append_message("lobby", author, "hello"), args.appends
        )
        print(f"append_message:  {wall:7.3f} ms wall {cpu:7.3f} ms CPU")
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--appends", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
