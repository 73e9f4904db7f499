"""Store benchmark: the cost of a read and of appending a message.

    python bench/store_bench.py [--reads 2000] [--appends 500] [--database-url postgresql://…]

Each figure is measured side by side with piccolo's own way of doing the same, in the same
run, interleaved round by round so both see the same machine:

- a read outside a transaction, on the embedded SQLite engine's persistent statement
  connections, against piccolo's new connection and thread for every statement;
- ``Store.append_message`` (SQLite: one trip to the writer thread; PostgreSQL: one
  statement) against piccolo's transaction (begin, ``UPDATE … RETURNING``, ``INSERT``,
  commit, each a trip to the connection's thread or a round trip to the server), on SQLite
  and, with ``--database-url``, on PostgreSQL too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from piccolo.engine.sqlite import SQLiteEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.base.protocol import UserRef
from hub.store.store import Store
from hub.store.tables import Message, Room

QUERY = "SELECT * FROM lydian_room WHERE slug = 'lobby'"
AUTHOR = UserRef(id="bench", name="Bench")


async def per_call(run: Callable[[], Awaitable[object]], count: int) -> tuple[float, float]:
    """Milliseconds of wall and CPU time per call."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(count):
        await run()
    return (time.perf_counter() - t0) / count * 1000, (time.process_time() - c0) / count * 1000


async def piccolo_append(store: Store, room: str) -> None:
    """The baseline: the append as a piccolo transaction of two statements."""
    async with store._write():
        rows = (
            await Room.update({Room.last_seq: Room.last_seq + 1}, force=True)
            .where(Room.slug == room)
            .returning(Room.last_seq)
        )
        await Message.insert(
            Message(
                room=room,
                seq=rows[0]["last_seq"],
                msg_id=str(uuid.uuid4()),
                author_id=AUTHOR.id,
                author_name=AUTHOR.name,
                text="hello",
                meta="{}",
                created_at=datetime.now(UTC),
            )
        )


async def side_by_side(
    label: str,
    ours: tuple[str, Callable[[], Awaitable[object]], int],
    theirs: tuple[str, Callable[[], Awaitable[object]], int],
) -> None:
    rounds: dict[str, list[tuple[float, float]]] = {ours[0]: [], theirs[0]: []}
    for _ in range(3):  # interleaved, so both see the same machine
        for name, run, count in (ours, theirs):
            rounds[name].append(await per_call(run, count))
    best = {name: min(r) for name, r in rounds.items()}
    for name, (wall, cpu) in best.items():
        print(f"{label:<16} {name:<20} {wall:7.3f} ms wall {cpu:7.3f} ms CPU (best of 3)")
    ratio = best[theirs[0]][0] / best[ours[0]][0]
    print(f"{label:<16} {ours[0]} vs {theirs[0]}: {ratio:.1f}x faster")


async def appends(store: Store, label: str, count: int) -> None:
    await store.create_room("bench-appends", created_by="bench")
    await side_by_side(
        label,
        ("append_message", lambda: store.append_message("bench-appends", AUTHOR, "hello"), count),
        ("piccolo transaction", lambda: piccolo_append(store, "bench-appends"), count),
    )


async def main(args: argparse.Namespace) -> None:
    store = await Store.open(f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3")
    await store.create_room("lobby", created_by="bench")
    engine = store.engine
    try:
        await side_by_side(
            "read, SQLite",
            ("persistent", lambda: engine._run_in_new_connection(QUERY), args.reads),
            (
                "piccolo",
                lambda: SQLiteEngine._run_in_new_connection(engine, QUERY),
                args.reads // 10,
            ),
        )
        await appends(store, "append, SQLite", args.appends)
    finally:
        await store.close()
    if args.database_url:
        store = await Store.open(args.database_url)
        try:
            await Room.delete().where(Room.slug == "bench-appends")
            await Message.delete().where(Message.room == "bench-appends")
            await appends(store, "append, Postgres", args.appends)
        finally:
            await Message.delete().where(Message.room == "bench-appends")
            await Room.delete().where(Room.slug == "bench-appends")
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--database-url", help="also measure appends on this PostgreSQL")
    asyncio.run(main(parser.parse_args()))
