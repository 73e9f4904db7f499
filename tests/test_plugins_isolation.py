"""Plugins that raise, hang or return garbage are contained: the room and the hub go on."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

import msgspec
import pytest

from hub.base.protocol import ChatMessage
from hub.plugin_host.commands import Arg, CommandSpec
from hub.plugin_host.hookspecs import hookimpl
from hub.plugin_host.settings import Secret
from tests import support
from tests.plugin_support import add_plugin, command, frame_where, room_event

# only the plugins under test: other installed plugins must not add events or messages
FAST = {"plugin_hook_timeout": 0.3, "plugin_max_failures": 3, "plugins": "echo"}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def plugin_log():
    """Error lines of the plugin host's logger (the app's logging setup replaces caplog's
    handler)."""
    handler = _Collect()
    logger = logging.getLogger("hub.plugin_host.host")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


class Raising:
    """Raises in every room hook."""

    LYDIAN_DEFAULT_ENABLED = True

    @hookimpl
    def lydian_message(self, message):
        raise RuntimeError(f"cannot handle {message.text!r}")

    @hookimpl
    async def lydian_transform_message(self, text):
        raise ValueError("transform exploded")

    @hookimpl
    def lydian_commands(self):
        async def crash(ctx, args):
            raise KeyError("crash")

        return [CommandSpec(name="crash", help="always fails", handler=crash)]


class Hanging:
    LYDIAN_DEFAULT_ENABLED = True

    @hookimpl
    async def lydian_transform_message(self, text):
        await asyncio.sleep(30)  # a plugin that hangs on purpose: the hub must time it out
        return "never"

    @hookimpl
    def lydian_commands(self):
        def slow(ctx, args):
            time.sleep(1.0)  # a blocking plugin: runs in a worker thread, bounded
            return "too late"

        async def stuck(ctx, args):
            await asyncio.sleep(30)  # hangs on purpose

        return [
            CommandSpec(name="slow", help="blocks", handler=slow),
            CommandSpec(name="stuck", help="hangs", handler=stuck),
        ]


class Garbage:
    LYDIAN_DEFAULT_ENABLED = True

    @hookimpl
    def lydian_transform_message(self, text):
        return 42

    @hookimpl
    def lydian_commands(self):
        return [CommandSpec(name="junk", help="returns a dict", handler=lambda c, a: {"x": 1})]


class Recorder:
    """A well-behaved observer and transform, to prove the others do not stop it."""

    LYDIAN_DEFAULT_ENABLED = True

    def __init__(self) -> None:
        self.seen: list[ChatMessage] = []

    @hookimpl
    def lydian_transform_message(self, text):
        return text.replace(":tada:", "🎉")

    @hookimpl
    async def lydian_message(self, message):
        self.seen.append(message)


async def _setup(server, *plugins):
    await server.create_room("ops")
    for name, plugin in plugins:
        await add_plugin(server, plugin, name)
    ada = await server.client("ada")
    await ada.join("ops")
    return ada


def _errors(client, plugin):
    return [
        f
        for f in client.seen
        if f["type"] == "event" and f["event"] == "plugin_error" and f["data"]["plugin"] == plugin
    ]


async def test_a_raising_plugin_is_contained_and_logged(make_server, plugin_log):
    recorder = Recorder()
    async with make_server(**FAST) as server:
        ada = await _setup(server, ("recorder", recorder), ("raising", Raising()))
        ack = await ada.say("ops", "party :tada:", "m1")
        assert ack["offset"] == 1
        message = await frame_where(ada, lambda f: f["type"] == "message")
        assert message["message"]["text"] == "party 🎉"  # the good transform still ran
        event = await frame_where(
            ada, lambda f: f["type"] == "event" and f["data"].get("hook") == "lydian_message"
        )
        assert event["event"] == "plugin_error" and event["data"]["plugin"] == "raising"
        assert "RuntimeError: cannot handle 'party 🎉'" in event["detail"]
        transform = await frame_where(
            ada,
            lambda f: f["type"] == "event" and f["data"].get("hook") == "lydian_transform_message",
        )
        assert "ValueError: transform exploded" in transform["detail"]
        await support.eventually(lambda: recorder.seen, what="the recorder to see the message")
        assert [m.text for m in recorder.seen] == ["party 🎉"]
        crashed = await command(ada, "ops", "/crash", "c1")
        assert crashed["code"] == "plugin_error" and "KeyError" in crashed["detail"]
        stored = await server.hub.store.messages_after("ops", 0, 10)
        assert [m.text for m in stored] == ["party 🎉"]
    assert "plugin 'raising' raised in lydian_message" in plugin_log


async def test_a_hanging_plugin_times_out_and_the_socket_stays_responsive(make_server):
    async with make_server(**FAST) as server:
        ada = await _setup(server, ("hanging", Hanging()))
        started = time.monotonic()
        ack = await ada.say("ops", "hello", "m1")
        assert time.monotonic() - started < 3
        message = await frame_where(ada, lambda f: f["type"] == "message")
        assert message["message"]["text"] == "hello" and ack["offset"] == 1
        timeout = await frame_where(ada, room_event("ops", "plugin_error", "hanging"))
        assert "timed out after 0.3 s" in timeout["detail"]

        await ada.send({"type": "command", "room": "ops", "text": "/stuck", "id": "c1"})
        await ada.send({"type": "command", "room": "ops", "text": "/slow", "id": "c2"})
        # while both commands hang, the same socket is served at once
        await ada.send({"type": "history", "room": "ops", "id": "h1"})
        history = await frame_where(ada, lambda f: f["type"] == "history", timeout=0.25)
        assert [m["text"] for m in history["messages"]] == ["hello"]
        for ref in ("c1", "c2"):
            reply = await frame_where(ada, lambda f, r=ref: f.get("id") == r)
            assert reply["type"] == "error" and reply["code"] == "plugin_error"
            assert "timed out" in reply["detail"]


async def test_garbage_return_values_are_rejected_with_a_clear_error(make_server):
    async with make_server(**FAST) as server:
        ada = await _setup(server, ("garbage", Garbage()))
        await ada.say("ops", "plain text", "m1")
        message = await frame_where(ada, lambda f: f["type"] == "message")
        assert message["message"]["text"] == "plain text"
        event = await frame_where(ada, room_event("ops", "plugin_error", "garbage"))
        assert "returned int, expected str or None" in event["detail"]
        junk = await command(ada, "ops", "/junk", "c1")
        assert junk["code"] == "plugin_error" and "returned dict, expected str" in junk["detail"]


async def test_a_plugin_failing_repeatedly_is_switched_off_in_that_room(make_server):
    async with make_server(plugin_hook_timeout=0.3, plugin_max_failures=2, plugins="") as server:
        ada = await _setup(server, ("raising", Raising()))
        await server.create_room("lobby")
        await ada.join("lobby")
        for n in range(2):
            reply = await command(ada, "ops", "/crash", f"c{n}")
            assert reply["code"] == "plugin_error"
        off = await frame_where(ada, room_event("ops", "plugin_disabled", "raising"))
        assert off["data"]["by"] == "hub"
        assert "after 2 consecutive failures" in off["data"]["reason"]
        assert "/plugins enable raising" in off["detail"]
        gone = await command(ada, "ops", "/crash", "c9")
        assert gone["code"] == "unknown_command"
        assert await server.hub.store.room_plugins("ops") == {"ops": {"raising": False}}
        # other rooms keep the plugin
        assert server.hub.plugins.is_enabled("lobby", "raising")
        assert (await command(ada, "lobby", "/crash", "l1"))["code"] == "plugin_error"


class BrokenRegistry:
    @hookimpl
    def lydian_commands(self):
        return "not a list"


class BrokenStartup:
    @hookimpl
    async def lydian_startup(self, hub):
        raise ConnectionError("upstream down")

    @hookimpl
    def lydian_commands(self):
        return [CommandSpec(name="never", help="", handler=lambda c, a: "x")]


class BadCommandName:
    @hookimpl
    def lydian_commands(self):
        return [CommandSpec(name="Bad Name", help="", handler=lambda c, a: "x")]


class Typo:
    @hookimpl
    def lydian_mesage(self, message):
        pass


class BadSignature:
    @hookimpl
    def lydian_commands(self, room):
        return []


async def test_broken_plugins_stay_off_and_the_hub_runs(make_server):
    async with make_server(**FAST) as server:
        admin = await _setup(
            server,
            ("registry", BrokenRegistry()),
            ("startup", BrokenStartup()),
            ("typo", Typo()),
            ("signature", BadSignature()),
            ("badname", BadCommandName()),
        )
        async with server.http("root", admin=True) as http:
            infos = {p["name"]: p for p in (await http.get("/api/plugins")).json()}
            assert "lydian_commands" in infos["registry"]["error"]
            assert "expected a list, got str" in infos["registry"]["error"]
            assert "ConnectionError: upstream down" in infos["startup"]["error"]
            assert "unknown hook(s): lydian_mesage" in infos["typo"]["error"]
            assert "room" in infos["signature"]["error"]
            assert "invalid command name 'Bad Name'" in infos["badname"]["error"]
            resp = await http.put("/api/rooms/ops/plugins/startup", json={"enabled": True})
            assert resp.status_code == 400 and "is off on this hub" in resp.text
        assert (await command(admin, "ops", "/never", "c1"))["code"] == "unknown_command"
        assert (await admin.say("ops", "still fine", "m1"))["offset"] == 1


class Configured:
    """A plugin with settings, one of them secret, one overridable per room."""

    class Settings(msgspec.Struct):
        token: Annotated[str, Secret]
        limit: int = 3

    @hookimpl
    def lydian_plugin_settings(self):
        return self.Settings

    @hookimpl
    def lydian_commands(self):
        def show(ctx, args):
            settings = ctx.settings()
            return f"limit={settings.limit} token-length={len(settings.token)}"

        return [CommandSpec(name="show", help="", handler=show, args=[Arg("x", required=False)])]


async def test_invalid_config_keeps_the_plugin_off_with_field_and_reason(make_server, plugin_log):
    config = {"configured": {"limit": "many"}}
    async with make_server(plugin_config=config, **FAST) as server:
        await _setup(server, ("configured", Configured()))
        info = next(i for i in server.hub.plugins.infos() if i.name == "configured")
    assert info.error is not None
    assert "plugin 'configured': invalid setting field 'limit'" in info.error
    assert "Expected `int`, got `str`" in info.error
    assert any("invalid setting field 'limit'" in line for line in plugin_log)


async def test_secrets_come_from_the_environment_only_and_are_never_shown(
    make_server, monkeypatch, tmp_path
):
    in_file = {"configured": {"token": "from-file"}}
    async with make_server(plugin_config=in_file, **FAST) as server:
        await _setup(server, ("configured", Configured()))
        info = next(i for i in server.hub.plugins.infos() if i.name == "configured")
        assert "field 'token': secrets come only from the environment" in info.error
        assert "LYDIAN_PLUGIN_CONFIGURED_TOKEN" in info.error
    monkeypatch.setenv("LYDIAN_PLUGIN_CONFIGURED_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("LYDIAN_PLUGIN_CONFIGURED_LIMIT", "7")
    async with support.running(support.test_settings(str(tmp_path / "second"), **FAST)) as server:
        ada = await _setup(server, ("configured", Configured()))
        async with server.http("root", admin=True) as http:
            await http.put("/api/rooms/ops/plugins/configured", json={"enabled": True})
            listing = (await http.get("/api/plugins")).text
        assert "s3cr3t-value" not in listing
        assert '"token":"********"' in listing and '"limit":7' in listing
        shown = await command(ada, "ops", "/show", "c1")
        assert shown["text"] == "limit=7 token-length=12"


class Leaky:
    """Puts its secret into an exception message, as careless code does."""

    LYDIAN_DEFAULT_ENABLED = True

    class Settings(msgspec.Struct):
        api_key: Annotated[str, Secret] = ""

    @hookimpl
    def lydian_plugin_settings(self):
        return self.Settings

    @hookimpl
    def lydian_commands(self):
        def call(ctx, args):
            raise RuntimeError(f"401 from upstream for key {ctx.settings().api_key}")

        return [CommandSpec(name="call", help="", handler=call)]


async def test_secrets_are_scrubbed_from_errors_shown_in_the_room(make_server, monkeypatch):
    monkeypatch.setenv("LYDIAN_PLUGIN_LEAKY_API_KEY", "sk-very-secret-123")
    async with make_server(**FAST) as server:
        ada = await _setup(server, ("leaky", Leaky()))
        reply = await command(ada, "ops", "/call", "c1")
        assert reply["code"] == "plugin_error" and "401 from upstream" in reply["detail"]
        event = await frame_where(ada, room_event("ops", "plugin_error", "leaky"))
        for text in (reply["detail"], event["detail"]):
            assert "sk-very-secret-123" not in text and "********" in text
