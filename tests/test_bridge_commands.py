"""The ``bridge`` plugin: /bridge and /unbridge through the socket, the bridges REST API,
persistence across a restart, and bad input (wrong platform, bad channel, non-admins)."""

from __future__ import annotations

from tests.plugin_support import command


async def test_admin_bridges_lists_and_unbridges_a_room(server):
    await server.create_room("ops")
    admin = await server.client("root", admin=True)
    await admin.join("ops")
    empty = await command(admin, "ops", "/bridge", "b0")
    assert empty["type"] == "command_result" and "not bridged" in empty["text"]
    added = await command(admin, "ops", "/bridge slack C0123", "b1")
    assert added["type"] == "command_result", added
    assert added["text"].startswith("bridged ops to slack C0123")
    assert "not configured" in added["text"]  # no Slack token in this hub
    again = await command(admin, "ops", "/bridge slack C0123", "b2")
    assert "already bridged" in again["text"]
    await command(admin, "ops", "/bridge discord 998877", "b3")
    listing = await command(admin, "ops", "/bridge", "b4")
    assert "slack C0123" in listing["text"] and "discord 998877" in listing["text"]
    async with server.http("root", admin=True) as http:
        resp = await http.get("/api/rooms/ops/bridges")
        assert resp.status_code == 200
        assert {(b["platform"], b["channel"]) for b in resp.json()} == {
            ("slack", "C0123"),
            ("discord", "998877"),
        }
    removed = await command(admin, "ops", "/unbridge slack", "b5")
    assert removed["text"] == "removed 1 slack bridge(s) from ops"
    missing = await command(admin, "ops", "/unbridge slack", "b6")
    assert missing["type"] == "error" and missing["code"] == "usage"


async def test_non_admins_and_bad_arguments_get_clear_errors(server):
    await server.create_room("ops")
    ada = await server.client("ada")
    await ada.join("ops")
    listing = await command(ada, "ops", "/bridge", "n0")
    assert listing["type"] == "command_result"
    forbidden = await command(ada, "ops", "/bridge slack C1", "n1")
    assert forbidden["type"] == "error" and forbidden["code"] == "forbidden"
    unbridge = await command(ada, "ops", "/unbridge slack", "n2")
    assert unbridge["code"] == "forbidden"
    admin = await server.client("root", admin=True)
    await admin.join("ops")
    wrong = await command(admin, "ops", "/bridge teams C1", "n3")
    assert wrong["code"] == "usage" and "slack, discord" in wrong["detail"]
    no_channel = await command(admin, "ops", "/bridge slack", "n4")
    assert no_channel["code"] == "usage" and "CHANNEL" in no_channel["detail"]
    bad_channel = await command(admin, "ops", "/bridge slack 'C1; DROP'", "n5")
    assert bad_channel["code"] == "usage" and "not a channel id" in bad_channel["detail"]
    async with server.http("ada") as http:
        resp = await http.post(
            "/api/rooms/ops/bridges", json={"platform": "slack", "channel": "C1"}
        )
        assert resp.status_code == 403
    async with server.http("root", admin=True) as http:
        bad = await http.post("/api/rooms/ops/bridges", json={"platform": "irc", "channel": "C1"})
        assert bad.status_code == 400
        huge = await http.post(
            "/api/rooms/ops/bridges", json={"platform": "slack", "channel": "C" * 5000}
        )
        assert huge.status_code == 400
        nope = await http.post(
            "/api/rooms/nope/bridges", json={"platform": "slack", "channel": "C1"}
        )
        assert nope.status_code == 404
        ok = await http.post("/api/rooms/ops/bridges", json={"platform": "slack", "channel": "C1"})
        assert ok.status_code == 201 and ok.json()[0]["channel"] == "C1"
        gone = await http.delete("/api/rooms/ops/bridges/slack/C1")
        assert gone.status_code == 204
        again = await http.delete("/api/rooms/ops/bridges/slack/C1")
        assert again.status_code == 404


async def test_bridges_survive_a_restart(make_server):
    async with make_server() as server:
        await server.create_room("ops")
        async with server.http("root", admin=True) as http:
            resp = await http.post(
                "/api/rooms/ops/bridges", json={"platform": "discord", "channel": "42"}
            )
            assert resp.status_code == 201
    async with make_server() as server:
        async with server.http("root") as http:
            resp = await http.get("/api/rooms/ops/bridges")
            assert [(b["platform"], b["channel"]) for b in resp.json()] == [("discord", "42")]
