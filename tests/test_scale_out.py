"""Several hub processes sharing PostgreSQL and Redis behave as one hub."""

from __future__ import annotations

import asyncio

import httpx

from tests.plugin_support import command, frame_where, room_event
from tests.procs import PrivateRedis, cluster, token
from tests.support import eventually


async def _create_room(proc, room: str) -> None:
    async with httpx.AsyncClient(
        base_url=proc.http_url, headers={"Authorization": f"Bearer {token('owner')}"}
    ) as http:
        assert (await http.post("/api/rooms", json={"id": room})).status_code == 201


async def _messages(client, count: int, timeout: float = 10) -> list[dict]:
    frames = [
        await client.expect("message", timeout=timeout, skip=("ping", "presence", "typing", "ack"))
        for _ in range(count)
    ]
    return [f["message"] for f in frames]


async def test_three_replicas_deliver_every_message_once_in_one_order(tmp_path):
    async with cluster(tmp_path, 3) as replicas:
        await _create_room(replicas[0], "ops")
        clients = []
        for i in range(6):
            client = await replicas[i % 3].client(f"user{i}")
            await client.join("ops")
            clients.append(client)

        async def chatter(i: int, client) -> None:
            for j in range(5):
                await client.send(
                    {"type": "send", "room": "ops", "text": f"{i}.{j}", "id": f"{i}-{j}"}
                )

        await asyncio.gather(*(chatter(i, c) for i, c in enumerate(clients)))
        seen = await asyncio.gather(*(_messages(c, 30) for c in clients))
        orders = [[(m["offset"], m["text"]) for m in s] for s in seen]
        assert [o for o, _ in orders[0]] == list(range(1, 31))  # gap-free, each once
        assert all(order == orders[0] for order in orders)  # the same order everywhere
        assert sorted(t for _, t in orders[0]) == sorted(
            f"{i}.{j}" for i in range(6) for j in range(5)
        )
        for client in clients:
            assert [f for f in await client.silent_for(0.2) if f["type"] == "message"] == []

        # every replica reports the same presence
        snapshots = []
        for proc in replicas:
            probe = await proc.client(f"probe-{proc.port}")
            joined = await probe.join("ops")
            snapshots.append({p["user"]["id"] for p in joined["presence"]} - {f"probe-{proc.port}"})
            await probe.close()
        assert all(s == {f"user{i}" for i in range(6)} for s in snapshots)

        # an admin enables a plugin through one replica: it answers on all three at once
        headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
        async with httpx.AsyncClient(base_url=replicas[0].http_url, headers=headers) as http:
            resp = await http.put("/api/rooms/ops/plugins/echo", json={"enabled": True})
            assert resp.status_code == 200
        for i, client in enumerate(clients[:3]):  # one client on each replica
            await frame_where(client, room_event("ops", "plugin_enabled", "echo"))
            assert (await command(client, "ops", f"/echo from {i}", f"e{i}"))["text"] == f"from {i}"


async def test_a_killed_replicas_clients_resume_on_another_without_loss(tmp_path):
    async with cluster(tmp_path, 2) as (doomed, survivor):
        await _create_room(survivor, "ops")
        writer = await survivor.client("writer")
        await writer.join("ops")
        victim = await doomed.client("victim")
        await victim.join("ops")
        for i in range(10):
            await writer.say("ops", f"before {i}", f"b{i}")
        got = await _messages(victim, 10)
        last = got[-1]["offset"]

        doomed.kill()
        for i in range(10):  # keeps going while the victim is cut off
            await writer.say("ops", f"during {i}", f"d{i}")
        victim = await survivor.client("victim")
        joined = await victim.join("ops", since=last)
        assert joined["recovered"] and joined["replayed"] == 10
        for i in range(5):
            await writer.say("ops", f"after {i}", f"a{i}")
        rest = await _messages(victim, 15)
        assert [m["offset"] for m in got + rest] == list(range(1, 26))
        assert [m["text"] for m in rest] == [f"during {i}" for i in range(10)] + [
            f"after {i}" for i in range(5)
        ]


async def test_users_of_a_dead_replica_go_offline_within_the_presence_ttl(tmp_path):
    async with cluster(tmp_path, 2, LYDIAN_PRESENCE_TTL="1.5") as (doomed, survivor):
        await _create_room(survivor, "ops")
        watcher = await survivor.client("watcher")
        await watcher.join("ops")
        ghost = await doomed.client("ghost")
        await ghost.join("ops")
        online = await watcher.expect(
            lambda f: f["type"] == "presence" and f["user"]["id"] == "ghost"
        )
        assert online["status"] == "online"
        doomed.kill()
        start = asyncio.get_running_loop().time()
        offline = await watcher.expect(
            lambda f: f["type"] == "presence" and f["user"]["id"] == "ghost", timeout=10
        )
        assert offline["status"] == "offline"
        assert asyncio.get_running_loop().time() - start < 1.5 + 1.5  # ttl + one reap period
        probe = await survivor.client("probe")
        assert {p["user"]["id"] for p in (await probe.join("ops"))["presence"]} == {
            "watcher",
            "probe",
        }


async def test_the_room_goes_on_while_redis_restarts(tmp_path):
    redis = PrivateRedis()
    await redis.start()
    try:
        async with cluster(tmp_path, 2, redis_url=redis.url) as (one, two):
            await _create_room(one, "ops")
            alice = await one.client("alice")
            bob = await two.client("bob")
            await alice.join("ops")
            await bob.join("ops")
            await alice.say("ops", "hello", "h")
            assert (await bob.expect("message"))["message"]["text"] == "hello"

            redis.stop()
            acked = [await alice.say("ops", f"outage {i}", f"o{i}") for i in range(5)]
            assert [a["offset"] for a in acked] == [2, 3, 4, 5, 6]  # the store keeps accepting
            await redis.start()
            # bob's replica resyncs from the store once Redis is back: nothing lost, no dupes
            got = await _messages(bob, 5, timeout=15)
            assert [m["text"] for m in got] == [f"outage {i}" for i in range(5)]
            await bob.say("ops", "back to normal", "n")
            texts = [m["text"] for m in await _messages(alice, 7, timeout=10)]
            assert texts[-1] == "back to normal" and texts.count("outage 0") == 1
    finally:
        redis.stop()


async def test_serve_with_workers_shares_one_port_and_rooms(tmp_path):
    from tests.procs import STARTUP_TIMEOUT, HubProcess, cluster_env, pg_schema

    async with pg_schema() as db:
        env = cluster_env(db, LYDIAN_WORKERS="2")
        proc = await HubProcess(env, tmp_path).start()  # returns once one worker answers
        try:
            pids: set[int] = set()

            async def both_workers_up() -> bool:
                async with httpx.AsyncClient() as http:  # a new connection each time
                    pids.add((await http.get(f"{proc.http_url}/healthz")).json()["pid"])
                return len(pids) == 2

            await eventually(both_workers_up, STARTUP_TIMEOUT, 0.05, what="the second worker")
            await _create_room(proc, "ops")
            clients = []
            nodes: set[str] = set()
            while len(nodes) < 2:  # connect in bursts until both workers serve some
                assert len(clients) < 100, f"every connection went to one worker: {nodes}"
                burst = await asyncio.gather(
                    *(proc.client(f"user{len(clients) + i}") for i in range(10))
                )
                for client in burst:
                    await client.join("ops")
                    nodes.add(client.welcome["session"].split("-")[0])
                clients.extend(burst)
            for i, client in enumerate(clients):
                await client.send({"type": "send", "room": "ops", "text": f"m{i}", "id": f"m{i}"})
            n = len(clients)
            seen = await asyncio.gather(*(_messages(c, n) for c in clients))
            assert all([m["offset"] for m in s] == list(range(1, n + 1)) for s in seen)
            assert all([m["id"] for m in s] == [m["id"] for m in seen[0]] for s in seen)
        finally:
            proc.stop()


async def test_kill_9_mid_stream_ends_the_answer_everywhere_with_nothing_lost(tmp_path):
    from tests.fakes.openai_server import Script
    from tests.stream_support import assistant_cluster, deltas_seen

    script = Script(tokens=[f"w{i} " for i in range(500)], token_delay=0.02)
    replicas = assistant_cluster(tmp_path, script, LYDIAN_STREAM_IDLE_TIMEOUT="1")
    async with replicas as (_, (doomed, survivor)):
        headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
        alice = await doomed.client("alice")  # the stream will run on her replica
        bob = await survivor.client("bob")
        await alice.join("ops")
        await bob.join("ops")
        await alice.say("ops", "@assistant talk for a while", "q")
        question = (await alice.expect("message"))["message"]
        seen = await deltas_seen(bob, 5)
        stream_id = seen[0]["stream_id"]

        doomed.kill()  # mid-answer: no stream_end will ever come from its owner
        alice = await survivor.client("alice")
        await alice.join("ops", since=question["offset"])

        def lost(f: dict) -> bool:
            return f["type"] == "stream_error" and f["stream_id"] == stream_id

        skip = ("ping", "presence", "typing", "message", "stream_start", "stream_delta")
        ends = [await c.expect(lost, timeout=15, skip=skip) for c in (bob, alice)]
        assert all(e["code"] == "replica_lost" for e in ends)
        partial = ends[0]["message"]
        assert partial["text"].startswith("w0 w1 w2") and partial["meta"]["interrupted"]
        assert ends[1]["message"]["id"] == partial["id"]

        # the survivor's history has the question and the partial answer, once each
        async with httpx.AsyncClient(base_url=survivor.http_url, headers=headers) as http:
            page = (await http.get("/api/rooms/ops/messages")).json()["messages"]
        assert [(m["offset"], m["kind"]) for m in page] == [(1, "user"), (2, "agent")]
        assert page[1]["id"] == partial["id"]
        both = [f for c in (alice, bob) for f in c.seen if f["type"] == "message"]
        assert sorted({m["message"]["offset"] for m in both}) == [1, 2]
        for client in (alice, bob):
            offsets = [f["message"]["offset"] for f in client.seen if f["type"] == "message"]
            assert len(offsets) == len(set(offsets))  # nothing doubled
