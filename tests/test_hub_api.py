"""``HubAPI`` (hub.sdk): the hub implements every operation the protocol names, with the
same parameters, and each does what plugins are promised, on a real hub."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator

import jwt
import pytest

from hub.core import Hub
from hub.sdk import (
    CancelRefused,
    CommandResult,
    ErrorFrame,
    HubAPI,
    Identity,
    MessageRefused,
    RoomEvent,
    RoomExists,
    StreamMetrics,
    UserRef,
)
from tests.plugin_support import frame_where
from tests.support import TEST_SECRET

OPERATIONS = sorted(n for n in vars(HubAPI) if not n.startswith("_"))


def test_hubapi_names_the_operations_plugins_use():
    assert {
        "post_message",
        "visible_room",
        "history",
        "subscribe",
        "start_stream",
        "spawn",
        "settings",
        "plugin_settings",
        "shared",
        "authenticate",
        "bind_tables",
    } <= set(OPERATIONS)


@pytest.mark.parametrize("name", OPERATIONS)
def test_hub_implements_the_operation_with_its_parameters(name):
    declared = inspect.getattr_static(HubAPI, name)
    if isinstance(declared, property):  # an attribute of the hub object
        assert name in Hub.__init__.__code__.co_names or isinstance(
            inspect.getattr_static(Hub, name, None), property
        ), f"Hub has no attribute {name!r}"
        return
    implemented = inspect.getattr_static(Hub, name, None)
    assert callable(implemented), f"Hub has no operation {name!r}"
    assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared)
    want = [(p.name, p.kind, p.default) for p in inspect.signature(declared).parameters.values()]
    got = [(p.name, p.kind, p.default) for p in inspect.signature(implemented).parameters.values()]
    assert got == want


async def test_authenticate_accepts_only_valid_unrevoked_tokens(server):
    hub: HubAPI = server.hub
    identity = hub.authenticate(server.token("ada", admin=True))
    assert identity is not None and identity.id == "ada" and identity.is_admin
    assert hub.authenticate("not-a-token") is None
    claims = {"sub": "ada", "iss": "lydian", "name": "Ada", "roles": ["admin"]}
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, TEST_SECRET, "HS256")
    assert hub.authenticate(expired) is None
    other_secret = "not-the-hub-secret-" + TEST_SECRET
    forged = jwt.encode({**claims, "exp": int(time.time()) + 600}, other_secret, "HS256")
    assert hub.authenticate(forged) is None
    revoked = server.token("bob")
    bob = hub.authenticate(revoked)
    assert bob is not None and bob.jti
    await server.hub.revocations.revoke(bob.jti, user_id="bob", expires_at=bob.exp, by="root")
    assert hub.authenticate(revoked) is None


async def test_rooms_history_events_and_commands(server):
    hub: HubAPI = server.hub
    info = await hub.create_room("ops", name="Ops", created_by="ada")
    assert (info.id, info.name, info.kind) == ("ops", "Ops", "public")
    assert (await hub.room("ops")) == info
    assert await hub.room("nowhere") is None
    with pytest.raises(RoomExists):
        await hub.create_room("ops", created_by="bob")

    ada = UserRef(id="ada", name="Ada")
    posted = [(await hub.post_message("ops", ada, f"m{i}"))[0] for i in range(5)]
    with pytest.raises(MessageRefused):
        hub.check_message("   ")
    assert [m.text for m in await hub.history("ops")] == ["m0", "m1", "m2", "m3", "m4"]
    older = await hub.history("ops", before=posted[3].offset, limit=2)
    assert [m.text for m in older] == ["m1", "m2"]

    client = await server.client("bob")
    await client.join("ops")
    await hub.publish_event("ops", RoomEvent(room="ops", event="deployed", detail="v2"))
    event = await frame_where(client, lambda f: f["type"] == "event")
    assert (event["event"], event["detail"]) == ("deployed", "v2")

    bob = Identity(id="bob", name="Bob")
    helped = await hub.run_command(bob, "ops", "/help")
    assert isinstance(helped, CommandResult) and "/help" in helped.text
    unknown = await hub.run_command(bob, "ops", "/nosuchcommand", ref="c1")
    assert isinstance(unknown, ErrorFrame) and unknown.code == "unknown_command"
    assert unknown.id == "c1"
    await client.close()


async def test_start_stream_streams_pieces_and_stores_them(server):
    hub: HubAPI = server.hub
    await server.create_room("ops")
    client = await server.client("bob")
    await client.join("ops")

    async def pieces() -> AsyncIterator[str]:
        for piece in ("Deploy ", "is ", "green."):
            yield piece

    bot = UserRef(id="agent:deploys", name="Deploys")
    stream_id = await hub.start_stream("ops", bot, pieces(), requested_by="bob")
    start = await frame_where(client, lambda f: f["type"] == "stream_start")
    assert start["stream_id"] == stream_id and start["agent"]["id"] == "agent:deploys"
    end = await frame_where(client, lambda f: f["type"] == "stream_end")
    assert end["stream_id"] == stream_id and end["message"]["text"] == "Deploy is green."
    assert (await hub.history("ops"))[-1].text == "Deploy is green."

    with pytest.raises(CancelRefused):
        await hub.cancel_stream("ops", "no-such-stream", Identity(id="bob", name="Bob"))
    hub.record_stream(
        StreamMetrics(
            stream_id="x", room="/v1", agent="agent:a", started_at=0.0, duration_ms=1.0,
            tokens=1, deltas=1, cancelled=False,
        )
    )  # fmt: skip
    assert server.hub.streams.recent[-1].stream_id == "x"
    await client.close()


async def test_agents_settings_and_cache_stats(server):
    hub: HubAPI = server.hub
    agents = hub.list_agents()
    assert "assistant" in agents and hub.agent("assistant") == agents["assistant"]
    assert hub.agent("nobody") is None
    assert hub.plugin_settings("echo").max_dice == 100
    assert hub.plugin_settings("no_such_plugin") is None
    assert isinstance(hub.cache_stats(), dict)


async def test_bind_tables_puts_a_plugins_tables_on_the_hubs_database(server):
    from piccolo.columns import Varchar
    from piccolo.table import Table

    class Note(Table, tablename="test_hub_api_note"):
        text = Varchar(length=50)

    hub: HubAPI = server.hub
    hub.bind_tables([Note])
    assert Note._meta.db is server.hub.store.engine
    await Note.create_table(if_not_exists=True)  # the plugin's migration, in short
    await Note.insert(Note(text="kept"))
    assert await Note.select(Note.text) == [{"text": "kept"}]
    with pytest.raises(TypeError, match="not a Piccolo Table class"):
        hub.bind_tables([UserRef])  # type: ignore[list-item]
