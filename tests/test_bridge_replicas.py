"""Bridges with several hub replicas (PostgreSQL + Redis): one leader copies messages out,
so each message reaches each platform once; links made on any replica apply to the leader;
another replica takes over when the leader dies and copies what was missed."""

from __future__ import annotations

import asyncio

import httpx

from tests.adapter_support import DISCORD_TOKEN, SIGNING_SECRET, SLACK_TOKEN, eventually
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.procs import cluster, token

SLACK_CHANNEL = "C0GENERAL"
DISCORD_CHANNEL = "800000000000000001"
QUIET = ("ping", "presence", "typing", "ack", "event")


async def test_two_replicas_post_each_message_once_and_fail_over(tmp_path):
    slack, discord = FakeSlack(SIGNING_SECRET), FakeDiscord(DISCORD_TOKEN)
    await slack.start()
    await discord.start()
    slack.add_user("UALICE", "Alice")
    env = {
        "LYDIAN_PLUGIN_SLACK_BOT_TOKEN": SLACK_TOKEN,
        "LYDIAN_PLUGIN_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "LYDIAN_PLUGIN_SLACK_API_URL": slack.api_url,
        "LYDIAN_PLUGIN_DISCORD_BOT_TOKEN": DISCORD_TOKEN,
        "LYDIAN_PLUGIN_DISCORD_API_URL": discord.api_url,
        "LYDIAN_PLUGIN_DISCORD_GUILD_READY_TIMEOUT": "0.1",
    }
    try:
        async with cluster(tmp_path, 2, **env) as (first, second):
            slack.hub_url = first.http_url
            headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
            async with httpx.AsyncClient(base_url=second.http_url, headers=headers) as http:
                assert (await http.post("/api/rooms", json={"id": "ops"})).status_code == 201
                for platform, channel in (("slack", SLACK_CHANNEL), ("discord", DISCORD_CHANNEL)):
                    resp = await http.post(
                        "/api/rooms/ops/bridges", json={"platform": platform, "channel": channel}
                    )
                    assert resp.status_code == 201, resp.text
            await eventually(lambda: discord.identify is not None, what="a gateway session")
            assert len(discord._sockets) == 1  # only the leader connects to the gateway

            bob = await second.client("bob")
            await bob.join("ops")
            await bob.send({"type": "send", "room": "ops", "text": "once", "id": "b1"})
            await eventually(lambda: slack.posted() and discord.sent(), what="the copies")
            # the Slack event reaches the replica that did not post, then again as a retry
            body = slack.event_body(
                {
                    "type": "message",
                    "channel": SLACK_CHANNEL,
                    "user": "UALICE",
                    "text": "hi",
                    "ts": "1700000001.000001",
                },
                event_id="EvREPL",
            )
            slack.hub_url = second.http_url
            await slack.deliver("/slack/events", body, "application/json")
            slack.hub_url = first.http_url
            await slack.deliver("/slack/events", body, "application/json", retry_num=1)
            await eventually(lambda: len(discord.sent()) == 2, what="the Slack message on Discord")
            await asyncio.sleep(1.0)  # a window for a duplicate copy: an absence has no event
            assert [p["text"] for p in slack.posted()] == ["once"]
            assert [m["content"] for m in discord.in_channel(DISCORD_CHANNEL)] == [
                "**Bob**: once",
                "**Alice**: hi",
            ]

            slack.hub_url = second.http_url
            first.kill()  # the leader dies without a goodbye; its lease expires
            # posted before anyone leads: the next leader catches up on it
            await bob.send({"type": "send", "room": "ops", "text": "after failover", "id": "b2"})
            await eventually(lambda: len(slack.posted()) == 2, timeout=20, what="failover")
            await eventually(lambda: len(discord.sent()) == 3, timeout=20, what="failover")
            await asyncio.sleep(1.0)  # a window for a duplicate copy: an absence has no event
            assert slack.posted()[-1]["text"] == "after failover"
            assert len(slack.posted()) == 2 and len(discord.sent()) == 3
            await bob.close()
    finally:
        await slack.settle()
        await slack.stop()
        await discord.stop()
