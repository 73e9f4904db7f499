"""Providers that crash, hang or yield garbage, and assistant settings: clear errors, no loss."""

from __future__ import annotations

import asyncio
import json

import httpx

from hub.base.auth import Identity
from tests.stream_support import assistant_room, collect


class Crashing:
    name = "crashing"

    def configured(self, hub):
        return True

    def models(self, hub):
        return []

    async def stream(self, request, hub):
        yield "half an "
        raise RuntimeError("provider bug")


class Garbage(Crashing):
    name = "garbage"

    async def stream(self, request, hub):
        yield "fine "
        yield {"not": "text"}


class SelfCancelling(Crashing):
    name = "self_cancelling"

    async def stream(self, request, hub):
        yield "so far "
        raise asyncio.CancelledError


class Hanging(Crashing):
    name = "hanging"

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def stream(self, request, hub):
        try:
            yield "waiting "
            await asyncio.sleep(3600)  # hangs on purpose
        finally:
            self.closed.set()


class Steady(Crashing):
    """Slow but never silent for long: a token every 0.1 s."""

    name = "steady"

    async def stream(self, request, hub):
        for i in range(12):
            await asyncio.sleep(0.1)  # the provider's pace: the scenario
            yield f"t{i} "


async def ask(server, provider, question="@assistant hi"):
    server.hub.agents.add_provider(provider)
    await assistant_room(server)
    alice = await server.client("alice")
    await alice.join("lobby")
    await alice.say("lobby", question, "q")
    return alice, (await collect(alice))["end"]


async def test_a_crashing_provider_ends_in_an_error_and_keeps_the_partial(make_server):
    async with make_server(plugin_config={"assistant": {"provider": "crashing"}}) as server:
        alice, end = await ask(server, Crashing())
        assert end["type"] == "stream_error" and end["code"] == "upstream_error"
        assert "provider bug" in end["detail"]
        assert end["message"]["text"] == "half an "
        await alice.say("lobby", "the room goes on", "m2")
        assert (await alice.expect("message"))["message"]["text"] == "the room goes on"


async def test_a_provider_yielding_garbage_is_a_bad_response(make_server):
    async with make_server(plugin_config={"assistant": {"provider": "garbage"}}) as server:
        _, end = await ask(server, Garbage())
        assert (end["type"], end["code"]) == ("stream_error", "bad_response")
        assert end["message"]["text"] == "fine "


async def test_a_hanging_provider_times_out_and_is_closed(make_server):
    config = {"assistant": {"provider": "hanging"}}
    async with make_server(plugin_config=config, stream_idle_timeout=0.3) as server:
        hanging = Hanging()
        _, end = await ask(server, hanging)
        assert (end["type"], end["code"]) == ("stream_error", "upstream_timeout")
        assert end["message"]["text"] == "waiting "
        await asyncio.wait_for(hanging.closed.wait(), 2)  # its generator was closed


async def test_a_slow_steady_provider_is_not_timed_out(make_server):
    """The idle timeout counts from the last token, not from the first: 1.2 s of tokens
    0.1 s apart outlive a 0.25 s idle timeout (and a 0.25 s first-token one)."""
    config = {"assistant": {"provider": "steady"}}
    async with make_server(
        plugin_config=config, stream_idle_timeout=0.25, stream_first_token_timeout=0.25
    ) as server:
        _, end = await ask(server, Steady())
        assert end["type"] == "stream_end", end
        assert end["message"]["text"] == "".join(f"t{i} " for i in range(12))
        assert end["message"]["meta"]["metrics"]["duration_ms"] > 1100


async def test_a_hanging_provider_can_be_cancelled(make_server):
    async with make_server(plugin_config={"assistant": {"provider": "hanging"}}) as server:
        hanging = Hanging()
        server.hub.agents.add_provider(hanging)
        await assistant_room(server)
        alice = await server.client("alice")
        await alice.join("lobby")
        await alice.say("lobby", "@assistant hi", "q")
        delta = await alice.expect(
            "stream_delta", skip=("ping", "presence", "message", "stream_start")
        )
        await alice.send({"type": "cancel", "room": "lobby", "stream_id": delta["stream_id"]})
        end = (await collect(alice))["end"]
        assert end["type"] == "stream_end" and end["cancelled"] is True
        assert end["message"]["text"] == "waiting "
        await asyncio.wait_for(hanging.closed.wait(), 2)


async def test_command_only_assistant_ignores_mentions_and_answers_ask(make_server):
    async with make_server(plugin_config={"assistant": {"trigger": "command"}}) as server:
        await assistant_room(server)
        alice = await server.client("alice")
        await alice.join("lobby")
        await alice.say("lobby", "@assistant hello?", "q")
        assert not [f for f in await alice.silent_for(0.4) if f["type"].startswith("stream")]
        await alice.send({"type": "command", "room": "lobby", "text": "/ask hello", "id": "a"})
        stream = await collect(alice)
        assert stream["end"]["message"]["text"] == "[offline model] You said: hello"
        assert stream["start"]["requested_by"] == "alice"


async def test_mention_only_assistant_explains_ask(make_server):
    async with make_server(plugin_config={"assistant": {"trigger": "mention"}}) as server:
        await assistant_room(server)
        alice = await server.client("alice")
        await alice.join("lobby")
        await alice.send({"type": "command", "room": "lobby", "text": "/ask hi", "id": "a"})
        reply = await alice.expect(lambda f: f.get("id") == "a")
        assert reply["type"] == "error" and "@assistant" in reply["detail"]
        await alice.send({"type": "command", "room": "lobby", "text": "/ask", "id": "b"})
        assert (await alice.expect(lambda f: f.get("id") == "b"))["code"] == "usage"


async def test_sse_resumes_after_last_event_id(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    for i in range(3):
        await alice.say("lobby", f"m{i}", f"m{i}")
    headers = {"Authorization": f"Bearer {server.token('bob')}", "Last-Event-ID": "2"}
    got = []
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        async with http.stream("GET", "/api/rooms/lobby/events", headers=headers) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if got[-1]["type"] == "message":
                        break
    assert got[0]["type"] == "joined" and got[0]["replayed"] == 1
    assert got[1]["message"]["text"] == "m2"


async def test_sse_feed_of_a_private_room_needs_membership(server):
    await server.create_room("secret", private=True)
    async with server.http("stranger") as http:
        assert (await http.get("/api/rooms/secret/events")).status_code == 403
        assert (await http.get("/api/rooms/nowhere/events")).status_code == 404
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/api/rooms/secret/events")).status_code == 401


async def test_an_sse_reader_is_present_while_connected_and_leaves_when_it_hangs_up(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    headers = {"Authorization": f"Bearer {server.token('bob')}"}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        async with http.stream("GET", "/api/rooms/lobby/events", headers=headers) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    break  # joined
            online = await alice.expect(_presence_of("bob"))
            assert (online["user"]["id"], online["status"]) == ("bob", "online")
    offline = await alice.expect(_presence_of("bob"))
    assert (offline["user"]["id"], offline["status"]) == ("bob", "offline")
    assert "lobby" not in server.hub.rooms.live or all(
        not sub.startswith("sse-") for sub in server.hub.rooms.live["lobby"].subscribers
    )


def _presence_of(user):
    return lambda f: f["type"] == "presence" and f["user"]["id"] == user


async def test_an_oversized_ask_is_refused_and_nothing_is_posted(make_server):
    async with make_server(max_text_chars=100) as server:
        await assistant_room(server)
        # adapters (Slack, Discord) run commands without the socket's size check
        identity = Identity(id="alice", name="Alice")
        reply = await server.hub.plugins.run_command(
            server.hub, identity, "lobby", "/ask " + "why " * 50
        )
        assert reply.code == "usage" and "100 characters" in reply.detail
        async with server.http("alice") as http:
            assert (await http.get("/api/rooms/lobby/messages")).json()["messages"] == []


async def test_a_provider_that_cancels_itself_still_ends_the_stream(make_server):
    async with make_server(plugin_config={"assistant": {"provider": "self_cancelling"}}) as server:
        _, end = await ask(server, SelfCancelling())
        assert (end["type"], end["code"]) == ("stream_error", "upstream_error")
        assert end["message"]["text"] == "so far "
