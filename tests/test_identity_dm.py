"""Direct messages stay private: ``dm:`` ids are reserved, squatted rooms are repaired by a
migration, DMs go only to users the hub knows, guests only where the config allows."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from piccolo.apps.migrations.tables import Migration

from hub.base.protocol import UserRef
from hub.store.store import ReservedRoomId, Store
from hub.store.tables import Member, Message, Room
from tests import support
from tests.procs import clean_env, opened_store, pg_schema
from tests.support import running

SKIP = ("ping", "presence", "typing", "message")  # a DM comes back to its sender too
DM_MIGRATION = "2026-12-01T12:40:04:130004"  # migrations/lydian_0004_dm_rooms.py


_env = clean_env


async def test_users_cannot_create_or_join_into_dm_ids(server):
    async with server.http("mallory") as http:
        for room_id in ("dm:alice:bob", "dm:x", "dm:bob:alice"):
            resp = await http.post("/api/rooms", json={"id": room_id, "private": True})
            assert resp.status_code == 400, (room_id, resp.text)
            assert "reserved" in resp.text
        assert (await http.get("/api/rooms/dm:alice:bob")).status_code == 404
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.send({"type": "direct", "to": "bob", "text": "psst", "id": "d1"})
    assert (await alice.expect("ack"))["room"] == "dm:alice:bob"
    # one of the pair cannot add a third member to their DM room either
    async with server.http("alice") as http:
        resp = await http.post("/api/rooms/dm:alice:bob/members", json={"user_id": "mallory"})
        assert resp.status_code == 403
        members = (await http.get("/api/rooms/dm:alice:bob/members")).json()
    assert sorted(m["user_id"] for m in members) == ["alice", "bob"]
    assert {m["role"] for m in members} == {"owner"}
    await bob.close()
    await alice.close()


async def _squat(store: Store) -> None:
    """What a squatter could do before ``dm:`` was reserved: a private ``dm:alice:bob`` of
    their own (a message in it), plus a genuine DM room a third member was added to."""
    now = datetime.now(UTC)
    await Room.insert(
        Room(slug="dm:alice:bob", name="trap", topic="", kind="private", epoch="e1",
             last_seq=2, created_by="mallory", created_at=now),
        Room(slug="dm:carol:dave", name="Carol & Dave", topic="", kind="dm", epoch="e2",
             last_seq=0, created_by="carol", created_at=now),
        Room(slug="dm:x", name="x", topic="", kind="public", epoch="e3",
             last_seq=0, created_by="mallory", created_at=now),
        Room(slug="squatted-x", name="taken", topic="", kind="public", epoch="e4",
             last_seq=0, created_by="olive", created_at=now),
    )  # fmt: skip
    await Member.insert(
        Member(room="dm:alice:bob", user_id="mallory", user_name="M", role="owner", joined_at=now),
        Member(room="dm:carol:dave", user_id="carol", user_name="C", role="owner", joined_at=now),
        Member(room="dm:carol:dave", user_id="dave", user_name="D", role="owner", joined_at=now),
        Member(room="dm:carol:dave", user_id="eve", user_name="E", role="member", joined_at=now),
    )
    await Message.insert(
        Message(room="dm:alice:bob", seq=1, msg_id="m-squat", author_id="mallory",
                author_name="M", kind="user", text="my trap", meta="{}", created_at=now),
        # a DM the old DM path posted into the squatted room
        Message(room="dm:alice:bob", seq=2, msg_id="m-old-dm", author_id="alice",
                author_name="Alice", kind="user", text="old dm", meta="{}", created_at=now),
    )  # fmt: skip
    # the repair is the migration's: run it again as if these rows predated it
    await Migration.delete().where(Migration.name == DM_MIGRATION)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_migration_repairs_squatted_dm_rooms(engine, tmp_path: Path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if engine == "sqlite":
        url = f"sqlite:///{data_dir / 'lydian.sqlite3'}"
        await _check_repair(url, data_dir, tmp_path)
    else:
        async with pg_schema() as url:
            await _check_repair(url, data_dir, tmp_path)


async def _check_repair(url: str, data_dir: Path, tmp_path: Path) -> None:
    store = await Store.open(url)
    try:
        await _squat(store)
    finally:
        await store.close()
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "migrate"],
        cwd=tmp_path,
        env=_env(DATABASE_URL=url, LYDIAN_DATA_DIR=str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    settings = support.test_settings(str(data_dir), database_url=url)
    async with running(settings) as server:
        alice = await server.client("alice")
        bob = await server.client("bob")
        mallory = await server.client("mallory")
        await alice.send({"type": "direct", "to": "bob", "text": "for bob only", "id": "d1"})
        ack = await alice.expect("ack")
        assert ack["room"] == "dm:alice:bob" and ack["offset"] == 1  # a fresh room
        got = await bob.expect("message")
        assert got["message"]["text"] == "for bob only"
        # the squatter can neither join the pair's room nor read it, and got nothing
        await mallory.send({"type": "join", "room": "dm:alice:bob", "id": "j"})
        assert (await mallory.expect("error"))["code"] == "forbidden"
        assert [f for f in await mallory.silent_for(0.3) if f["type"] == "message"] == []
        async with server.http("mallory") as http:
            assert (await http.get("/api/rooms/dm:alice:bob/messages")).status_code == 403
            # ... while her own room lives on under a free id, with its message
            squatted = (await http.get("/api/rooms/squatted-alice-bob")).json()
            assert squatted["kind"] == "private" and squatted["created_by"] == "mallory"
            page = (await http.get("/api/rooms/squatted-alice-bob/messages")).json()
            assert [m["text"] for m in page["messages"]] == ["my trap", "old dm"]
        async with server.http("alice") as http:
            room = (await http.get("/api/rooms/dm:alice:bob")).json()
            assert room["kind"] == "dm" and room["created_by"] == "alice"
            page = (await http.get("/api/rooms/dm:alice:bob/messages")).json()
            assert [m["text"] for m in page["messages"]] == ["for bob only"]
            # alice keeps what she posted into the squatted room (now a member of it)
            page = (await http.get("/api/rooms/squatted-alice-bob/messages")).json()
            assert [m["text"] for m in page["messages"]] == ["my trap", "old dm"]
        async with server.http("bob") as http:  # bob posted nothing there: not added
            assert (await http.get("/api/rooms/squatted-alice-bob")).status_code == 403
        # a genuine DM room with a stranger added keeps its pair and loses the stranger
        members = await server.hub.store.members("dm:carol:dave")
        assert [m.user_id for m in members] == ["carol", "dave"]
        # an id no DM could have moves too, to a free name
        assert await server.hub.room("dm:x") is None
        moved = await server.hub.room("squatted-x-2")
        assert moved is not None and moved.created_by == "mallory"
        for client in (alice, bob, mallory):
            await client.close()


async def test_direct_messages_go_only_to_known_users(server):
    await server.create_room("lobby", owner="olive")
    async with server.http("olive") as http:  # added by an owner: known, though never seen
        await http.post("/api/rooms", json={"id": "team", "private": True})
        await http.post("/api/rooms/team/members", json={"user_id": "newbie"})
    gone = await server.client("gone")  # seen once, then left
    await gone.close()
    alice = await server.client("alice")
    await alice.send({"type": "direct", "to": "nobody", "text": "hi", "id": "d1"})
    refused = await alice.expect("error")
    assert refused["code"] == "unknown_user" and refused["id"] == "d1"
    assert await server.hub.room("dm:alice:nobody") is None  # no room was made for it
    for to in ("gone", "newbie", "olive"):
        await alice.send({"type": "direct", "to": to, "text": "hi", "id": f"d-{to}"})
        assert (await alice.expect("ack", skip=SKIP))["id"] == f"d-{to}"
    await alice.close()


async def _guest(server, name: str = "Visitor"):
    from tests.support import Client

    client = await Client.connect(server.ws_url)
    await client.send({"type": "hello", "name": name})
    client.welcome = await client.expect("welcome")
    return client


async def test_guests_send_no_direct_messages_by_default(server):
    admin = await server.client("root", admin=True)
    guest = await _guest(server)
    assert guest.welcome["user"]["guest"] is True
    await guest.send({"type": "direct", "to": "root", "text": "hello?", "id": "g1"})
    assert (await guest.expect("error"))["code"] == "forbidden"
    await guest.send({"type": "direct", "to": "nobody", "text": "hello?", "id": "g2"})
    assert (await guest.expect("error"))["code"] == "forbidden"
    # and members cannot DM guests they never talked to
    await admin.send({"type": "direct", "to": guest.welcome["user"]["id"], "text": "x", "id": "a"})
    assert (await admin.expect("error"))["code"] == "unknown_user"
    await guest.close()
    await admin.close()


async def test_guests_dm_whom_the_config_allows(make_server):
    async with make_server(guest_dm_targets="admins") as server:
        admin = await server.client("root", admin=True)
        member = await server.client("mia")
        guest = await _guest(server)
        await guest.send({"type": "direct", "to": "mia", "text": "hi", "id": "g1"})
        assert (await guest.expect("error"))["code"] == "forbidden"
        await guest.send({"type": "direct", "to": "ghost", "text": "hi", "id": "g2"})
        assert (await guest.expect("error"))["code"] == "unknown_user"
        await guest.send({"type": "direct", "to": "root", "text": "help?", "id": "g3"})
        ack = await guest.expect("ack", skip=SKIP)
        got = await admin.expect("message")
        assert got["message"]["text"] == "help?" and got["message"]["user"]["guest"] is True
        # the admin may answer: the guest wrote first
        guest_id = guest.welcome["user"]["id"]
        await admin.send({"type": "direct", "to": guest_id, "text": "sure", "id": "a1"})
        assert (await admin.expect("ack", skip=SKIP))["room"] == ack["room"]
        sure = await guest.expect(lambda f: f.get("message", {}).get("text") == "sure", skip=SKIP)
        assert sure["message"]["user"]["id"] == "root"
        for client in (admin, member, guest):
            await client.close()
    async with make_server(guest_dm_targets="mia,sam") as server:
        guest = await _guest(server)
        await guest.send({"type": "direct", "to": "mia", "text": "hi", "id": "g1"})
        assert (await guest.expect("ack", skip=SKIP))["id"] == "g1"
        await guest.send({"type": "direct", "to": "root", "text": "hi", "id": "g2"})
        assert (await guest.expect("error", skip=SKIP))["code"] == "forbidden"
        await guest.close()


async def test_the_store_keeps_dm_ids_for_the_dm_path(tmp_path):
    async with opened_store("sqlite", tmp_path) as store:
        for kind, by in (("public", "alice"), ("private", "alice"), ("dm", "mallory")):
            with pytest.raises(ReservedRoomId):
                await store.create_room("dm:alice:bob", kind=kind, created_by=by)
        with pytest.raises(ReservedRoomId):
            await store.create_room("lobby", kind="dm", created_by="alice")
        room = await store.ensure_dm_room(
            UserRef(id="bob", name="B"), UserRef(id="alice", name="A")
        )
        assert room.id == "dm:alice:bob" and room.kind == "dm" and room.created_by == "bob"
        with pytest.raises(ReservedRoomId):
            await store.add_member(room.id, "mallory", "M")
        assert [m.user_id for m in await store.members(room.id)] == ["alice", "bob"]
