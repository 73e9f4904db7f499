"""Tokens end: a socket closes at its token's expiry unless it re-authenticates in place,
and a revoked token is refused and its sockets closed on every replica."""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from hub.base.auth import Identity, issue_token
from tests.adapter_support import eventually
from tests.procs import cluster, token
from tests.support import TEST_SECRET, Client


async def _closed(client: Client, timeout: float = 10.0) -> tuple[list[dict], int | None]:
    """Read until the server closes the socket; return the frames read and the close code."""
    frames = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                frames.append(await client.recv(timeout))
    return frames, closed.value.rcvd.code if closed.value.rcvd else None


def _short(user: str, ttl: float = 2) -> str:
    return issue_token(Identity(id=user, name=user.title()), TEST_SECRET, ttl)


async def _hello(url: str, tok: str) -> Client:
    client = await Client.connect(url)
    await client.send({"type": "hello", "token": tok})
    client.welcome = await client.expect("welcome")
    return client


async def test_a_socket_closes_when_its_token_expires(server):
    await server.create_room("lobby")
    client = await _hello(server.ws_url, _short("alice"))
    await client.join("lobby")
    frames, code = await _closed(client)
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["token_expired"]
    assert code == 4401


async def test_hello_with_a_fresh_token_keeps_the_socket_and_its_rooms(server):
    await server.create_room("lobby")
    short = _short("alice")
    renewed = await _hello(server.ws_url, short)
    witness = await _hello(server.ws_url, short)  # same token, same expiry, not renewed
    await renewed.join("lobby")
    session = renewed.welcome["session"]
    # another user's token cannot take the socket over
    await renewed.send({"type": "hello", "token": server.token("mallory")})
    taken = await renewed.expect("error")
    assert taken["code"] == "already_authenticated"
    # a fresh token of the same user: welcome again, same session, new roles
    await renewed.send({"type": "hello", "token": server.token("alice", admin=True)})
    again = await renewed.expect("welcome")
    assert again["session"] == session and again["roles"] == ["admin"]
    # the old expiry passes: the witness is closed, the renewed socket lives on in its room
    _, code = await _closed(witness)
    assert code == 4401
    bob = await server.client("bob")
    await bob.join("lobby")
    await bob.say("lobby", "still there?", "b1")
    got = await renewed.expect("message")
    assert got["message"]["text"] == "still there?"
    assert not [f for f in renewed.seen if f["type"] == "error" and f is not taken]
    await renewed.say("lobby", "yes", "a1")
    await bob.close()
    await renewed.close()


async def test_a_revoked_token_is_refused_and_closed_on_every_replica(tmp_path):
    async with cluster(tmp_path, 2) as (first, second):
        carol_token = token("carol")
        dave_token = token("dave")
        carol = await _hello(second.ws_url, carol_token)
        dave = await _hello(second.ws_url, dave_token)
        other = await second.client("erin")  # another token: untouched
        headers = {"Authorization": f"Bearer {carol_token}"}
        async with httpx.AsyncClient(base_url=second.http_url, headers=headers) as http:
            assert (await http.get("/api/rooms")).status_code == 200
        # a user cannot revoke someone else's token; an admin can, on the other replica
        async with httpx.AsyncClient(
            base_url=first.http_url, headers={"Authorization": f"Bearer {dave_token}"}
        ) as http:
            resp = await http.post("/api/tokens/revoke", json={"token": carol_token})
            assert resp.status_code == 403
        async with httpx.AsyncClient(
            base_url=first.http_url, headers={"Authorization": f"Bearer {token('root', True)}"}
        ) as http:
            resp = await http.post("/api/tokens/revoke", json={"token": carol_token})
            assert resp.status_code == 200, resp.text
            assert resp.json()["user"] == "carol"
        frames, code = await _closed(carol)
        assert [f["code"] for f in frames if f["type"] == "error"] == ["token_revoked"]
        assert code == 4403
        async with httpx.AsyncClient(base_url=second.http_url, headers=headers) as http:
            resp = await http.get("/api/rooms")
            assert resp.status_code == 401 and "revoked" in resp.text
        again = await Client.connect(second.ws_url)
        await again.send({"type": "hello", "token": carol_token})
        assert (await again.expect("error"))["code"] == "token_revoked"
        await again.close()
        # `lydian token revoke` reaches running replicas too (database + Redis)
        done = subprocess.run(
            ["lydian", "token", "revoke", dave_token],
            env=first.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and "revoked token" in done.stdout, done.stderr
        _, code = await _closed(dave)
        assert code == 4403
        await other.send({"type": "pong"})
        assert [f for f in await other.silent_for(0.3) if f["type"] == "error"] == []
        await other.close()


async def _sse_until_end(server, tok: str) -> list[dict]:
    """Read the lobby's SSE feed with ``tok`` until the hub ends it; the events' data."""
    import json

    got = []
    headers = {"Authorization": f"Bearer {tok}"}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        async with http.stream("GET", "/api/rooms/lobby/events", headers=headers) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
    return got


async def test_an_sse_feed_ends_with_its_token(server):
    await server.create_room("lobby")
    expired = await _sse_until_end(server, _short("alice"))
    assert [e["type"] for e in expired if e["type"] != "presence"] == ["joined", "error"]
    assert expired[-1]["code"] == "token_expired"
    tok = server.token("bob")
    feed = asyncio.create_task(_sse_until_end(server, tok))
    async with server.http("root", admin=True) as http:
        await eventually(lambda: server.hub.revocations._feeds, what="the feed to open")
        resp = await http.post("/api/tokens/revoke", json={"token": tok})
        assert resp.status_code == 200
    revoked = await asyncio.wait_for(feed, 10)
    assert revoked[-1]["type"] == "error" and revoked[-1]["code"] == "token_revoked"
