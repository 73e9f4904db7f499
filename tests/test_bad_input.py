"""Every kind of bad input gets a stable error code (or a clear close code) and loses nothing."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support import TEST_SECRET, Client


async def _error(client: Client, frame) -> dict:
    await client.send(frame)
    return await client.expect("error")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        (b"\xff\xfe garbage", "bad_json"),
        ("[1, 2, 3]", "invalid_frame"),
        ('{"no": "type"}', "invalid_frame"),
        ('{"type": 42}', "invalid_frame"),
        ('{"type": "explode", "room": "lobby"}', "unknown_type"),
        ('{"type": "send", "room": 5, "text": "x"}', "invalid_frame"),
        ('{"type": "send", "room": "lobby"}', "invalid_frame"),
        ('{"type": "join", "room": "no spaces allowed"}', "invalid_frame"),
        ('{"type": "join", "room": "lobby", "since": -1}', "bad_request"),
        ('{"type": "history", "room": "lobby", "limit": 100000}', "bad_request"),
        ('{"type": "send", "room": "lobby", "text": "   "}', "invalid_frame"),
        ('{"type": "join", "room": "nowhere"}', "unknown_room"),
        ('{"type": "send", "room": "lobby", "text": "not joined yet"}', "not_joined"),
        ('{"type": "send", "room": "nowhere", "text": "hi"}', "not_joined"),
        ('{"type": "typing", "room": "lobby"}', "not_joined"),
        ('{"type": "history", "room": "nowhere"}', "unknown_room"),
        ('{"type": "direct", "to": "alice", "text": "me to me"}', "invalid_frame"),
        ('{"type": "hello"}', "already_authenticated"),
    ],
)
async def test_bad_frames_get_a_stable_code_and_the_socket_lives_on(server, frame, code):
    await server.create_room("lobby")
    alice = await server.client("alice")
    error = await _error(alice, frame)
    assert error["code"] == code and error["detail"]
    await alice.join("lobby")
    assert (await alice.say("lobby", "still works", "after"))["offset"] == 1


async def test_oversize_frames_get_an_error_below_the_transport_cap(make_server):
    async with make_server(max_frame_bytes=1024) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        big = json.dumps({"type": "send", "room": "lobby", "text": "x" * 5000, "id": "big"})
        error = await _error(alice, big)
        assert error["code"] == "frame_too_large" and "1024" in error["detail"]
        assert (await alice.say("lobby", "small", "small"))["offset"] == 1


async def test_frames_above_the_transport_cap_close_with_1009(server):
    alice = await server.client("alice")
    with pytest.raises(ConnectionClosed) as closed:  # the hub may close while it is still sent
        await alice.send("x" * (17 * 1024 * 1024))
        while True:
            await alice.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_text_longer_than_the_limit_is_refused(make_server):
    async with make_server(max_text_chars=10) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        error = await _error(alice, {"type": "send", "room": "lobby", "text": "y" * 11, "id": "t"})
        assert error["code"] == "invalid_frame" and error["id"] == "t"


def _token(secret: str, **claims) -> str:
    payload = {
        "sub": "mallory",
        "iss": "lydian",
        "exp": int(time.time()) + 365 * 24 * 3600,  # made at collection: far from expiring
        "iat": int(time.time()),
        "name": "Mallory",
        "roles": ["admin"],
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (_token("a-different-secret-that-is-long-enough-to-sign"), "auth_failed"),
        (_token(TEST_SECRET, exp=int(time.time()) - 10), "token_expired"),
        (_token(TEST_SECRET, iss="someone-else"), "auth_failed"),
        ("not.a.jwt", "auth_failed"),
        (_token(TEST_SECRET)[:-4] + "AAAA", "auth_failed"),
    ],
)
async def test_forged_and_expired_tokens_are_refused_and_a_retry_works(server, token, code):
    client = await Client.connect(server.ws_url)
    error = await _error(client, {"type": "hello", "token": token})
    assert error["code"] == code
    error = await _error(client, {"type": "join", "room": "lobby"})
    assert error["code"] == "not_authenticated"
    await client.send({"type": "hello", "token": server.token("alice")})
    assert (await client.expect("welcome"))["user"]["id"] == "alice"


async def test_a_socket_that_never_says_hello_is_closed_with_4401(make_server):
    async with make_server(auth_timeout=0.3) as server:
        client = await Client.connect(server.ws_url)
        await client.send({"type": "join", "room": "lobby"})
        assert (await client.expect("error"))["code"] == "not_authenticated"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv(timeout=3)
        assert closed.value.rcvd.code == 4401


async def test_guests_are_refused_when_the_configuration_forbids_them(make_server):
    async with make_server(allow_guests=False) as server:
        client = await Client.connect(server.ws_url)
        assert (await _error(client, {"type": "hello"}))["code"] == "not_authenticated"
        async with server.http() as http:
            assert (await http.post("/api/guest-token")).status_code == 403


async def test_guests_are_welcome_when_allowed(server):
    guest = await server.client(None)
    assert guest.welcome["roles"] == ["guest"] and guest.welcome["user"]["id"].startswith("guest-")


async def test_garbage_from_one_client_does_not_disturb_the_others(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    bob = await server.client("bob")
    vandal = await server.client("vandal")
    await alice.join("lobby")
    await bob.join("lobby")
    await vandal.join("lobby")
    junk = [
        "{",
        "null",
        '{"type":"send","room":"lobby","text":7}',
        "\x00" * 100,
        '{"type":"join","room":"' + "r" * 500 + '"}',
    ]

    async def vandalize() -> None:
        for i in range(200):
            await vandal.send(junk[i % len(junk)])
            await asyncio.sleep(0)  # yield: the junk interleaves with alice's sends

    task = asyncio.create_task(vandalize())
    acked = [await alice.say("lobby", f"msg {i}", f"a{i}") for i in range(20)]
    await task
    texts = [(await bob.expect("message"))["message"]["text"] for _ in range(20)]
    assert texts == [f"msg {i}" for i in range(20)]
    errors = [f for f in vandal.seen if f["type"] == "error"]
    while len(errors) < 200:
        errors.append(await vandal.expect("error", skip=("ping", "presence", "message")))
    assert {e["code"] for e in errors} == {"bad_json", "invalid_frame"}
    stored = await server.hub.store.messages_after("lobby", 0, 100)
    assert [m.offset for m in stored] == [a["offset"] for a in acked]


async def test_acknowledged_messages_survive_a_hub_restart(make_server):
    async with make_server() as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        acked = [(await alice.say("lobby", f"keep {i}", f"k{i}"))["offset"] for i in range(20)]
    async with make_server() as server:
        bob = await server.client("bob")
        joined = await bob.join("lobby", since=0)
        assert joined["replayed"] == 20
        got = [(await bob.expect("message"))["message"] for _ in range(20)]
        assert [m["offset"] for m in got] == acked
        assert [m["text"] for m in got] == [f"keep {i}" for i in range(20)]


async def test_the_frame_limit_counts_bytes_not_characters(make_server):
    async with make_server(max_frame_bytes=1024) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        text = "é" * 600  # 600 characters, 1,200 bytes in UTF-8
        frame = json.dumps({"type": "send", "room": "lobby", "text": text}, ensure_ascii=False)
        assert len(frame) < 1024 < len(frame.encode())
        error = await _error(alice, frame)
        assert error["code"] == "frame_too_large"
        assert f"frame of {len(frame.encode())} bytes" in error["detail"]
