"""Streams across replicas (Redis broker): deltas reach every replica, a cancel sent to
another replica than the one running the stream still stops it and closes the upstream."""

from __future__ import annotations

import asyncio

import httpx

from tests.fakes.openai_server import Script
from tests.procs import token
from tests.stream_support import assistant_cluster, collect, deltas_seen


async def test_a_cancel_sent_to_another_replica_stops_the_stream(tmp_path):
    script = Script(tokens=[f"w{i} " for i in range(400)], token_delay=0.02)
    async with assistant_cluster(tmp_path, script) as (fake, (one, two)):
        alice_one = await one.client("alice")
        alice_two = await two.client("alice")
        bob_two = await two.client("bob")
        for client in (alice_one, alice_two, bob_two):
            await client.join("ops")
        await alice_one.say("ops", "@assistant keep talking", "q")  # runs on replica one
        seen = await deltas_seen(bob_two, 3)  # ...and streams to replica two
        stream_id = seen[0]["stream_id"]

        await bob_two.send({"type": "cancel", "room": "ops", "stream_id": stream_id, "id": "b"})
        refused = await bob_two.expect(
            lambda f: f.get("id") == "b",
            skip=("ping", "presence", "message", "stream_delta", "stream_start"),
        )
        assert refused["code"] == "forbidden"

        await alice_two.send({"type": "cancel", "room": "ops", "stream_id": stream_id, "id": "a"})
        ends = [(await collect(c))["end"] for c in (alice_one, bob_two)]
        assert all(e["type"] == "stream_end" and e["cancelled"] for e in ends)
        request = fake.chat_requests()[0]
        await asyncio.wait_for(request.ended.wait(), 5)
        assert request.client_closed and request.sent < 400
        assert ends[0]["message"]["text"] == ends[1]["message"]["text"]


async def test_a_cancel_on_a_replica_that_does_not_follow_the_room_is_checked(tmp_path):
    """Replica two has no subscriber in 'ops': the running replica still checks the room and
    the canceller, and a stream that runs nowhere is a 404, not a 202."""
    script = Script(tokens=[f"w{i} " for i in range(400)], token_delay=0.02)
    async with assistant_cluster(tmp_path, script) as (fake, (one, two)):
        alice = await one.client("alice")
        await alice.join("ops")
        await alice.say("ops", "@assistant keep talking", "q")  # runs on replica one
        stream_id = (await deltas_seen(alice, 2))[0]["stream_id"]

        def as_user(user: str) -> httpx.AsyncClient:
            auth = {"Authorization": f"Bearer {token(user)}"}
            return httpx.AsyncClient(base_url=two.http_url, headers=auth, timeout=10)

        async with as_user("root") as root:  # an idle public room on replica two
            assert (await root.post("/api/rooms", json={"id": "idle"})).status_code == 201
        async with as_user("bob") as bob:
            resp = await bob.delete(f"/api/rooms/ops/streams/{stream_id}")
            assert resp.status_code == 403, resp.text
            resp = await bob.delete(f"/api/rooms/idle/streams/{stream_id}")
            assert resp.status_code == 404, resp.text
            assert (await bob.delete("/api/rooms/ops/streams/nope")).status_code == 404
        await deltas_seen(alice, 2)  # still streaming after the refusals
        async with as_user("alice") as asker:
            resp = await asker.delete(f"/api/rooms/ops/streams/{stream_id}")
            assert resp.status_code == 202, resp.text
        end = (await collect(alice))["end"]
        assert end["type"] == "stream_end" and end["cancelled"] is True
        request = fake.chat_requests()[0]
        await asyncio.wait_for(request.ended.wait(), 5)
        assert request.client_closed


async def test_joining_mid_stream_on_a_replica_where_the_room_was_not_live(tmp_path):
    script = Script(tokens=[f"w{i} " for i in range(60)], token_delay=0.02, pause_after=10)
    async with assistant_cluster(tmp_path, script) as (_, (one, two)):
        alice = await one.client("alice")
        await alice.join("ops")
        await alice.say("ops", "@assistant tell me", "q")  # runs on replica one
        await deltas_seen(alice, 5)
        dave = await two.client("dave")  # nobody follows "ops" on replica two yet
        joined = await dave.join("ops")
        script.resume.set()  # the answer goes on only once dave has joined: mid-stream
        known = {s["stream_id"]: s for s in joined.get("streams", [])}
        rest = await collect(dave)
        if not known:  # the seed came after joined: a start with the text so far
            assert rest["start"] is not None and rest["deltas"][0]["seq"] > 1
            text, seq = "", 0
        else:
            [snap] = known.values()
            text, seq = snap["text"], snap["seq"]
        seqs = [d["seq"] for d in rest["deltas"]]
        assert seqs == sorted(seqs) and all(s > seq for s in seqs)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        final = rest["end"]["message"]["text"]
        assert text + "".join(d["text"] for d in rest["deltas"]) == final
        assert final == "".join(script.tokens)
