"""Join, broadcast, DMs, presence, typing and heartbeats with real WebSocket clients."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed


async def test_broadcast_reaches_every_member_in_order(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    for i in range(5):
        await alice.say("lobby", f"a{i}", f"a{i}")
    texts = [(await bob.expect("message"))["message"]["text"] for _ in range(5)]
    assert texts == [f"a{i}" for i in range(5)]
    offsets = [(await alice.expect("message"))["message"]["offset"] for _ in range(5)]
    assert offsets == [1, 2, 3, 4, 5]


async def test_presence_snapshot_and_two_connections_of_one_user(server):
    await server.create_room("lobby")
    watcher = await server.client("watcher")
    await watcher.join("lobby")
    bob1 = await server.client("bob")
    joined = await bob1.join("lobby")
    assert {p["user"]["id"] for p in joined["presence"]} == {"watcher", "bob"}
    online = await watcher.expect(lambda f: f["type"] == "presence" and f["user"]["id"] == "bob")
    assert (online["user"]["id"], online["status"]) == ("bob", "online")

    bob2 = await server.client("bob")
    await bob2.join("lobby")
    await bob1.close()
    # bob still has a connection: nobody is told he went offline
    assert [f for f in await watcher.silent_for(0.4) if f["type"] == "presence"] == []
    await bob2.close()
    offline = await watcher.expect(lambda f: f["type"] == "presence" and f["status"] == "offline")
    assert (offline["user"]["id"], offline["status"]) == ("bob", "offline")
    assert [
        p["user"]["id"] for p in (await (await server.client("x")).join("lobby"))["presence"]
    ] == ["watcher", "x"]


async def test_typing_is_broadcast_and_expires_by_itself(make_server):
    async with make_server(typing_ttl=0.3) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        bob = await server.client("bob")
        await alice.join("lobby")
        await bob.join("lobby")
        await bob.send({"type": "typing", "room": "lobby"})
        started = await alice.expect("typing", skip=("ping", "presence"))
        assert (started["user"]["id"], started["active"]) == ("bob", True)
        t0 = asyncio.get_running_loop().time()
        stopped = await alice.expect("typing", skip=("ping", "presence"), timeout=2)
        assert (stopped["user"]["id"], stopped["active"]) == ("bob", False)
        assert asyncio.get_running_loop().time() - t0 >= 0.25


async def test_sending_a_message_ends_typing(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    await bob.send({"type": "typing", "room": "lobby"})
    assert (await alice.expect("typing"))["active"] is True
    await bob.say("lobby", "done typing", "b1")
    assert (await alice.expect("typing"))["active"] is False
    assert (await alice.expect("message"))["message"]["text"] == "done typing"


async def test_direct_messages_reach_only_the_two_users(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await carol.join("lobby")
    await alice.send({"type": "direct", "to": "bob", "text": "psst", "id": "d1"})
    ack = await alice.expect("ack")
    assert ack["room"] == "dm:alice:bob" and ack["offset"] == 1
    got = await bob.expect("message")
    assert got["message"]["text"] == "psst" and got["message"]["room"] == "dm:alice:bob"
    assert (await alice.expect("message"))["message"]["id"] == got["message"]["id"]
    assert [f for f in await carol.silent_for(0.3) if f["type"] == "message"] == []
    # the DM room is private: carol can neither join nor read it, bob can replay it
    await carol.send({"type": "join", "room": "dm:alice:bob", "id": "j"})
    assert (await carol.expect("error"))["code"] == "forbidden"
    joined = await bob.join("dm:alice:bob", since=0)
    assert joined["replayed"] == 1
    assert (await bob.expect("message"))["message"]["text"] == "psst"


async def test_heartbeat_drops_a_silent_client_and_keeps_a_live_one(make_server):
    async with make_server(heartbeat_interval=0.2, heartbeat_timeout=0.7) as server:
        await server.create_room("lobby")
        silent = await server.client("silent")
        lively = await server.client("lively")
        await silent.join("lobby")
        await lively.join("lobby")
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while loop.time() < end:  # lively answers pings; silent never sends a frame
            frame = await lively.recv(timeout=1)
            if frame["type"] == "ping":
                await lively.send({"type": "pong"})
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await silent.recv(timeout=1)
        assert closed.value.rcvd.code == 4408
        offline = [f for f in lively.seen if f["type"] == "presence" and f["status"] == "offline"]
        assert [f["user"]["id"] for f in offline] == ["silent"]
        await lively.say("lobby", "still here", "l1")


async def test_a_dm_reaches_a_socket_once_also_when_it_joined_the_dm_room(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.send({"type": "direct", "to": "bob", "text": "first", "id": "d1"})
    await bob.expect("message")
    await bob.join("dm:alice:bob")
    await alice.send({"type": "direct", "to": "bob", "text": "second", "id": "d2"})
    got = await bob.expect("message")
    assert got["message"]["text"] == "second"
    assert [f for f in await bob.silent_for(0.4) if f["type"] == "message"] == []


async def test_dm_recipients_must_be_usable_in_a_room_id(server):
    alice = await server.client("alice")
    await alice.send({"type": "direct", "to": "x" * 49, "text": "hi"})
    assert (await alice.expect("error"))["code"] == "invalid_frame"
    await alice.send({"type": "direct", "to": "a+b@x.com", "text": "hi"})
    assert (await alice.expect("error"))["code"] == "invalid_frame"


async def test_rejoining_does_not_announce_presence_again(server):
    await server.create_room("lobby")
    watcher = await server.client("watcher")
    await watcher.join("lobby")
    bob = await server.client("bob")
    await bob.join("lobby")
    await watcher.expect(lambda f: f["type"] == "presence" and f["user"]["id"] == "bob")
    again = await bob.join("lobby", since=0)
    assert again["recovered"] is True
    assert [f for f in await watcher.silent_for(0.4) if f["type"] == "presence"] == []


async def test_live_and_replayed_messages_have_the_same_shape(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    await alice.say("lobby", "shape", "s1")
    live = (await alice.expect("message"))["message"]
    bob = await server.client("bob")
    await bob.join("lobby", since=0)
    replayed = (await bob.expect("message"))["message"]
    assert live.keys() == replayed.keys() and live["kind"] == "user"
    assert live == replayed
