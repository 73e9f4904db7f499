"""The Discord adapter against a fake Discord on 127.0.0.1 (REST and gateway), driven
through the real discord.py: gateway handshake, messages both ways, echo suppression,
429s, application commands, edits/deletions and streamed answers edited in place."""

from __future__ import annotations

import time

import pytest

from tests.adapter_support import DISCORD_TOKEN, discord_env, eventually
from tests.fakes.discord import BOT, FakeDiscord

CHANNEL = "800000000000000001"
OTHER_CHANNEL = "800000000000000009"
QUIET = ("ping", "presence", "typing")
ALICE = FakeDiscord.user("700000000000000001", "Alice")
ROOT = FakeDiscord.user("700000000000000002", "Root")


@pytest.fixture
async def discord_fake():
    fake = FakeDiscord(DISCORD_TOKEN)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def discord_hub(make_server, discord_fake, monkeypatch):
    discord_env(monkeypatch)

    def start(**overrides):
        config = {
            "api_url": discord_fake.api_url,
            "edit_interval": 0.05,
            "admins": [ROOT["id"]],
            "guild_ready_timeout": 0.1,
        }
        config.update(overrides)
        return make_server(
            plugin_config={"discord": config, "offline_provider": {"token_delay": 0.01}}
        )

    return start


async def _bridged(server, fake, room="ops", channel=CHANNEL):
    await server.create_room(room)
    async with server.http("root", admin=True) as http:
        resp = await http.post(
            f"/api/rooms/{room}/bridges", json={"platform": "discord", "channel": channel}
        )
        assert resp.status_code == 201, resp.text
    await eventually(lambda: fake.identified.is_set(), what="IDENTIFY")
    adapter = _adapter(server)
    await eventually(lambda: adapter.ready.is_set(), what="READY")


def _adapter(server):
    from lydian_adapters.discord.plugin import adapter_for

    adapter = adapter_for(server.hub)
    assert adapter is not None
    return adapter


def _text(message):
    """The text of a bridged copy, without the ``**Name**: `` prefix."""
    return message["content"].split("**: ", 1)[1]


async def test_gateway_handshake_and_application_command_registration(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        identify = discord_fake.identify
        assert identify is not None and identify["token"] == DISCORD_TOKEN
        intents = identify["intents"]
        assert intents & (1 << 15)  # message content
        assert intents & (1 << 9)  # guild messages
        assert intents & (1 << 10)  # guild message reactions
        await eventually(lambda: discord_fake.commands, what="command registration")
        (command,) = discord_fake.commands
        assert command["name"] == "lydian" and command["options"][0]["name"] == "command"
        await eventually(lambda: discord_fake.heartbeats >= 1, what="a heartbeat")


async def test_messages_cross_both_ways_without_echo(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        web = await server.client("bob", name="Bob")
        await web.join("ops")
        await discord_fake.user_says(CHANNEL, ALICE, "hello from discord")
        message = (await web.expect("message"))["message"]
        assert message["text"] == "hello from discord"
        assert message["user"]["id"] == f"discord:{ALICE['id']}"
        assert message["user"]["name"] == "Alice"
        assert message["meta"]["source"] == "discord"
        await web.say("ops", "hi Alice", "w1")
        assert (await web.expect("message"))["message"]["client_id"] == "w1"
        await eventually(lambda: len(discord_fake.in_channel(CHANNEL)) == 2, what="the copy")
        copy = discord_fake.in_channel(CHANNEL)[1]
        assert copy["author"]["id"] == BOT["id"] and copy["content"] == "**Bob**: hi Alice"
        # the bot's own MESSAGE_CREATE came back through the gateway: not ingested
        assert await web.silent_for(0.4, skip=QUIET) == []
        assert len(discord_fake.sent()) == 1


async def test_rate_limited_sends_wait_then_arrive_in_order(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        web = await server.client("bob", name="Bob")
        await web.join("ops")
        discord_fake.rate_limit("POST", retry_after=1)
        for n in range(3):
            await web.say("ops", f"message {n}", f"r{n}")
        await eventually(lambda: len(discord_fake.sent()) == 3, what="3 sends")
        assert [_text(m) for m in discord_fake.in_channel(CHANNEL)] == [
            "message 0",
            "message 1",
            "message 2",
        ]
        ((_, _, rejected_at),) = discord_fake.rejected
        first_ok = next(t for m, p, _, t in discord_fake.calls if m == "POST" and "/messages" in p)
        assert first_ok - rejected_at >= 0.95


async def test_long_rate_limit_goes_back_to_the_outbox_and_still_delivers(
    discord_hub, discord_fake
):
    async with discord_hub(max_ratelimit_wait=0.5) as server:
        await _bridged(server, discord_fake)
        web = await server.client("bob", name="Bob")
        await web.join("ops")
        discord_fake.rate_limit("POST", retry_after=1.2)
        started = time.monotonic()
        await web.say("ops", "patience", "p1")
        await eventually(lambda: discord_fake.sent(), what="the send")
        assert time.monotonic() - started >= 1.1
        assert _text(discord_fake.in_channel(CHANNEL)[0]) == "patience"


async def test_application_command_runs_a_hub_command_with_permissions(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        await eventually(lambda: discord_fake.commands, what="command registration")
        iid = await discord_fake.slash(CHANNEL, ALICE, "lydian", "help")
        (reply,) = await eventually(lambda: discord_fake.interaction_replies.get(iid))
        assert reply["type"] == 4 and "/bridge" in reply["data"]["content"]
        assert reply["data"]["flags"] & 64  # ephemeral
        iid = await discord_fake.slash(CHANNEL, ALICE, "lydian", "/bridge slack C1")
        (denied,) = await eventually(lambda: discord_fake.interaction_replies.get(iid))
        assert "only admins" in denied["data"]["content"]
        iid = await discord_fake.slash(CHANNEL, ROOT, "lydian", "/bridge slack C1")
        (allowed,) = await eventually(lambda: discord_fake.interaction_replies.get(iid))
        assert allowed["data"]["content"].startswith("bridged ops to slack C1")


async def test_edits_and_deletions_propagate(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        web = await server.client("bob")
        await web.join("ops")
        mid = await discord_fake.user_says(CHANNEL, ALICE, "tpyo")
        original = (await web.expect("message"))["message"]
        await discord_fake.user_edits(mid, "typo")
        edited = await web.expect("event")
        assert edited["event"] == "message_edited"
        assert edited["data"] == {"id": original["id"], "source": "discord", "text": "typo"}
        await discord_fake.user_deletes(mid)
        deleted = await web.expect("event")
        assert deleted["event"] == "message_deleted" and deleted["data"]["id"] == original["id"]


async def test_streamed_answer_is_one_message_edited_to_the_full_text(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        async with server.http("root", admin=True) as http:
            await http.put("/api/rooms/ops/plugins/assistant", json={"enabled": True})
        web = await server.client("bob")
        await web.join("ops")
        await discord_fake.user_says(CHANNEL, ALICE, "@assistant stream me a long answer")
        end = await web.expect(
            "stream_end",
            timeout=10,
            skip=(*QUIET, "message", "stream_start", "stream_delta", "event"),
        )
        final = end["message"]["text"]

        def answered():
            found = [m for m in discord_fake.in_channel(CHANNEL) if m["author"]["id"] == BOT["id"]]
            return found if found and _text(found[0]) == final else None

        (answer,) = await eventually(answered, what="the edited answer")
        assert answer["content"] == f"**Assistant**: {final}"
        assert answer["edits"] >= 1
        assert len(discord_fake.sent()) == 1  # posted once, then edited


async def test_stop_reaction_cancels_the_answer_everywhere(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        async with server.http("root", admin=True) as http:
            await http.put("/api/rooms/ops/plugins/assistant", json={"enabled": True})
            await http.put("/api/rooms/ops/plugins/offline_provider", json={"enabled": True})
        web = await server.client("bob")
        await web.join("ops")
        words = " ".join(f"w{n}" for n in range(300))
        await discord_fake.user_says(CHANNEL, ALICE, f"@assistant {words}")
        await web.expect("stream_start", timeout=10, skip=(*QUIET, "message", "event"))
        await web.expect("stream_delta", timeout=10, skip=(*QUIET, "message", "event"))

        def placeholder():
            found = [m for m in discord_fake.in_channel(CHANNEL) if m["author"]["id"] == BOT["id"]]
            return found[0] if found else None

        copy = await eventually(placeholder, what="the answer's message")
        await discord_fake.react(copy["id"], ALICE, "🛑")
        end = await web.expect(
            "stream_end", timeout=10, skip=(*QUIET, "message", "stream_delta", "event")
        )
        assert end["cancelled"] is True
        final = end["message"]["text"]
        assert len(final) < len("[offline model] You said: " + words)
        await eventually(lambda: _text(placeholder()) == final, what="the final edit")


async def test_odd_gateway_messages_are_ignored_and_huge_ones_refused(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        web = await server.client("bob")
        await web.join("ops")
        other_bot = {**FakeDiscord.user("700000000000000009", "OtherBot"), "bot": True}
        await discord_fake.user_says(CHANNEL, other_bot, "bots are not bridged")
        await discord_fake.user_says("800000000000000099", ALICE, "unbridged channel")
        await discord_fake.dispatch("MESSAGE_DELETE", {"id": "1", "channel_id": CHANNEL})
        await discord_fake.dispatch("NOT_A_REAL_EVENT", {"x": 1})
        # too long for the hub: refused by the hub's one rule (not cut), the author told
        huge = await discord_fake.user_says(CHANNEL, ALICE, "y" * 50_000)

        def replies():
            return [
                b
                for b in discord_fake.sent()
                if str((b.get("message_reference") or {}).get("message_id")) == huge
            ]

        notice = (await eventually(replies, what="the notice"))[0]["content"]
        assert f"exceeds {server.settings.max_text_chars} characters" in notice
        await discord_fake.user_says(CHANNEL, ALICE, "fits")
        assert (await web.expect("message"))["message"]["text"] == "fits"
        assert await web.silent_for(0.3, skip=QUIET) == []
        # a long web message is cut to Discord's 2000 characters, not rejected
        await web.say("ops", "z" * 5000, "long")
        await web.expect("message")

        def copies():
            return [b for b in discord_fake.sent() if "z" * 100 in b.get("content", "")]

        assert len((await eventually(copies, what="the long copy"))[0]["content"]) == 2000


async def test_with_manage_webhooks_copies_carry_the_authors_name_and_avatar(
    discord_hub, discord_fake
):
    discord_fake.webhooks_allowed = True
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        async with server.http("root", admin=True) as http:
            await http.put("/api/rooms/ops/plugins/assistant", json={"enabled": True})
        web = await server.client("bob", name="Bob")
        await web.join("ops")
        await web.say("ops", "@assistant via webhook please", "w1")
        end = await web.expect(
            "stream_end",
            timeout=10,
            skip=(*QUIET, "message", "stream_start", "stream_delta", "event"),
        )
        final = end["message"]["text"]

        def copies():
            found = discord_fake.in_channel(CHANNEL)
            return found if len(found) == 2 and found[1]["content"] == final else None

        question, answer = await eventually(copies, what="both copies, the answer edited")
        (hook,) = discord_fake.webhooks.values()
        assert hook["name"] == "Lydian bridge" and hook["channel_id"] == CHANNEL
        assert question["webhook_id"] == hook["id"] and question["author"]["username"] == "Bob"
        assert question["content"] == "@assistant via webhook please"  # no name prefix needed
        assert answer["author"]["username"] == "Assistant" and answer["edits"] >= 1
        # the webhook's own messages came back through the gateway and were not ingested
        assert await web.silent_for(0.3, skip=QUIET) == []
        assert discord_fake.sent() == []  # nothing was posted by the bot itself


async def test_a_webhook_copy_gets_the_avatar_of_a_slack_author(discord_hub, discord_fake):
    discord_fake.webhooks_allowed = True
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        from lydian_adapters.bridge import PlatformUser, bridge_for

        await bridge_for(server.hub).ingest(
            "slack",
            "C0X",
            "1.1",
            PlatformUser("slack", "U1", "Alice", "https://a.test/a.png"),
            "hi",
        )  # not bridged to slack C0X: nothing happens
        await bridge_for(server.hub).bridge("ops", "slack", "C0X", "root")
        await bridge_for(server.hub).ingest(
            "slack",
            "C0X",
            "1.2",
            PlatformUser("slack", "U1", "Alice", "https://a.test/a.png"),
            "hi",
        )
        (copy,) = await eventually(lambda: discord_fake.in_channel(CHANNEL), what="the copy")
        assert copy["author"]["username"] == "Alice"
        assert copy["avatar_url"] == "https://a.test/a.png"
        assert copy["content"] == "hi"


async def test_discord_attachments_reach_the_room(discord_hub, discord_fake):
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        web = await server.client("bob")
        await web.join("ops")
        attachment = {
            "id": "600000000000000001",
            "filename": "report.pdf",
            "size": 2048,
            "url": "https://cdn.fake.test/report.pdf",
            "proxy_url": "https://media.fake.test/report.pdf",
            "content_type": "application/pdf",
        }
        message = discord_fake.message(CHANNEL, ALICE, "the report", attachments=[attachment])
        discord_fake.messages[message["id"]] = message
        await discord_fake.dispatch("MESSAGE_CREATE", message)
        got = (await web.expect("message"))["message"]
        assert got["text"] == "the report"
        assert got["attachments"] == [
            {
                "id": "discord:600000000000000001",
                "name": "report.pdf",
                "media_type": "application/pdf",
                "size": 2048,
                "url": "https://cdn.fake.test/report.pdf",
            }
        ]


async def test_commands_are_synced_once_across_a_reconnect(discord_hub, discord_fake):
    """``on_ready`` runs again after a reconnect that cannot resume; the command sync does
    not (it runs in discord.py's ``setup_hook``, once per client)."""
    async with discord_hub() as server:
        await _bridged(server, discord_fake)
        await eventually(lambda: discord_fake.command_syncs() == 1, what="command registration")
        adapter = _adapter(server)
        adapter.ready.clear()
        await discord_fake.invalidate_sessions()
        await eventually(lambda: discord_fake.identifies == 2, what="a second IDENTIFY")
        await eventually(lambda: adapter.ready.is_set(), what="READY again")
        # the handshake is complete; anything on_ready started has had its turn: a message
        # posted now arrives after a sync would have been sent
        web = await server.client("bob", name="Bob")
        await web.join("ops")
        await web.say("ops", "after the reconnect", "w1")
        await eventually(lambda: discord_fake.in_channel(CHANNEL), what="the copy")
        assert discord_fake.command_syncs() == 1


async def test_two_clients_in_one_process_use_their_own_servers(discord_fake):
    """The API root and gateway are per client (the adapter's client class, real
    discord.py): the library's module globals stay as they are and each client talks to
    its own (fake) Discord, over REST and the gateway."""
    import asyncio

    import discord
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    from lydian_adapters.discord.adapter import LydianDiscordClient

    base, gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    other = FakeDiscord(DISCORD_TOKEN)
    await other.start()
    fakes = (discord_fake, other)
    clients = [
        LydianDiscordClient(api_url=fake.api_url, intents=discord.Intents.none()) for fake in fakes
    ]
    tasks = []
    try:
        for client in clients:
            await client.login(DISCORD_TOKEN)
            _, url, _ = await client.http.get_bot_gateway()
            client.http.gateway = yarl.URL(url)
            tasks.append(asyncio.create_task(client.connect(reconnect=False)))
        for fake in fakes:
            await eventually(lambda f=fake: f.identified.is_set(), what="IDENTIFY")
        for client, text in zip(clients, ("one", "two"), strict=True):
            await client.get_partial_messageable(int(CHANNEL)).send(text)
        assert [m["content"] for m in discord_fake.in_channel(CHANNEL)] == ["one"]
        assert [m["content"] for m in other.in_channel(CHANNEL)] == ["two"]
        # a webhook (discord.py sends those through its context-local adapter) too
        other.webhooks_allowed = True
        data = await clients[1].http.create_webhook(int(CHANNEL), name="hook")
        hook = discord.Webhook.from_state(data, clients[1]._connection)
        clients[1].use_api()
        await hook.send("three", username="Carol", wait=True)
        assert [m["content"] for m in other.in_channel(CHANNEL)] == ["two", "three"]
        assert (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY) == (base, gateway)
    finally:
        for client in clients:
            await client.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other.stop()
