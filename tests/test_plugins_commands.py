"""Chat-ops commands and per-room enablement, through the real socket and REST API."""

from __future__ import annotations

import msgspec

from hub.plugin_host.commands import Arg, CommandSpec, UsageError
from hub.plugin_host.host import PluginToggle, encode_control
from hub.realtime.broker import CONTROL_CHANNEL
from tests.plugin_support import command, frame_where, room_event
from tests.support import eventually


async def _rooms(server, *names):
    for name in names:
        await server.create_room(name)


async def test_help_lists_core_and_plugin_commands_and_explains_one(server):
    await _rooms(server, "ops")
    ada = await server.client("ada")
    await ada.join("ops")
    reply = await command(ada, "ops", "/help", "h1")
    assert reply["type"] == "command_result" and reply["command"] == "help"
    text = reply["text"]
    assert "/help [COMMAND]" in text and "/plugins" in text
    assert "Not enabled in this room:" in text and "/roll [DICE] (plugin echo)" in text
    one = await command(ada, "ops", "/help roll", "h2")
    assert one["text"].startswith("/roll [DICE] — roll dice")
    assert "not enabled in this room" in one["text"]
    missing = await command(ada, "ops", "/help nope", "h3")
    assert missing["type"] == "error" and missing["code"] == "usage"


async def test_unknown_commands_usage_errors_and_not_joined(server):
    await _rooms(server, "ops", "other")
    ada = await server.client("ada", admin=True)
    await ada.join("ops")
    unknown = await command(ada, "ops", "/frobnicate now", "c1")
    assert unknown["code"] == "unknown_command" and "/help" in unknown["detail"]
    bad_action = await command(ada, "ops", "/plugins frob", "c2")
    assert bad_action["code"] == "usage"
    assert "ACTION must be one of list, enable, disable, reload" in bad_action["detail"]
    assert "usage: /plugins [list|enable|disable|reload] [NAME]" in bad_action["detail"]
    no_name = await command(ada, "ops", "/plugins enable", "c3")
    assert no_name["code"] == "usage" and "NAME" in no_name["detail"]
    not_slash = await command(ada, "ops", "help", "c4")
    assert not_slash["code"] == "usage"
    elsewhere = await command(ada, "other", "/help", "c5")
    assert elsewhere["code"] == "not_joined"
    unknown_plugin = await command(ada, "ops", "/plugins enable nosuch", "c6")
    assert (
        unknown_plugin["type"] == "error"
        and "no plugin or agent 'nosuch'" in (unknown_plugin["detail"])
    )


async def test_admin_enables_a_plugin_in_one_room_only_and_disables_it(server):
    await _rooms(server, "ops", "lobby")
    admin = await server.client("root", admin=True)
    bob = await server.client("bob")
    for client in (admin, bob):
        await client.join("ops")
        await client.join("lobby")

    off = await command(bob, "ops", "/echo hi", "e0")
    assert off["code"] == "unknown_command" and "/plugins enable echo" in off["detail"]

    enabled = await command(admin, "ops", "/plugins enable echo", "p1")
    assert enabled["type"] == "command_result" and "enabled" in enabled["text"]
    event = await frame_where(bob, room_event("ops", "plugin_enabled", "echo"))
    assert event["data"]["by"] == "Root"

    echoed = await command(bob, "ops", "/echo hello   there", "e1")
    assert echoed == {
        "type": "command_result",
        "room": "ops",
        "command": "echo",
        "text": "hello there",
        "id": "e1",
    }
    other_room = await command(bob, "lobby", "/echo hello", "e2")
    assert other_room["type"] == "error" and other_room["code"] == "unknown_command"
    listing = await command(bob, "ops", "/plugins", "p2")
    assert "echo 0.1.0 — on" in listing["text"]
    assert await server.hub.store.room_plugins("ops") == {"ops": {"echo": True}}

    await command(admin, "ops", "/plugins disable echo", "p3")
    await frame_where(bob, room_event("ops", "plugin_disabled", "echo"))
    stopped = await command(bob, "ops", "/echo hello", "e3")
    assert stopped["type"] == "error" and stopped["code"] == "unknown_command"
    assert await server.hub.store.room_plugins("ops") == {"ops": {"echo": False}}


async def test_a_non_admin_cannot_enable_and_nothing_changes(server):
    await _rooms(server, "ops")
    bob = await server.client("bob")
    await bob.join("ops")
    denied = await command(bob, "ops", "/plugins enable echo", "p1")
    assert denied["type"] == "error" and denied["code"] == "forbidden"
    assert "admins" in denied["detail"]
    async with server.http("bob") as http:
        resp = await http.put("/api/rooms/ops/plugins/echo", json={"enabled": True})
        assert resp.status_code == 403 and "admins" in resp.json()["detail"]
        state = (await http.get("/api/rooms/ops/plugins/echo")).json()
    assert state == {"room": "ops", "plugin": "echo", "enabled": False, "kind": "plugin"}
    assert await server.hub.store.room_plugins() == {}
    assert not [f for f in bob.seen if f["type"] == "event"]
    still_off = await command(bob, "ops", "/echo hi", "e1")
    assert still_off["code"] == "unknown_command"


async def test_rest_lists_plugins_and_toggles_them(server):
    await _rooms(server, "ops")
    bob = await server.client("bob")
    await bob.join("ops")
    async with server.http("root", admin=True) as http:
        plugins = {p["name"]: p for p in (await http.get("/api/plugins")).json()}
        echo = plugins["echo"]
        assert echo["source"] == "entry point" and echo["version"]
        assert echo["hooks"] == ["lydian_commands", "lydian_plugin_settings"]
        assert echo["commands"] == ["echo", "roll"] and echo["rooms"] == []
        assert echo["settings"] == {"max_dice": 100, "max_sides": 1000}

        resp = await http.put("/api/rooms/ops/plugins/echo", json={"enabled": True})
        assert resp.status_code == 200 and resp.json()["enabled"] is True
        await frame_where(bob, room_event("ops", "plugin_enabled", "echo"))
        assert (await command(bob, "ops", "/roll 3d1", "r0"))["code"] == "usage"
        rolled = await command(bob, "ops", "/roll 2d6", "r1")
        assert rolled["text"].startswith("Bob rolls 2d6: ")
        plugins = {p["name"]: p for p in (await http.get("/api/plugins")).json()}
        assert plugins["echo"]["rooms"] == ["ops"]
        room_list = (await http.get("/api/rooms/ops/plugins")).json()
        assert {"room": "ops", "plugin": "echo", "enabled": True, "kind": "plugin"} in room_list

        assert (
            await http.put("/api/rooms/ops/plugins/nope", json={"enabled": True})
        ).status_code == 404
        assert (
            await http.put("/api/rooms/nope/plugins/echo", json={"enabled": True})
        ).status_code == 404
        bad = await http.put("/api/rooms/ops/plugins/echo", json={"enabled": "yes"})
        assert bad.status_code == 400


async def test_enablement_survives_a_restart(make_server):
    async with make_server() as server:
        await server.create_room("ops")
        async with server.http("root", admin=True) as http:
            await http.put("/api/rooms/ops/plugins/echo", json={"enabled": True})
    async with make_server() as server:
        bob = await server.client("bob")
        await bob.join("ops")
        assert (await command(bob, "ops", "/echo again", "e1"))["text"] == "again"


async def test_a_change_from_another_replica_applies_at_once(server):
    """Another replica persists and publishes on hub:control; this one follows at once."""
    await _rooms(server, "ops")
    bob = await server.client("bob")
    await bob.join("ops")
    await server.hub.store.set_room_plugin("ops", "echo", True, "replica-2")
    toggle = PluginToggle(room="ops", plugin="echo", enabled=True, by="replica-2")
    await server.hub.broker.publish(CONTROL_CHANNEL, encode_control(toggle))
    await eventually(lambda: server.hub.plugins.is_enabled("ops", "echo"), what="the toggle")
    assert (await command(bob, "ops", "/echo synced", "e1"))["text"] == "synced"
    # unrelated or malformed control messages are ignored
    await server.hub.broker.publish(CONTROL_CHANNEL, msgspec.json.encode({"type": "other"}))
    await server.hub.broker.publish(CONTROL_CHANNEL, b"\xff not json")
    assert (await command(bob, "ops", "/echo still", "e2"))["text"] == "still"


def test_argument_parsing_gives_clear_usage_errors():
    spec = CommandSpec(
        name="deploy",
        help="deploy a service",
        handler=lambda ctx, args: None,
        args=[
            Arg("service"),
            Arg("replicas", type=int, required=False),
            Arg("note", required=False, greedy=True),
        ],
    )
    assert spec.usage_line() == "/deploy SERVICE [REPLICAS] [NOTE...]"
    assert spec.parse('api 3 "hot fix" now') == {
        "service": "api",
        "replicas": 3,
        "note": "hot fix now",
    }
    assert spec.parse("api") == {"service": "api", "replicas": None, "note": None}
    for text, message in [
        ("", "missing SERVICE; usage: /deploy SERVICE"),
        ("api many", "REPLICAS must be int, not 'many'"),
        ('api 3 "unclosed', "No closing quotation"),
    ]:
        try:
            spec.parse(text)
        except UsageError as exc:
            assert message in exc.detail, exc.detail
        else:
            raise AssertionError(f"{text!r} parsed")
    fixed = CommandSpec(name="ping", help="", handler=lambda c, a: "pong")
    try:
        fixed.parse("extra")
    except UsageError as exc:
        assert exc.detail == "too many arguments; usage: /ping"
    else:
        raise AssertionError("extra argument accepted")


async def test_empty_and_oversized_command_texts_are_rejected(make_server):
    async with make_server(max_text_chars=100) as server:
        await _rooms(server, "ops")
        ada = await server.client("ada")
        await ada.join("ops")
        empty = await command(ada, "ops", "   ", "c1")
        assert empty["code"] == "invalid_frame" and "empty" in empty["detail"]
        huge = await command(ada, "ops", "/help " + "x" * 200, "c2")
        assert huge["code"] == "invalid_frame" and "100 characters" in huge["detail"]
        assert (await command(ada, "ops", "/help", "c3"))["type"] == "command_result"
