"""REST API: rooms, members, history pages, posting; OpenAPI served at /schema."""

from __future__ import annotations


async def test_openapi_schema_lists_the_api(server):
    async with server.http() as http:
        resp = await http.get("/schema/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    assert "/api/rooms" in paths and "/api/rooms/{room_id}/messages" in paths


async def test_rest_requires_a_token(server):
    async with server.http() as http:
        assert (await http.get("/api/rooms")).status_code == 401
    async with server.http() as http:
        http.headers["Authorization"] = "Bearer forged.token.here"
        assert (await http.get("/api/rooms")).status_code == 401


async def test_create_list_get_and_conflict(server):
    async with server.http("alice") as http:
        created = await http.post("/api/rooms", json={"id": "ops", "name": "Ops", "topic": "t"})
        assert created.status_code == 201 and created.json()["name"] == "Ops"
        assert (await http.post("/api/rooms", json={"id": "ops"})).status_code == 409
        assert (await http.post("/api/rooms", json={"id": "bad id!"})).status_code == 400
        assert [r["id"] for r in (await http.get("/api/rooms")).json()] == ["ops"]
        assert (await http.get("/api/rooms/ops")).json()["topic"] == "t"
        assert (await http.get("/api/rooms/nope")).status_code == 404
        members = (await http.get("/api/rooms/ops/members")).json()
        assert members == [{"user_id": "alice", "user_name": "Alice", "role": "owner"}]


async def test_private_rooms_are_for_members_only(server):
    async with server.http("alice") as alice, server.http("bob") as bob:
        await alice.post("/api/rooms", json={"id": "secret", "private": True})
        assert (await bob.get("/api/rooms/secret")).status_code == 403
        assert (await bob.get("/api/rooms")).json() == []
        assert (
            await bob.post("/api/rooms/secret/members", json={"user_id": "bob"})
        ).status_code == 403
        added = await alice.post(
            "/api/rooms/secret/members", json={"user_id": "bob", "name": "Bob"}
        )
        assert added.status_code == 201
        assert (await bob.get("/api/rooms/secret")).status_code == 200
    carol = await server.client("carol")
    await carol.send({"type": "join", "room": "secret"})
    assert (await carol.expect("error"))["code"] == "forbidden"


async def test_guests_cannot_create_rooms(server):
    async with server.http() as http:
        token = (await http.post("/api/guest-token", params={"name": "Visitor"})).json()
        assert token["user"]["name"] == "Visitor"
        http.headers["Authorization"] = f"Bearer {token['token']}"
        assert (await http.post("/api/rooms", json={"id": "x"})).status_code == 403


async def test_post_over_rest_reaches_websocket_members_and_pages_back(server):
    await server.create_room("lobby")
    bob = await server.client("bob")
    await bob.join("lobby")
    async with server.http("alice") as http:
        for i in range(7):
            resp = await http.post(
                "/api/rooms/lobby/messages", json={"text": f"rest {i}", "client_id": f"r{i}"}
            )
            assert resp.status_code == 201 and resp.json()["offset"] == i + 1
        dup = await http.post(
            "/api/rooms/lobby/messages", json={"text": "rest 0", "client_id": "r0"}
        )
        assert dup.json()["offset"] == 1
        assert [(await bob.expect("message"))["message"]["text"] for _ in range(7)] == [
            f"rest {i}" for i in range(7)
        ]
        page = (await http.get("/api/rooms/lobby/messages", params={"limit": 3})).json()
        assert [m["offset"] for m in page["messages"]] == [5, 6, 7] and page["has_more"]
        page = (
            await http.get("/api/rooms/lobby/messages", params={"before": 5, "limit": 3})
        ).json()
        assert [m["offset"] for m in page["messages"]] == [2, 3, 4] and page["has_more"]
        page = (await http.get("/api/rooms/lobby/messages", params={"before": 2})).json()
        assert [m["offset"] for m in page["messages"]] == [1] and not page["has_more"]
        page = (await http.get("/api/rooms/lobby/messages", params={"after": 5})).json()
        assert [m["offset"] for m in page["messages"]] == [6, 7] and not page["has_more"]
        assert (await http.get("/api/rooms/lobby/messages", params={"limit": 0})).status_code == 400
        assert (await http.get("/api/rooms/nope/messages")).status_code == 404
        assert (await http.post("/api/rooms/lobby/messages", json={"text": 5})).status_code == 400


async def test_history_over_websocket(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    for i in range(5):
        await alice.say("lobby", f"h{i}", f"h{i}")
    await alice.send({"type": "history", "room": "lobby", "limit": 2, "id": "q1"})
    page = await alice.expect("history", skip=("ping", "presence", "message"))
    assert (
        [m["offset"] for m in page["messages"]] == [4, 5]
        and page["has_more"]
        and page["id"] == "q1"
    )
    await alice.send({"type": "history", "room": "lobby", "before": 2, "limit": 5})
    page = await alice.expect("history", skip=("ping", "presence", "message"))
    assert [m["text"] for m in page["messages"]] == ["h0"] and not page["has_more"]
