"""The plugin host's operator switches and registries: allow-list, tracing, settings, agents."""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
import pytest

from hub.base.config import load_settings
from hub.plugin_host.commands import Arg, CommandSpec
from hub.plugin_host.hookspecs import hookimpl
from hub.plugin_host.host import PluginHost, await_me_maybe
from hub.plugin_host.settings import PerRoom, PluginConfigError, Secret, load_plugin_settings
from lydian_plugins.echo import EchoSettings
from tests import support
from tests.plugin_support import add_plugin, command, frame_where, room_event


def test_the_allow_list_limits_which_entry_points_load(tmp_path):
    everything = PluginHost(support.test_settings(str(tmp_path)))
    assert "echo" in everything.names()
    only_web = PluginHost(support.test_settings(str(tmp_path), plugins="nothing-here"))
    assert only_web.names() == []
    only_echo = PluginHost(support.test_settings(str(tmp_path), plugins=" echo , other"))
    assert only_echo.names() == ["echo"]


async def test_await_me_maybe_awaits_only_awaitables():
    async def coro():
        return 2

    assert await await_me_maybe(1) == 1
    assert await await_me_maybe(coro()) == 2


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_tracing_logs_every_hook_call(make_server):
    handler = _Lines()
    logger = logging.getLogger("hub.plugin_host.host")
    logger.addHandler(handler)
    old_level = logger.level
    try:
        async with make_server(trace_hooks=True) as server:
            logger.setLevel(logging.INFO)
            await server.create_room("ops")
            async with server.http("root", admin=True) as http:
                await http.put("/api/rooms/ops/plugins/echo", json={"enabled": True})
            bob = await server.client("bob")
            await bob.join("ops")
            assert (await command(bob, "ops", "/echo traced", "e1"))["text"] == "traced"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert any(line.startswith("trace: echo./echo took") for line in handler.lines)
    assert "trace: echo./echo returned 'traced'" in handler.lines


async def test_rooms_may_override_settings_marked_per_room(make_server):
    config = {"echo": {"max_dice": 5, "rooms": {"small": {"max_dice": 2}}}}
    async with make_server(plugin_config=config) as server:
        for room in ("small", "big"):
            await server.create_room(room)
        bob = await server.client("bob")
        async with server.http("root", admin=True) as http:
            for room in ("small", "big"):
                await http.put(f"/api/rooms/{room}/plugins/echo", json={"enabled": True})
                await bob.join(room)
        small = await command(bob, "small", "/roll 3d6", "r1")
        assert small["code"] == "usage" and "between 1 and 2 dice" in small["detail"]
        assert (await command(bob, "big", "/roll 3d6", "r2"))["type"] == "command_result"
        big = await command(bob, "big", "/roll 6d6", "r3")
        assert "between 1 and 5 dice" in big["detail"]


class Settings(msgspec.Struct):
    token: Annotated[str, Secret] = ""
    limit: Annotated[int, PerRoom] = 3
    mode: str = "fast"


def test_plugin_settings_sources_and_errors():
    env = {"LYDIAN_PLUGIN_DEMO_TOKEN": "abc", "LYDIAN_PLUGIN_DEMO_LIMIT": "9"}
    loaded = load_plugin_settings(
        "demo", Settings, {"mode": "slow", "limit": 4, "rooms": {"r1": {"limit": 1}}}, env
    )
    assert loaded.values == Settings(token="abc", limit=9, mode="slow")  # env wins over file
    assert loaded.for_room("r1").limit == 1 and loaded.for_room("other").limit == 9
    assert loaded.public() == {"token": "********", "limit": 9, "mode": "slow"}
    assert loaded.secrets() == ["abc"]

    cases = [
        ({"mode": 3}, "mode", "Expected `str`, got `int`"),
        ({"speed": 1}, "speed", "unknown setting"),
        ({"token": "x"}, "token", "LYDIAN_PLUGIN_DEMO_TOKEN"),
        ({"rooms": {"r1": {"mode": "x"}}}, "rooms.r1.mode", "cannot be overridden per room"),
        ({"rooms": {"r1": {"limit": "lots"}}}, "limit", "Expected `int`"),
    ]
    for table, field, reason in cases:
        with pytest.raises(PluginConfigError) as info:
            load_plugin_settings("demo", Settings, table, {})
        assert info.value.plugin == "demo" and info.value.field == field, str(info.value)
        assert reason in str(info.value)
    with pytest.raises(PluginConfigError, match="LYDIAN_PLUGIN_DEMO_LIMIT"):
        load_plugin_settings("demo", Settings, {}, {"LYDIAN_PLUGIN_DEMO_LIMIT": "x"})
    with pytest.raises(PluginConfigError, match=r"must return a msgspec\.Struct type"):
        load_plugin_settings("demo", dict, {}, {})


class Agent:
    def __init__(self, name: str, default_enabled: bool = False) -> None:
        self.name = name
        self.default_enabled = default_enabled


class AgentPlugin:
    @hookimpl
    def lydian_agents(self):
        return [Agent("summarizer"), Agent("greeter", default_enabled=True)]

    @hookimpl
    def lydian_llm_providers(self):
        return ["provider-object"]


async def test_agents_are_enabled_per_room_under_their_own_name(server):
    await server.create_room("ops")
    await add_plugin(server, AgentPlugin(), "agents")
    host = server.hub.plugins
    assert {"greeter", "summarizer"} <= set(host.agent_names())
    assert ("agents", "provider-object") in host.items("lydian_llm_providers")
    assert host.is_enabled("ops", "greeter") and not host.is_enabled("ops", "summarizer")
    admin = await server.client("root", admin=True)
    await admin.join("ops")
    await command(admin, "ops", "/plugins enable summarizer", "p1")
    await frame_where(admin, room_event("ops", "plugin_enabled", "summarizer"))
    assert host.is_enabled("ops", "summarizer") and not host.is_enabled("lobby", "summarizer")
    listing = await command(admin, "ops", "/plugins", "p2")
    assert "summarizer (agent) — on" in listing["text"]
    async with server.http("root", admin=True) as http:
        state = (await http.get("/api/rooms/ops/plugins/summarizer")).json()
    assert state == {"room": "ops", "plugin": "summarizer", "enabled": True, "kind": "agent"}


class AdminTools:
    LYDIAN_DEFAULT_ENABLED = True

    @hookimpl
    def lydian_commands(self):
        async def purge(ctx, args):
            return f"purged {args['count']} messages in {ctx.room}"

        return [
            CommandSpec(
                name="purge",
                help="delete recent messages",
                handler=purge,
                args=[Arg("count", type=int)],
                admin_only=True,
            )
        ]


async def test_admin_only_plugin_commands(server):
    await server.create_room("ops")
    await add_plugin(server, AdminTools(), "admintools")
    bob = await server.client("bob")
    root = await server.client("root", admin=True)
    for client in (bob, root):
        await client.join("ops")
    denied = await command(bob, "ops", "/purge 5", "c1")
    assert denied["code"] == "forbidden" and denied["detail"] == "/purge is for admins only"
    assert (await command(root, "ops", "/purge 5", "c2"))["text"] == "purged 5 messages in ops"
    usage = await command(root, "ops", "/purge five", "c3")
    assert usage["code"] == "usage" and "usage: /purge COUNT" in usage["detail"]
    helped = await command(bob, "ops", "/help purge", "c4")
    assert helped["text"].startswith("/purge COUNT — delete recent messages (admin)")


def test_plugin_tables_come_from_the_config_file(tmp_path):
    config = tmp_path / "lydian.toml"
    config.write_text(
        "[hub]\nplugin_hook_timeout = 2.5\n\n[plugins.echo]\nmax_dice = 7\n\n"
        "[plugins.echo.rooms.casino]\nmax_dice = 500\n"
    )
    settings = load_settings(env={"LYDIAN_CONFIG": str(config), "LYDIAN_PLUGINS": "echo"})
    assert settings.plugins == "echo" and settings.plugin_hook_timeout == 2.5
    echo = {"max_dice": 7, "rooms": {"casino": {"max_dice": 500}}}
    assert settings.plugin_config == {"echo": echo}
    loaded = load_plugin_settings("echo", EchoSettings, settings.plugin_config["echo"], {})
    assert loaded.values.max_dice == 7 and loaded.for_room("casino").max_dice == 500
