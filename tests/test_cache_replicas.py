"""Two real hub processes sharing PostgreSQL and Redis: an invalidation on one replica
empties the other's L1 (observed through the other's ``/api/cache/keys``)."""

from __future__ import annotations

import asyncio

import httpx

from tests.procs import cluster, token


def _http(proc, user: str, admin: bool = False) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token(user, admin)}"}
    return httpx.AsyncClient(base_url=proc.http_url, headers=headers, timeout=10)


async def _keys(admin: httpx.AsyncClient, prefix: str) -> list[str]:
    resp = await admin.get("/api/cache/keys", params={"prefix": prefix})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _until_gone(admin: httpx.AsyncClient, prefix: str, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if not await _keys(admin, prefix):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{prefix!r} still cached on the other replica")


async def test_invalidation_on_one_replica_empties_the_others_l1(tmp_path):
    async with cluster(tmp_path, 2) as (a, b):
        async with (
            _http(a, "alice") as alice_a,
            _http(b, "alice") as alice_b,
            _http(b, "root", admin=True) as admin_b,
            _http(a, "root", admin=True) as admin_a,
        ):
            assert (await alice_a.post("/api/rooms", json={"id": "general"})).status_code == 201
            for client in (alice_a, alice_b):
                page = await client.get("/api/rooms/general/messages")
                assert page.status_code == 200 and page.json()["messages"] == []
            assert await _keys(admin_b, "http-room-history:alice#|/api/rooms/general/messages")
            # B served that page from the shared L2 into its L1; another page runs the query
            assert (await alice_b.get("/api/rooms/general/messages?limit=10")).status_code == 200
            assert await _keys(admin_b, "query:before:general:")

            # a write on replica A drops B's copies, page and query alike
            posted = await alice_a.post("/api/rooms/general/messages", json={"text": "hi"})
            assert posted.status_code == 201
            await _until_gone(admin_b, "http-room-history:alice#|/api/rooms/general/messages")
            await _until_gone(admin_b, "query:before:general:")
            page = await alice_b.get("/api/rooms/general/messages")
            assert [m["text"] for m in page.json()["messages"]] == ["hi"]

            # an explicit admin invalidation on A empties B's L1 of that namespace
            await alice_b.get("/api/rooms")
            assert await _keys(admin_b, "query:rooms:alice")
            resp = await admin_a.post("/api/cache/invalidate", json={"namespace": "query"})
            assert resp.status_code == 200
            await _until_gone(admin_b, "query:")
            stats = (await admin_b.get("/api/cache/stats")).json()
            assert stats["remote_invalidations"] >= 2
            assert stats["l2"] == {"configured": True, "available": True, "failures": 0}
