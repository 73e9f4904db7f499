"""The store against SQLite and the real PostgreSQL, each test isolated (own file / own schema)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from hub.base.protocol import Attachment, UserRef
from hub.store.store import RoomExists, Store, UnknownRoom, dm_room_id
from tests.procs import opened_store

ALICE = UserRef(id="alice", name="Alice")


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    async with opened_store(request.param, tmp_path) as store:
        yield store


async def test_engine_is_the_one_asked_for(store, request):
    assert store.kind == request.node.callspec.params["store"]


async def test_rooms_create_get_list_and_conflict(store):
    room = await store.create_room("lobby", name="The Lobby", topic="hi", created_by="alice")
    assert (room.id, room.name, room.kind, room.last_offset) == ("lobby", "The Lobby", "public", 0)
    assert (await store.get_room("lobby")).epoch == room.epoch
    assert await store.get_room("missing") is None
    with pytest.raises(RoomExists):
        await store.create_room("lobby", created_by="bob")
    await store.create_room("secret", kind="private", created_by="alice")
    assert [r.id for r in await store.list_rooms("bob")] == ["lobby"]
    await store.add_member("secret", "bob", "Bob")
    assert [r.id for r in await store.list_rooms("bob")] == ["lobby", "secret"]


async def test_offsets_are_gap_free_under_concurrent_writers(store):
    await store.create_room("busy", created_by="alice")
    writers = [UserRef(id=f"u{i}", name=f"U{i}") for i in range(5)]
    results = await asyncio.gather(
        *[store.append_message("busy", writers[i % 5], f"m{i}") for i in range(60)]
    )
    assert sorted(m.offset for m, _ in results) == list(range(1, 61))
    assert await store.latest_offset("busy") == 60
    assert [m.offset for m in await store.messages_after("busy", 0, 100)] == list(range(1, 61))


async def test_idempotent_append_by_client_id(store):
    await store.create_room("lobby", created_by="alice")
    first, dup1 = await store.append_message("lobby", ALICE, "x", client_id="c-1")
    again, dup2 = await store.append_message("lobby", ALICE, "x", client_id="c-1")
    other, _ = await store.append_message(
        "lobby", UserRef(id="bob", name="Bob"), "x", client_id="c-1"
    )
    assert (dup1, dup2) == (False, True)
    assert again.id == first.id and again.offset == first.offset
    assert other.offset == 2


async def test_concurrent_resends_store_one_message(store):
    await store.create_room("lobby", created_by="alice")
    results = await asyncio.gather(
        *[store.append_message("lobby", ALICE, "same", client_id="dup") for _ in range(8)]
    )
    assert len({m.id for m, _ in results}) == 1
    assert sum(1 for _, dup in results if not dup) == 1
    assert await store.latest_offset("lobby") == 1


async def test_history_pages_before_and_after(store):
    await store.create_room("lobby", created_by="alice")
    for i in range(25):
        await store.append_message("lobby", ALICE, f"m{i}")
    newest = await store.messages_before("lobby", None, 10)
    assert [m.offset for m in newest] == list(range(16, 26))
    older = await store.messages_before("lobby", newest[0].offset, 10)
    assert [m.offset for m in older] == list(range(6, 16))
    assert [m.offset for m in await store.messages_before("lobby", 6, 10)] == [1, 2, 3, 4, 5]
    assert [m.offset for m in await store.messages_after("lobby", 20, 3)] == [21, 22, 23]


async def test_message_fields_round_trip(store):
    await store.create_room("lobby", created_by="alice")
    att = Attachment(
        id="a1", name="cat.png", media_type="image/png", size=3, url="/api/attachments/a1"
    )
    author = UserRef(id="alice", name="Alice", avatar="https://example.org/a.png")
    sent, _ = await store.append_message(
        "lobby",
        author,
        "hello <b>",
        kind="agent",
        reply_to="m-0",
        attachments=[att],
        meta={"model": "offline"},
    )
    (read,) = await store.messages_after("lobby", 0, 10)
    assert read.text == "hello <b>" and read.kind == "agent" and read.reply_to == "m-0"
    assert read.attachments == [att] and read.meta == {"model": "offline"}
    assert read.user == author and read.id == sent.id and abs(read.ts - sent.ts) < 1e-3


async def test_unknown_room_is_refused(store):
    with pytest.raises(UnknownRoom):
        await store.append_message("nowhere", ALICE, "x")
    with pytest.raises(UnknownRoom):
        await store.latest_offset("nowhere")


async def test_dm_room_is_created_once_with_both_members(store):
    bob = UserRef(id="bob", name="Bob")
    room = await store.ensure_dm_room(ALICE, bob)
    assert room.id == dm_room_id("bob", "alice") == "dm:alice:bob" and room.kind == "dm"
    assert (await store.ensure_dm_room(bob, ALICE)).epoch == room.epoch
    assert [m.user_id for m in await store.members(room.id)] == ["alice", "bob"]


async def test_members_are_unique(store):
    await store.create_room("lobby", created_by="alice")
    assert await store.add_member("lobby", "bob", "Bob") is True
    assert await store.add_member("lobby", "bob", "Bob") is False
    assert await store.is_member("lobby", "bob")
    await store.remove_member("lobby", "bob")
    assert not await store.is_member("lobby", "bob")


async def test_room_plugin_enablement_upserts(store):
    await store.create_room("lobby", created_by="alice")
    await store.set_room_plugin("lobby", "echo", True, "alice")
    await store.set_room_plugin("lobby", "echo", False, "alice")
    await store.set_room_plugin("lobby", "dice", True, "alice")
    assert await store.room_plugins("lobby") == {"lobby": {"echo": False, "dice": True}}


async def test_migrations_are_idempotent(store):
    await store.migrate()
    await store.migrate()
    await store.create_room("after", created_by="alice")
    assert await store.get_room("after") is not None


async def test_sqlite_statements_outside_transactions_share_a_few_connections(tmp_path):
    """Reads run on a few persistent connections, not one new connection (and thread) each;
    a failing statement leaves its connection usable, and reads see committed writes."""
    from hub.store.engines import STATEMENT_CONNECTIONS

    store = await Store.open(f"sqlite:///{tmp_path}/store.sqlite3")
    try:
        await store.create_room("lobby", created_by="alice")
        engine = store.engine
        for round_ in range(3):
            await store.append_message("lobby", ALICE, f"m{round_}")
            rooms = await asyncio.gather(*[store.get_room("lobby") for _ in range(40)])
            assert {r.last_offset for r in rooms} == {round_ + 1}
        assert 1 <= len(engine._statement_connections) <= STATEMENT_CONNECTIONS
        with pytest.raises(Exception, match="no such table"):
            await engine._run_in_new_connection("SELECT * FROM missing_table")
        history = await asyncio.gather(*[store.messages_after("lobby", 0, 10) for _ in range(8)])
        assert all([m.text for m in h] == ["m0", "m1", "m2"] for h in history)
        assert len(engine._statement_connections) <= STATEMENT_CONNECTIONS
        # a write outside a transaction commits by itself: another connection sees it
        await engine._run_in_new_connection(
            "UPDATE lydian_room SET topic = ? WHERE slug = ?", ["fresh", "lobby"]
        )
        with sqlite3.connect(tmp_path / "store.sqlite3") as other:
            row = other.execute("SELECT topic FROM lydian_room WHERE slug = 'lobby'").fetchone()
        assert row == ("fresh",)
        # foreign keys are on for every connection, set once when it opens
        assert await engine.run_ddl("PRAGMA foreign_keys") == [{"foreign_keys": 1}]
        async with engine.transaction():
            assert await engine.run_ddl("PRAGMA foreign_keys") == [{"foreign_keys": 1}]
    finally:
        await store.close()
    assert engine._statement_connections == []


async def test_appends_and_other_writes_interleave_consistently(store):
    """Appending (its own statement or writer-thread path) and piccolo's transactions (rooms,
    members, plugins) run together; a refused append leaves no trace and no gap."""
    await store.create_room("lobby", created_by="alice")
    others = [store.add_member("lobby", f"m{i}", f"M{i}") for i in range(10)] + [
        store.create_room(f"side-{i}", created_by="alice") for i in range(5)
    ]
    appends = [store.append_message("lobby", ALICE, f"t{i}") for i in range(30)]
    refused = [store.append_message("nowhere", ALICE, "x") for _ in range(3)]
    results = await asyncio.gather(*others, *appends, *refused, return_exceptions=True)
    assert all(isinstance(r, UnknownRoom) for r in results[-3:])
    assert not [r for r in results[:-3] if isinstance(r, BaseException)]
    history = await store.messages_after("lobby", 0, 100)
    assert [m.offset for m in history] == list(range(1, 31))
    assert sorted(m.text for m in history) == sorted(f"t{i}" for i in range(30))
    assert len(await store.members("lobby")) == 10
    assert [(await store.get_room(f"side-{i}")).id for i in range(5)] == [
        f"side-{i}" for i in range(5)
    ]


async def test_sqlite_appends_run_on_one_writer_thread_that_close_ends(tmp_path):
    """A whole append is one call on the engine's writer thread; its commit is durable for
    other connections at once, a failing call rolls back, and closing the store ends it."""
    store = await Store.open(f"sqlite:///{tmp_path}/store.sqlite3")
    engine = store.engine
    await store.create_room("lobby", created_by="alice")
    await store.append_message("lobby", ALICE, "first")
    writer = engine._writer_connection
    assert writer is not None and writer.in_transaction is False
    with sqlite3.connect(tmp_path / "store.sqlite3") as other:
        assert other.execute("SELECT text FROM lydian_message").fetchall() == [("first",)]

    def failing(connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE lydian_room SET topic = 'half' WHERE slug = 'lobby'")
        connection.execute("ROLLBACK")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await engine.run_on_writer(failing)
    assert (await store.get_room("lobby")).topic == ""
    second, _ = await store.append_message("lobby", ALICE, "second")
    assert second.offset == 2 and engine._writer_connection is writer
    thread_names = {t.name for t in threading.enumerate()}
    assert any(name.startswith("lydian-sqlite-writer") for name in thread_names)
    await store.close()
    assert engine._writer is None and engine._writer_connection is None
    with pytest.raises(sqlite3.ProgrammingError):
        writer.execute("SELECT 1")
