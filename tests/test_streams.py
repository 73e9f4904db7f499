"""Streamed answers in rooms: fan-out, coalescing, cancel, failures, mid-stream joins, SSE."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.fakes.openai_server import FakeOpenAI, Script
from tests.stream_support import assistant_room, collect, deltas_seen, text_of, upstream
from tests.support import eventually

TOKENS = [f"t{i} " for i in range(60)]


async def test_three_clients_get_the_same_deltas_in_order_and_the_same_text(make_server):
    async with FakeOpenAI(Script(tokens=TOKENS, token_delay=0.002)) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            clients = [await server.client(name) for name in ("alice", "bob", "carol")]
            for client in clients:
                await client.join("lobby")
            await clients[0].say("lobby", "@assistant count for me", "q1")
            streams = [await collect(c) for c in clients]

            first = streams[0]
            assert first["end"]["type"] == "stream_end", first["end"]
            expected = "".join(TOKENS)
            seqs = [d["seq"] for d in first["deltas"]]
            assert seqs == list(range(1, len(seqs) + 1))
            assert 1 < len(seqs) < len(TOKENS)  # coalesced, not one frame per token
            for stream in streams:
                assert [(d["seq"], d["text"]) for d in stream["deltas"]] == [
                    (d["seq"], d["text"]) for d in first["deltas"]
                ]
                assert text_of(stream) == expected
                assert stream["end"]["message"]["text"] == expected
            start, end = first["start"], first["end"]
            assert start["requested_by"] == "alice"
            assert start["agent"]["id"] == "agent:assistant"
            message = end["message"]
            assert message["kind"] == "agent" and message["offset"] == 2
            assert message["meta"]["stream_id"] == start["stream_id"]
            assert message["meta"]["cancelled"] is False
            metrics = message["meta"]["metrics"]
            assert metrics["tokens"] == len(TOKENS) and metrics["ttft_ms"] is not None

            # the question reached the model with the system prompt
            body = fake.chat_requests()[0].body
            assert body["stream"] is True and body["model"] == "fake-model"
            assert body["messages"][0]["role"] == "system"
            assert body["messages"][-1] == {"role": "user", "content": "count for me"}

            # persisted with its offset: history shows the answer after the question
            async with server.http("alice") as http:
                page = (await http.get("/api/rooms/lobby/messages")).json()
            assert [m["text"] for m in page["messages"]] == ["@assistant count for me", expected]


async def test_room_history_is_the_context_within_the_budget(make_server):
    async with FakeOpenAI(Script(tokens=["ok"])) as fake:
        config = {**upstream(fake), "assistant": {"context_tokens": 100}}
        async with make_server(plugin_config=config) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "x" * 2000, "old")  # too big for the budget
            await alice.say("lobby", "deploys are frozen", "m1")
            await alice.say("lobby", "@assistant are deploys frozen?", "q")
            await collect(alice)
            messages = fake.chat_requests()[0].body["messages"]
            contents = [m["content"] for m in messages]
            assert contents[-1] == "are deploys frozen?"
            assert "Alice: deploys are frozen" in contents
            assert not any("x" * 2000 in c for c in contents)


async def test_first_token_delay_and_slow_tokens_still_stream(make_server):
    script = Script(tokens=["a ", "b ", "c"], first_delay=0.3, token_delay=0.1)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "@assistant slowly", "q")
            stream = await collect(alice)
            # slow tokens are not held back for coalescing: one delta each
            assert [d["text"] for d in stream["deltas"]] == ["a ", "b ", "c"]
            metrics = stream["end"]["message"]["meta"]["metrics"]
            assert metrics["ttft_ms"] >= 300


async def test_cancel_by_the_asker_closes_upstream_and_ends_for_everyone(make_server):
    script = Script(tokens=[f"w{i} " for i in range(400)], token_delay=0.02)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice, bob, carol = [await server.client(n) for n in ("alice", "bob", "carol")]
            for client in (alice, bob, carol):
                await client.join("lobby")
            await alice.say("lobby", "@assistant talk for a long time", "q")
            seen = await deltas_seen(bob, 3)
            stream_id = seen[0]["stream_id"]
            await alice.send(
                {"type": "cancel", "room": "lobby", "stream_id": stream_id, "id": "stop"}
            )
            ends = []
            for client in (alice, bob, carol):
                stream = await collect(client)
                ends.append(stream["end"])
            assert all(e["type"] == "stream_end" and e["cancelled"] for e in ends)
            request = fake.chat_requests()[0]
            await asyncio.wait_for(request.ended.wait(), 5)
            assert request.client_closed and not request.completed
            assert request.sent < 400
            message = ends[0]["message"]
            assert message["meta"]["cancelled"] is True
            assert message["meta"]["metrics"]["cancelled"] is True
            streamed = text_of({"deltas": [f for f in seen if f["type"] == "stream_delta"]})
            assert message["text"].startswith(streamed) and len(message["text"]) < len(
                "".join(script.tokens)
            )
            assert any(f["type"] == "ack" and f["id"] == "stop" for f in alice.seen)
            async with server.http("bob") as http:
                page = (await http.get("/api/rooms/lobby/messages")).json()
            stored = page["messages"][-1]
            assert stored["text"] == message["text"] and stored["meta"]["cancelled"] is True


async def test_who_may_cancel(make_server):
    script = Script(tokens=[f"w{i} " for i in range(300)], token_delay=0.02)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice, carol, owner = [await server.client(n) for n in ("alice", "carol", "owner")]
            for client in (alice, carol, owner):
                await client.join("lobby")
            await alice.say("lobby", "@assistant go on", "q")
            stream_id = (await deltas_seen(carol, 1))[0]["stream_id"]

            await carol.send({"type": "cancel", "room": "lobby", "stream_id": stream_id, "id": "c"})
            refused = await carol.expect(lambda f: f.get("id") == "c", skip=_stream_and_noise)
            assert (refused["type"], refused["code"]) == ("error", "forbidden")

            await carol.send({"type": "cancel", "room": "lobby", "stream_id": "nope", "id": "u"})
            unknown = await carol.expect(lambda f: f.get("id") == "u", skip=_stream_and_noise)
            assert unknown["code"] == "unknown_stream"

            outsider = await server.client("dave")
            await outsider.send({"type": "cancel", "room": "lobby", "stream_id": stream_id})
            assert (await outsider.expect("error"))["code"] == "not_joined"

            # still streaming after the refusals; the room's owner may stop it
            await deltas_seen(alice, 2)
            await owner.send({"type": "cancel", "room": "lobby", "stream_id": stream_id})
            end = (await collect(alice))["end"]
            assert end["type"] == "stream_end" and end["cancelled"] is True


async def test_cancel_over_http_delete(make_server):
    script = Script(tokens=[f"w{i} " for i in range(300)], token_delay=0.02)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "@assistant go", "q")
            stream_id = (await deltas_seen(alice, 1))[0]["stream_id"]
            async with server.http("carol") as http:
                resp = await http.delete(f"/api/rooms/lobby/streams/{stream_id}")
                assert resp.status_code == 403, resp.text
                assert (await http.delete("/api/rooms/lobby/streams/nope")).status_code == 404
            async with server.http("alice") as http:
                resp = await http.delete(f"/api/rooms/lobby/streams/{stream_id}")
                assert resp.status_code == 202, resp.text
            end = (await collect(alice))["end"]
            assert end["cancelled"] is True
            request = fake.chat_requests()[0]
            await asyncio.wait_for(request.ended.wait(), 5)
            assert request.client_closed


async def test_a_cancel_naming_an_idle_room_stops_nothing(make_server):
    """The stream must run in the room the cancel names, whoever sends it and whether or not
    that room has live subscribers here; a guest's cancel through an idle room is a 404."""
    script = Script(tokens=[f"w{i} " for i in range(300)], token_delay=0.02)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            await server.create_room("idle")  # public, nobody in it
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "@assistant go", "q")
            stream_id = (await deltas_seen(alice, 1))[0]["stream_id"]
            async with server.http() as anonymous:
                guest = (await anonymous.post("/api/guest-token")).json()["token"]
            headers = {"Authorization": f"Bearer {guest}"}
            async with server.http() as http:
                resp = await http.delete(f"/api/rooms/idle/streams/{stream_id}", headers=headers)
                assert resp.status_code == 404, resp.text
                resp = await http.delete(f"/api/rooms/lobby/streams/{stream_id}", headers=headers)
                assert resp.status_code == 403, resp.text
            async with server.http("alice") as http:  # even the asker names the right room
                resp = await http.delete(f"/api/rooms/idle/streams/{stream_id}")
                assert resp.status_code == 404, resp.text
            end = (await collect(alice))["end"]
            assert end["type"] == "stream_end" and not end.get("cancelled")
            assert end["message"]["text"] == "".join(script.tokens)


FAILURES = {
    "drop": (Script(tokens=TOKENS, drop_after=5), "upstream_error"),
    "malformed": (Script(tokens=TOKENS, malformed_after=5), "bad_response"),
    "timeout": (Script(tokens=TOKENS, hang_after=5), "upstream_timeout"),
}


async def _failure_case(make_server, name: str) -> None:
    script, code = FAILURES[name]
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake, timeout=0.5)) as server:
            await assistant_room(server)
            alice, bob = await server.client("alice"), await server.client("bob")
            await alice.join("lobby")
            await bob.join("lobby")
            await alice.say("lobby", "@assistant fail please", "q")
            stream = await collect(bob)
            end = stream["end"]
            assert end["type"] == "stream_error", end
            assert end["code"] == code, end
            partial = "".join(TOKENS[:5])
            assert text_of(stream) == partial
            assert end["message"]["text"] == partial  # the partial answer is kept
            assert end["message"]["meta"]["error"]["code"] == code
            await asyncio.wait_for(fake.chat_requests()[0].ended.wait(), 5)

            # the room goes on: plain messages and the next answer work
            fake.script = Script(tokens=["fine"])
            await alice.say("lobby", "still here?", "m2")
            assert (await bob.expect("message"))["message"]["text"] == "still here?"
            await alice.say("lobby", "@assistant again", "q2")
            again = await collect(bob)
            assert again["end"]["type"] == "stream_end"
            assert again["end"]["message"]["text"] == "fine"


async def test_upstream_drop_mid_stream(make_server):
    await _failure_case(make_server, "drop")


async def test_upstream_malformed_chunk(make_server):
    await _failure_case(make_server, "malformed")


async def test_upstream_timeout_mid_stream(make_server):
    await _failure_case(make_server, "timeout")


async def test_upstream_error_status_before_any_token(make_server):
    async with FakeOpenAI(Script(status=500)) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "@assistant hi", "q")
            end = (await collect(alice))["end"]
            assert end["type"] == "stream_error" and end["code"] == "upstream_error"
            assert "500" in end["detail"]
            assert "message" not in end  # nothing streamed, nothing persisted
            assert len(fake.chat_requests()) == 1  # not retried behind the room's back


async def test_unknown_provider_is_a_clear_stream_error(make_server):
    async with make_server(plugin_config={"assistant": {"provider": "nope"}}) as server:
        await assistant_room(server)
        alice = await server.client("alice")
        await alice.join("lobby")
        await alice.say("lobby", "@assistant hi", "q")
        end = (await collect(alice))["end"]
        assert end["type"] == "stream_error" and end["code"] == "no_provider"
        assert "nope" in end["detail"]


async def test_offline_provider_answers_by_default(server):
    await assistant_room(server)
    alice = await server.client("alice")
    await alice.join("lobby")
    await alice.say("lobby", "@assistant   hello   there", "q")
    stream = await collect(alice)
    expected = "[offline model] You said: hello there"
    assert text_of(stream) == expected == stream["end"]["message"]["text"]
    await alice.send({"type": "command", "room": "lobby", "text": "/ask what now?", "id": "a"})
    stream = await collect(alice)
    assert stream["end"]["message"]["text"] == "[offline model] You said: what now?"


async def test_assistant_stays_quiet_where_it_is_not_enabled(server):
    await server.create_room("quiet")
    alice = await server.client("alice")
    await alice.join("quiet")
    await alice.say("quiet", "@assistant are you there?", "q")
    assert [f for f in await alice.silent_for(0.5) if f["type"].startswith("stream")] == []


async def test_joining_mid_stream_gets_the_text_so_far_then_the_rest(make_server):
    script = Script(tokens=[f"w{i} " for i in range(40)], token_delay=0.02)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "@assistant stream", "q")
            await deltas_seen(alice, 3)
            dave = await server.client("dave")
            joined = await dave.join("lobby")
            [snapshot] = joined["streams"]
            assert snapshot["seq"] >= 3 and snapshot["requested_by"] == "alice"
            rest = await collect(dave)
            assert all(d["seq"] > snapshot["seq"] for d in rest["deltas"])
            seqs = [snapshot["seq"]] + [d["seq"] for d in rest["deltas"]]
            assert seqs == list(range(snapshot["seq"], snapshot["seq"] + len(seqs)))
            final = rest["end"]["message"]["text"]
            assert snapshot["text"] + text_of(rest) == final == "".join(script.tokens)


async def test_joining_an_empty_room_mid_stream_gets_the_snapshot(make_server):
    script = Script(tokens=[f"w{i} " for i in range(40)], token_delay=0.02)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            admin = await assistant_room(server)
            await admin.send({"type": "leave", "room": "lobby"})
            await admin.expect("left", skip=("ping", "presence", "event"))
            async with server.http("alice") as http:  # nobody is in the room: asked over REST
                resp = await http.post("/api/rooms/lobby/messages", json={"text": "@assistant hi"})
                assert resp.status_code == 201
            request = await fake.wait_for_request()
            await eventually(lambda: request.sent >= 5, what="five tokens to be sent")
            dave = await server.client("dave")
            joined = await dave.join("lobby")
            [snapshot] = joined["streams"]
            assert snapshot["text"]
            rest = await collect(dave)
            assert snapshot["text"] + text_of(rest) == "".join(script.tokens)


async def test_sse_feed_carries_the_same_stream(make_server):
    async with FakeOpenAI(Script(tokens=TOKENS, token_delay=0.002)) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "before", "m0")
            token = server.token("bob")
            events: list[tuple[str, str | None, dict]] = []
            ready = asyncio.Event()

            async def read_sse() -> None:
                headers = {"Authorization": f"Bearer {token}"}
                async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
                    url = "/api/rooms/lobby/events?since=0"
                    async with http.stream("GET", url, headers=headers) as resp:
                        assert resp.status_code == 200
                        assert resp.headers["content-type"].startswith("text/event-stream")
                        assert "no-store" in resp.headers["cache-control"]
                        kind, ident = None, None
                        async for line in resp.aiter_lines():
                            if line.startswith("event: "):
                                kind = line[7:]
                            elif line.startswith("id: "):
                                ident = line[4:]
                            elif line.startswith("data: "):
                                events.append((kind, ident, json.loads(line[6:])))
                                ready.set()
                                if kind in ("stream_end", "stream_error"):
                                    return
                            elif line == "":
                                kind, ident = None, None

            reader = asyncio.create_task(read_sse())
            await asyncio.wait_for(ready.wait(), 5)
            await alice.say("lobby", "@assistant over sse", "q")
            ws = await collect(alice)
            await asyncio.wait_for(reader, 10)
            kinds = [k for k, _, _ in events]
            assert kinds[0] == "joined"
            replayed = events[1]
            assert replayed[0] == "message" and replayed[1] == "1"  # offset as event id
            assert replayed[2]["message"]["text"] == "before"
            deltas = [d for k, _, d in events if k == "stream_delta"]
            assert [(d["seq"], d["text"]) for d in deltas] == [
                (d["seq"], d["text"]) for d in ws["deltas"]
            ]
            assert events[-1][2]["message"]["text"] == "".join(TOKENS)


async def test_stream_metrics_endpoint(server):
    await assistant_room(server)
    alice = await server.client("alice")
    await alice.join("lobby")
    await alice.say("lobby", "@assistant hi", "q")
    await collect(alice)
    async with server.http("alice") as http:
        assert (await http.get("/api/streams/metrics")).status_code == 403
    async with server.http("root", admin=True) as http:
        report = (await http.get("/api/streams/metrics")).json()
    assert report["streams"] == 1 and report["cancelled"] == 0
    assert report["recent"][0]["tokens"] == 5 and report["ttft_ms_p50"] is not None


_stream_and_noise = (
    "ping",
    "presence",
    "typing",
    "message",
    *("stream_start", "stream_delta", "stream_end", "stream_error"),
)


async def test_the_provider_reuses_its_connection_between_answers(make_server):
    async with FakeOpenAI(Script(tokens=["a ", "b"])) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            for i in range(3):
                await alice.say("lobby", f"@assistant {i}", f"q{i}")
                assert (await collect(alice))["end"]["message"]["text"] == "a b"
            assert len(fake.chat_requests()) == 3
            assert fake.connections == 1


async def test_a_model_too_slow_to_start_times_out_and_is_disconnected(make_server):
    async with FakeOpenAI(Script(tokens=["late"], first_delay=5)) as fake:
        async with make_server(
            plugin_config=upstream(fake), stream_first_token_timeout=0.3
        ) as server:
            await assistant_room(server)
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "@assistant quick!", "q")
            stream = await collect(alice)
            end = stream["end"]
            assert (end["type"], end["code"]) == ("stream_error", "upstream_timeout")
            assert "first token" in end["detail"] and "message" not in end
            assert stream["deltas"] == []
            request = fake.chat_requests()[0]
            await asyncio.wait_for(request.ended.wait(), 5)
            assert request.client_closed and request.sent == 0
