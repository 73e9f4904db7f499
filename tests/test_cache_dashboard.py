"""The live cache dashboard plugin: page, admin-only socket pushing stats every second."""

from __future__ import annotations

import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed


async def test_dashboard_page_is_registered_and_served(server):
    pages = [p for _, p in server.hub.plugins.items("lydian_dashboard_pages")]
    assert any(p.path == "/dashboard/cache" and p.title == "Cache" for p in pages)
    async with server.http() as anonymous:  # the page holds no data; the socket checks
        page = await anonymous.get("/dashboard/cache")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "/dashboard/cache/ws" in page.text and "<canvas" in page.text


@pytest.mark.parametrize("who", [None, "alice", "garbage"])
async def test_dashboard_socket_refuses_non_admins(server, who):
    token = {"alice": server.token("alice"), "garbage": "not-a-jwt", None: ""}[who]
    url = f"ws://127.0.0.1:{server.port}/dashboard/cache/ws?token={token}"
    async with websockets.connect(url) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd.code == 1008


async def test_dashboard_socket_pushes_live_stats(server):
    await server.create_room("general", owner="alice")
    token = server.token("root", admin=True)
    url = f"ws://127.0.0.1:{server.port}/dashboard/cache/ws?token={token}"
    async with websockets.connect(url, open_timeout=5) as ws:
        first = json.loads(await ws.recv())
        assert set(first) >= {"tiers", "hit_rate", "l1", "l2", "top_keys", "requests"}
        async with server.http("alice") as alice:
            for _ in range(3):
                await alice.get("/api/rooms/general/messages")
        later = json.loads(await ws.recv())
        if later["requests"] == first["requests"]:  # pushed before the traffic landed
            later = json.loads(await ws.recv())
        assert later["requests"] > first["requests"]
        assert later["tiers"]["l1"]["hits"] >= first["tiers"]["l1"]["hits"] + 2
