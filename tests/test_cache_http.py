"""HTTP response cache and query cache on a real hub: ETag/304, Cache-Control, Vary,
private responses per user, no stale page after a write, AI routes never cached."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
from litestar import Litestar, Response, get
from litestar.datastructures import Cookie
from litestar.params import FromPath
from litestar.response import Stream

from hub.cache import CacheManager
from hub.cache.http import HttpCache, HttpCacheRule, http_cache_middleware


async def test_etag_304_cache_control_and_vary(server):
    await server.create_room("general", owner="alice")
    async with server.http("alice") as alice:
        await alice.post("/api/rooms/general/messages", json={"text": "hello"})
        first = await alice.get("/api/rooms/general/messages")
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert etag.startswith('"') and not etag.startswith("W/"), "strong ETag"
        assert first.headers["cache-control"] == "private, no-cache"
        assert "Authorization" in first.headers["vary"]
        assert first.headers["x-cache"] == "MISS"

        second = await alice.get("/api/rooms/general/messages")
        assert second.headers["x-cache"] == "HIT"
        assert second.headers["etag"] == etag and second.content == first.content
        assert second.headers["content-length"] == str(len(first.content))

        not_modified = await alice.get(
            "/api/rooms/general/messages", headers={"If-None-Match": f'"other", W/{etag}'}
        )
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == etag
        assert not_modified.headers["cache-control"] == "private, no-cache"
        assert "Authorization" in not_modified.headers["vary"]

        other_page = await alice.get("/api/rooms/general/messages?limit=1")
        assert other_page.headers["x-cache"] == "MISS", "the query string is part of the key"


async def test_no_stale_page_after_a_write(server):
    await server.create_room("general", owner="alice")
    async with server.http("alice") as alice:
        before = await alice.get("/api/rooms/general/messages")
        assert before.json()["messages"] == []
        rooms = await alice.get("/api/rooms")
        assert [r["id"] for r in rooms.json()] == ["general"]
        for i in range(5):  # post, then read at once: every read sees the write
            posted = await alice.post("/api/rooms/general/messages", json={"text": f"m{i}"})
            assert posted.status_code == 201
            page = await alice.get(
                "/api/rooms/general/messages", headers={"If-None-Match": before.headers["etag"]}
            )
            assert page.status_code == 200
            assert page.json()["messages"][-1]["text"] == f"m{i}"
            assert page.headers["etag"] != before.headers["etag"]
            before = page
        room = await alice.get("/api/rooms/general")
        assert room.json()["last_offset"] == 5

        await server.create_room("random", owner="alice")
        rooms = await alice.get("/api/rooms")
        assert [r["id"] for r in rooms.json()] == ["general", "random"]


async def test_messages_over_the_socket_invalidate_rest_pages(server):
    await server.create_room("general", owner="alice")
    async with server.http("alice") as http:
        assert (await http.get("/api/rooms/general/messages")).json()["messages"] == []
        client = await server.client("alice")
        await client.join("general")
        await client.say("general", "via socket", "r1")
        page = await http.get("/api/rooms/general/messages")
        assert [m["text"] for m in page.json()["messages"]] == ["via socket"]
        await client.close()


async def test_private_response_never_served_to_another_user(server):
    await server.create_room("secret", owner="alice", private=True)
    await server.create_room("lobby", owner="alice")
    async with server.http("alice") as alice, server.http("bob") as bob:
        await alice.post("/api/rooms/secret/messages", json={"text": "the plan"})
        a_rooms = await alice.get("/api/rooms")
        a_rooms = await alice.get("/api/rooms")
        assert a_rooms.headers["x-cache"] == "HIT"
        assert {r["id"] for r in a_rooms.json()} == {"secret", "lobby"}
        a_hist = await alice.get("/api/rooms/secret/messages")
        a_hist = await alice.get("/api/rooms/secret/messages")
        assert a_hist.headers["x-cache"] == "HIT"

        # same URLs, same validators, another user: never alice's bytes
        b_rooms = await bob.get("/api/rooms", headers={"If-None-Match": a_rooms.headers["etag"]})
        assert b_rooms.status_code == 200 and b_rooms.headers["x-cache"] == "MISS"
        assert {r["id"] for r in b_rooms.json()} == {"lobby"}
        b_hist = await bob.get(
            "/api/rooms/secret/messages", headers={"If-None-Match": a_hist.headers["etag"]}
        )
        assert b_hist.status_code == 403
        assert "the plan" not in b_hist.text
        assert b_hist.headers.get("x-cache") is None, "an error is never cached"
        b_hist = await bob.get("/api/rooms/secret/messages")
        assert b_hist.status_code == 403

    async with server.http() as anonymous:
        resp = await anonymous.get("/api/rooms/secret/messages")
        assert resp.status_code == 401


async def test_membership_change_reaches_cached_pages(server):
    await server.create_room("secret", owner="alice", private=True)
    async with server.http("alice") as alice, server.http("bob") as bob:
        assert {r["id"] for r in (await bob.get("/api/rooms")).json()} == set()
        assert (await bob.get("/api/rooms")).headers["x-cache"] == "HIT"
        added = await alice.post("/api/rooms/secret/members", json={"user_id": "bob"})
        assert added.status_code == 201
        assert {r["id"] for r in (await bob.get("/api/rooms")).json()} == {"secret"}
        assert (await bob.get("/api/rooms/secret/messages")).status_code == 200


async def test_ai_routes_streams_and_stats_are_never_cached():
    """A plugin-style app with /v1 and stream routes, the real middleware and cache."""
    calls = {"n": 0}

    @get("/v1/chat/completions")
    async def completions() -> dict[str, int]:
        calls["n"] += 1
        return {"answer": calls["n"]}

    @get("/api/rooms/{room:str}/stream")
    async def stream(room: FromPath[str]) -> dict[str, str]:
        return {"room": room}

    @get("/api/public/info")
    async def info() -> dict[str, int]:
        calls["n"] += 1
        return {"n": calls["n"]}

    app = Litestar([completions, stream, info], middleware=[http_cache_middleware])
    http = HttpCache(CacheManager())
    http.add_rule(HttpCacheRule("greedy", r"/v1/.*", private=False))  # cannot override
    http.add_rule(HttpCacheRule("streams", r"/api/rooms/.*", private=False))
    http.add_rule(HttpCacheRule("info", r"/api/public/info", private=False, max_age=30))
    app.state.hub = SimpleNamespace(http_cache=http)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        for path in ("/v1/chat/completions", "/api/rooms/general/stream"):
            first = await client.get(path)
            second = await client.get(path)
            assert first.headers["cache-control"] == "no-store", path
            assert "etag" not in second.headers and "x-cache" not in second.headers
        assert calls["n"] == 2, "every AI call reached the handler"
        first = await client.get("/api/public/info")
        second = await client.get("/api/public/info")
        assert first.json() == second.json() == {"n": 3}
        assert second.headers["cache-control"] == "public, max-age=30"
        assert "vary" not in second.headers, "a shared response does not vary by user"


async def test_cache_stats_endpoint(server):
    await server.create_room("general", owner="alice")
    async with server.http("alice") as alice:
        for _ in range(3):
            await alice.get("/api/rooms/general/messages")
        assert (await alice.get("/api/cache/stats")).status_code == 403
    async with server.http("root", admin=True) as admin:
        stats = (await admin.get("/api/cache/stats")).json()
        assert stats["tiers"]["l1"]["hits"] >= 2
        assert stats["l1"]["entries"] >= 1 and stats["l1"]["bytes"] > 0
        assert stats["l2"]["configured"] is False
        assert any(k["key"].startswith("http-room-history:alice#|") for k in stats["top_keys"])
        assert (await admin.get("/api/cache/stats")).headers["cache-control"] == "no-store"
        keys = (await admin.get("/api/cache/keys", params={"prefix": "http-"})).json()
        assert keys and all(k.startswith("http-") for k in keys)
        dropped = await admin.post("/api/cache/invalidate", json={"event": "room:general"})
        assert dropped.json()["dropped_here"] >= 1
        bad = await admin.post("/api/cache/invalidate", json={"key": "a", "tag": "b"})
        assert bad.status_code == 400
        bad = await admin.post("/api/cache/invalidate", json={"nope": 1})
        assert bad.status_code == 400
    async with server.http("alice") as alice:
        assert (await alice.get("/api/rooms/general/messages")).headers["x-cache"] == "MISS"


async def test_hub_collects_strategies_from_the_plugin_hook(server):
    names = set(server.hub.cache.strategies.names())
    assert {"ttl", "lru", "adaptive", "per-user", "none"} <= names
    assert server.hub.cache.started


async def test_roles_are_part_of_a_private_key(server):
    await server.create_room("secret", owner="owner", private=True)
    async with server.http("carol", admin=True) as carol_admin, server.http("carol") as carol:
        assert (await carol_admin.get("/api/rooms/secret/messages")).status_code == 200
        assert (await carol_admin.get("/api/rooms/secret/messages")).headers["x-cache"] == "HIT"
        # the same user without the admin role gets her own answer, not the admin's page
        assert (await carol.get("/api/rooms/secret/messages")).status_code == 403


async def test_oversize_and_uncacheable_responses_pass_through_whole():
    calls = {"n": 0}

    async def chunks():
        for _ in range(10):
            yield b"x" * 500

    @get("/big")
    async def big() -> Stream:
        calls["n"] += 1
        return Stream(chunks(), media_type="text/plain")

    @get("/cookie")
    async def cookie() -> Response[str]:
        calls["n"] += 1
        return Response("hi", cookies=[Cookie(key="session", value="s")])

    app = Litestar([big, cookie], middleware=[http_cache_middleware])
    http = HttpCache(CacheManager(max_value_bytes=1000), rules=())
    http.add_rule(HttpCacheRule("all", r"/.*", private=False))
    app.state.hub = SimpleNamespace(http_cache=http)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub"
    ) as client:
        for _ in range(2):
            resp = await client.get("/big")
            assert resp.status_code == 200 and resp.content == b"x" * 5000
            assert "x-cache" not in resp.headers
            resp = await client.get("/cookie")
            assert resp.text == "hi" and "set-cookie" in resp.headers
            assert "x-cache" not in resp.headers
    assert calls["n"] == 4, "nothing was served from the cache"
    assert len(http.cache.l1) == 0
