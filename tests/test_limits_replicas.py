"""Abuse limits across two ``lydian serve`` replicas on PostgreSQL + Redis: one shared budget."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.procs import cluster, token
from tests.support import Client, eventually
from tests.test_limits import hello_accepted

LIMITS = {
    "LYDIAN_LIMIT_MESSAGES": "user=1/m:4",
    "LYDIAN_LIMIT_MESSAGES_SOCKET": "off",
    "LYDIAN_LIMIT_SOCKETS": "user=2",
    "LYDIAN_LIMIT_REST": "user=1/m:20",
    "LYDIAN_LIMIT_GUEST_TOKENS": "1/m:3",
}


async def _create_room(url: str, room: str) -> None:
    headers = {"Authorization": f"Bearer {token('owner')}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        assert (await http.post("/api/rooms", json={"id": room})).status_code == 201


async def test_limits_are_shared_by_the_replicas(tmp_path):
    async with cluster(tmp_path, 2, **LIMITS) as (one, two):
        await _create_room(one.http_url, "lobby")
        # a user's messages split across both replicas draw on one budget of 4
        a, b = await one.client("alice"), await two.client("alice")
        for client in (a, b):
            await client.join("lobby")
        offsets = []
        for i, client in enumerate((a, b, a, b)):
            offsets.append((await client.say("lobby", f"m{i}", f"m{i}"))["offset"])
        assert offsets == [1, 2, 3, 4]
        for client in (a, b):
            await client.send({"type": "send", "room": "lobby", "text": "more", "id": "more"})
            error = await client.expect("error", skip=("ping", "presence", "message"))
            assert error["code"] == "rate_limited" and error["id"] == "more"
            assert error["room"] == "lobby" and error["retry_after"] > 0
        # someone else still has their own budget, on either replica
        bob = await two.client("bob")
        await bob.join("lobby")
        assert (await bob.say("lobby", "hi", "b"))["offset"] == 5

        # alice has two sockets open (one per replica): a third, on either, is refused
        third = await Client.connect(one.ws_url)
        await third.send({"type": "hello", "token": token("alice")})
        assert (await third.expect("error"))["code"] == "rate_limited"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await third.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        # when one closes, its entry goes on the replica that held it: a new one fits
        await b.close()
        await eventually(
            lambda: hello_accepted(one.ws_url, token("alice")),
            what="the closed socket no longer counting",
        )

        # guest tokens from one address: 3 in all, whichever replica mints them
        async with httpx.AsyncClient() as http:
            statuses = [
                (await http.post(f"{proc.http_url}/api/guest-token")).status_code
                for proc in (one, two, one, two)
            ]
            assert statuses == [201, 201, 201, 429]
            refused = await http.post(f"{one.http_url}/api/guest-token")
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


async def test_sockets_of_a_killed_replica_stop_counting(tmp_path):
    extra = {**LIMITS, "LYDIAN_PRESENCE_TTL": "3"}
    async with cluster(tmp_path, 2, **extra) as (one, two):
        await one.client("carol")
        await one.client("carol")
        third = await Client.connect(two.ws_url)
        await third.send({"type": "hello", "token": token("carol")})
        assert (await third.expect("error"))["code"] == "rate_limited"
        one.kill()  # its entries are no longer refreshed, so they expire (3 s here)
        await eventually(
            lambda: hello_accepted(two.ws_url, token("carol")),
            timeout=15,
            interval=0.2,
            what="the dead replica's sockets no longer counting",
        )
