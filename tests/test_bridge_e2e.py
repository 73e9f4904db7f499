"""One conversation across Slack, Discord and the web: a hub bridged to a fake Slack and a
fake Discord at once, each driven through its real client library."""

from __future__ import annotations

import pytest

from tests.adapter_support import (
    DISCORD_TOKEN,
    SIGNING_SECRET,
    discord_env,
    eventually,
    slack_env,
)
from tests.fakes.discord import BOT, FakeDiscord
from tests.fakes.slack import FakeSlack

SLACK_CHANNEL = "C0GENERAL"
DISCORD_CHANNEL = "800000000000000001"
QUIET = ("ping", "presence", "typing")
STREAM_NOISE = (*QUIET, "message", "stream_start", "stream_delta", "event")
ALICE_D = FakeDiscord.user("700000000000000001", "Dana")


@pytest.fixture
async def fakes():
    slack = FakeSlack(SIGNING_SECRET)
    discord = FakeDiscord(DISCORD_TOKEN)
    await slack.start()
    await discord.start()
    slack.add_user("UALICE", "Alice", "https://avatars.test/alice.png")
    try:
        yield slack, discord
    finally:
        await slack.settle()
        await slack.stop()
        await discord.stop()


@pytest.fixture
def bridged_hub(make_server, fakes, monkeypatch):
    slack, discord = fakes
    slack_env(monkeypatch)
    discord_env(monkeypatch)

    def start(token_delay: float = 0.01):
        return make_server(
            plugin_config={
                "slack": {"api_url": slack.api_url, "edit_interval": 0.05},
                "discord": {
                    "api_url": discord.api_url,
                    "edit_interval": 0.05,
                    "guild_ready_timeout": 0.1,
                },
                "offline_provider": {"token_delay": token_delay},
            }
        )

    return start


async def _setup(server, slack, discord, assistant=False):
    from lydian_adapters.discord.plugin import adapter_for

    slack.hub_url = server.http_url
    await server.create_room("ops")
    async with server.http("root", admin=True) as http:
        for platform, channel in (("slack", SLACK_CHANNEL), ("discord", DISCORD_CHANNEL)):
            resp = await http.post(
                "/api/rooms/ops/bridges", json={"platform": platform, "channel": channel}
            )
            assert resp.status_code == 201, resp.text
        if assistant:
            resp = await http.put("/api/rooms/ops/plugins/assistant", json={"enabled": True})
            assert resp.status_code == 200
    await eventually(lambda: adapter_for(server.hub).ready.is_set(), what="Discord READY")
    web = await server.client("bob", name="Bob")
    await web.join("ops")
    return web


def _discord_text(message):
    return message["content"].split("**: ", 1)[1]


def _discord_bot_messages(discord):
    return [m for m in discord.in_channel(DISCORD_CHANNEL) if m["author"]["id"] == BOT["id"]]


async def test_one_conversation_across_slack_discord_and_the_web(bridged_hub, fakes):
    slack, discord = fakes
    async with bridged_hub() as server:
        web = await _setup(server, slack, discord)
        await slack.user_says(SLACK_CHANNEL, "UALICE", "hello from slack")
        assert (await web.expect("message"))["message"]["text"] == "hello from slack"
        await eventually(lambda: _discord_bot_messages(discord), what="the Discord copy")
        assert _discord_bot_messages(discord)[0]["content"] == "**Alice**: hello from slack"

        await web.say("ops", "hello from the web", "w1")
        await web.expect("message")
        await discord.user_says(DISCORD_CHANNEL, ALICE_D, "hello from discord")
        assert (await web.expect("message"))["message"]["text"] == "hello from discord"

        def everywhere():
            return len(slack.posted()) == 2 and len(_discord_bot_messages(discord)) == 2

        await eventually(everywhere, what="all copies")
        await slack.settle()
        # echo loop check: every message produced exactly one post per *other* platform
        assert [p["text"] for p in slack.posted()] == ["hello from the web", "hello from discord"]
        assert [p["username"] for p in slack.posted()] == ["Bob", "Dana"]
        assert [_discord_text(m) for m in _discord_bot_messages(discord)] == [
            "hello from slack",
            "hello from the web",
        ]
        assert await web.silent_for(0.5, skip=QUIET) == []  # nothing came back into the room
        assert len(slack.posted()) == 2 and len(discord.sent()) == 2


async def test_an_ai_answer_streams_into_all_three_and_ends_identically(bridged_hub, fakes):
    slack, discord = fakes
    async with bridged_hub() as server:
        web = await _setup(server, slack, discord, assistant=True)
        ts = await slack.user_says(SLACK_CHANNEL, "UALICE", "@assistant how are the bridges")
        start = await web.expect("stream_start", timeout=10, skip=(*QUIET, "message", "event"))
        deltas = []
        while True:
            frame = await web.expect(
                lambda f: f["type"] in ("stream_delta", "stream_end"),
                timeout=10,
                skip=(*QUIET, "message", "event"),
            )
            if frame["type"] == "stream_end":
                break
            deltas.append(frame["text"])
        final = frame["message"]["text"]
        assert "".join(deltas) == final and start["stream_id"] == frame["stream_id"]

        def slack_done():
            found = [m for m in slack.in_channel(SLACK_CHANNEL) if m.get("thread_ts") == ts]
            return found[0] if found and not found[0]["streaming"] else None

        def discord_done():
            found = _discord_bot_messages(discord)
            return found[-1] if len(found) == 2 and _discord_text(found[-1]) == final else None

        slack_answer = await eventually(slack_done, what="Slack's stream to stop")
        discord_answer = await eventually(discord_done, what="Discord's final edit")
        assert slack_answer["text"] == final == _discord_text(discord_answer)
        assert slack_answer["appends"] >= 1 and discord_answer["edits"] >= 1
        # the final persisted message was not posted again as a separate copy
        assert slack.posted() == [] and len(discord.sent()) == 2


async def test_a_stop_from_slack_stops_the_answer_everywhere(bridged_hub, fakes):
    slack, discord = fakes
    async with bridged_hub(token_delay=0.05) as server:
        web = await _setup(server, slack, discord, assistant=True)
        words = " ".join(f"w{n}" for n in range(200))
        ts = await slack.user_says(SLACK_CHANNEL, "UALICE", f"@assistant {words}")
        await web.expect("stream_start", timeout=10, skip=(*QUIET, "message", "event"))
        await web.expect("stream_delta", timeout=10, skip=(*QUIET, "message", "event"))

        def slack_stream():
            found = [m for m in slack.in_channel(SLACK_CHANNEL) if m.get("thread_ts") == ts]
            return found[0] if found else None

        answer = await eventually(slack_stream, what="the Slack stream")
        reaction = {
            "type": "reaction_added",
            "user": "UALICE",  # the member who asked may stop the answer
            "reaction": "octagonal_sign",
            "item": {"type": "message", "channel": SLACK_CHANNEL, "ts": answer["ts"]},
            "event_ts": "1700000900.000001",
        }
        assert (await slack.send_event(reaction)).status_code == 200
        end = await web.expect("stream_end", timeout=10, skip=STREAM_NOISE)
        assert end["cancelled"] is True
        final = end["message"]["text"]
        assert len(final) < len(f"[offline model] You said: {words}")
        await eventually(lambda: not slack_stream()["streaming"], what="Slack's stopStream")
        assert slack_stream()["text"] == final

        def discord_final():
            found = _discord_bot_messages(discord)
            return found and _discord_text(found[-1]) == final

        await eventually(discord_final, what="Discord's final edit")


async def test_429s_from_both_platforms_delay_but_keep_order(bridged_hub, fakes):
    slack, discord = fakes
    async with bridged_hub() as server:
        web = await _setup(server, slack, discord)
        slack.rate_limit("chat.postMessage", retry_after=1)
        discord.rate_limit("POST", retry_after=1)
        for n in range(4):
            await web.say("ops", f"m{n}", f"r{n}")
        expected = [f"m{n}" for n in range(4)]
        await eventually(lambda: len(slack.posted()) == 4, what="Slack posts")
        await eventually(lambda: len(discord.sent()) == 4, what="Discord posts")
        assert [p["text"] for p in slack.posted()] == expected
        assert [_discord_text(m) for m in _discord_bot_messages(discord)] == expected
        assert len(slack.rejected) == 1 and len(discord.rejected) == 1


async def test_a_cancel_from_the_web_stops_the_answer_on_both_platforms(bridged_hub, fakes):
    slack, discord = fakes
    async with bridged_hub(token_delay=0.05) as server:
        web = await _setup(server, slack, discord, assistant=True)
        words = " ".join(f"w{n}" for n in range(200))
        await web.say("ops", f"@assistant {words}", "q1")
        start = await web.expect("stream_start", timeout=10, skip=(*QUIET, "message", "event"))
        await web.expect("stream_delta", timeout=10, skip=(*QUIET, "message", "event"))
        await web.send({"type": "cancel", "room": "ops", "stream_id": start["stream_id"]})
        end = await web.expect("stream_end", timeout=10, skip=STREAM_NOISE)
        assert end["cancelled"] is True
        final = end["message"]["text"]

        def slack_final():
            answers = [
                m for m in slack.in_channel(SLACK_CHANNEL) if m.get("username") == "Assistant"
            ]
            return answers and answers[0]["text"] == final

        def discord_final():
            found = _discord_bot_messages(discord)
            return len(found) == 2 and _discord_text(found[-1]) == final

        await eventually(slack_final, what="Slack's final edit")
        await eventually(discord_final, what="Discord's final edit")


async def test_edits_and_deletions_propagate_between_platforms(bridged_hub, fakes):
    slack, discord = fakes
    async with bridged_hub() as server:
        web = await _setup(server, slack, discord)
        ts = await slack.user_says(SLACK_CHANNEL, "UALICE", "teh plan")
        await web.expect("message")
        await eventually(lambda: _discord_bot_messages(discord), what="the Discord copy")
        edit = {
            "type": "message",
            "subtype": "message_changed",
            "channel": SLACK_CHANNEL,
            "message": {"type": "message", "user": "UALICE", "text": "the plan", "ts": ts},
            "ts": "1700000700.000001",
        }
        assert (await slack.send_event(edit)).status_code == 200
        await eventually(
            lambda: _discord_bot_messages(discord)[0]["content"] == "**Alice**: the plan",
            what="the Discord copy edited",
        )
        mid = await discord.user_says(DISCORD_CHANNEL, ALICE_D, "oops, wrong room")
        await web.expect("message", skip=(*QUIET, "event"))
        await eventually(lambda: len(slack.posted()) == 1, what="the Slack copy")
        copy_ts = slack.in_channel(SLACK_CHANNEL)[-1]["ts"]
        await discord.user_edits(mid, "oops, wrong room (edited)")
        await eventually(
            lambda: slack.messages[(SLACK_CHANNEL, copy_ts)]["text"] == "oops, wrong room (edited)",
            what="the Slack copy edited",
        )
        await discord.user_deletes(mid)
        await eventually(
            lambda: slack.messages[(SLACK_CHANNEL, copy_ts)].get("deleted"),
            what="the Slack copy deleted",
        )
        await web.silent_for(0.3)
        events = [f for f in web.seen if f["type"] == "event"]
        assert [e["event"] for e in events] == [
            "message_edited",
            "message_edited",
            "message_deleted",
        ]
