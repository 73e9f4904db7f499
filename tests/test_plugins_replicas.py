"""Per-room enablement across replicas: a change made on one applies on all at once."""

from __future__ import annotations

import asyncio

import httpx

from tests.plugin_support import command, frame_where, room_event
from tests.procs import cluster, token
from tests.support import eventually


async def test_enabling_on_one_replica_applies_on_the_other_at_once(tmp_path):
    async with cluster(tmp_path, 2) as (one, two):
        headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
        async with httpx.AsyncClient(base_url=one.http_url, headers=headers) as http:
            assert (await http.post("/api/rooms", json={"id": "ops"})).status_code == 201
            bob = await two.client("bob")
            await bob.join("ops")
            assert (await command(bob, "ops", "/echo hi", "e0"))["code"] == "unknown_command"

            resp = await http.put("/api/rooms/ops/plugins/echo", json={"enabled": True})
            assert resp.status_code == 200 and resp.json()["enabled"] is True
            # the announcement reaches bob on the other replica; the command answers there
            await frame_where(bob, room_event("ops", "plugin_enabled", "echo"))
            assert (await command(bob, "ops", "/echo hi", "e1"))["text"] == "hi"

            admin = await two.client("root", admin=True)
            await admin.join("ops")
            await command(admin, "ops", "/plugins disable echo", "p1")
        async with httpx.AsyncClient(base_url=one.http_url, headers=headers) as http:

            async def state() -> dict:
                return (await http.get("/api/rooms/ops/plugins/echo")).json()

            async def disabled() -> bool:  # pub/sub delivery is asynchronous
                return (await state())["enabled"] is False

            await eventually(disabled, what="the other replica to follow")
            assert (await state())["enabled"] is False
            carol = await one.client("carol")
            await carol.join("ops")
            assert (await command(carol, "ops", "/echo hi", "e2"))["code"] == "unknown_command"


async def test_concurrent_switches_on_two_replicas_all_succeed(tmp_path):
    """First switches of one plugin in one room, racing on two replicas, all succeed."""
    rooms = [f"race{i}" for i in range(8)]
    async with cluster(tmp_path, 2) as replicas:
        headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
        clients = [
            httpx.AsyncClient(base_url=r.http_url, headers=headers, timeout=20) for r in replicas
        ]
        try:
            for room in rooms:
                assert (await clients[0].post("/api/rooms", json={"id": room})).status_code == 201
            puts = [
                c.put(f"/api/rooms/{room}/plugins/echo", json={"enabled": True})
                for room in rooms
                for c in clients
                for _ in range(3)
            ]
            results = await asyncio.gather(*puts)
            assert {r.status_code for r in results} == {200}, [r.text for r in results]
            for c in clients:
                for room in rooms:
                    state = (await c.get(f"/api/rooms/{room}/plugins/echo")).json()
                    assert state["enabled"] is True
        finally:
            for c in clients:
                await c.aclose()
