"""Abuse limits (issue 13, item 5): bucket math with an injected clock, spec parsing, and each
limit refused by a real hub (embedded: memory buckets) with ``rate_limited`` / HTTP 429."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
from websockets.exceptions import ConnectionClosed

from hub.access.limits import (
    Bucket,
    Limits,
    LimitSpecError,
    MemoryBuckets,
    Rate,
    parse_counts,
    parse_rates,
    role_of,
)
from hub.base.auth import Identity
from hub.base.config import load_settings
from tests.procs import PrivateRedis
from tests.support import Client, eventually
from tests.support import test_settings as make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ bucket math


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    rate = Rate(rate=2.0, burst=3.0)
    bucket = Bucket(rate.burst, 0.0)
    assert [bucket.take(rate, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(rate, 0.0) == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert bucket.take(rate, 0.25) == pytest.approx(0.25)  # a refusal takes nothing
    assert bucket.take(rate, 0.5) == 0.0
    assert bucket.take(rate, 0.5) == pytest.approx(0.5)
    assert [bucket.take(rate, 100.0) for _ in range(4)][-1] == pytest.approx(0.5)  # never > burst


def test_costs_and_debt() -> None:
    rate = Rate(rate=10.0, burst=100.0)  # e.g. bytes
    bucket = Bucket(rate.burst, 0.0)
    assert bucket.take(rate, 0.0, cost=60) == 0.0
    assert bucket.take(rate, 0.0, cost=60) == pytest.approx(2.0)  # 20 missing at 10/s
    assert bucket.take(rate, 0.0, cost=60, force=True) == 0.0  # known afterwards: owed
    assert bucket.tokens == pytest.approx(-20.0)
    assert bucket.take(rate, 1.0, cost=0) == pytest.approx(1.0)  # in debt until paid back
    assert bucket.take(rate, 2.0, cost=0) == 0.0


def test_memory_buckets_are_per_key_and_pruned_when_full_again() -> None:
    clock = Clock()
    buckets = MemoryBuckets(clock)
    rate = Rate(rate=1.0, burst=2.0)
    assert buckets.take("a", rate) == buckets.take("a", rate) == 0.0
    assert buckets.take("a", rate) == pytest.approx(1.0)
    assert buckets.take("b", rate) == 0.0
    clock.now += 1.0
    buckets.prune()
    assert set(buckets.buckets) == {"a"}  # b is full again; a is not yet
    clock.now += 1.0
    buckets.prune()
    assert buckets.buckets == {}


def test_limits_take_now_per_role_and_off(tmp_path) -> None:
    clock = Clock()
    settings = make_settings(str(tmp_path), limit_messages="guest=1/m:1,user=2/m,admin=off")
    limits = Limits(settings, clock=clock)
    assert limits.local
    assert limits.take_now("messages", "guest", "g") == 0.0
    assert limits.take_now("messages", "guest", "g") == pytest.approx(60.0)
    assert [limits.take_now("messages", "user", "u") for _ in range(3)][-1] == pytest.approx(30)
    assert all(limits.take_now("messages", "admin", "a") == 0.0 for _ in range(1000))
    assert limits.take_now("messages", "agent", "x") == 0.0  # not named, no "*": no limit
    clock.now += 60
    assert limits.take_now("messages", "guest", "g") == 0.0
    off = Limits(make_settings(str(tmp_path), limits=False, limit_messages="user=1/m:1"))
    assert all(off.take_now("messages", "user", "u") == 0.0 for _ in range(10))


# ------------------------------------------------------------------ specs


def test_specs_parse() -> None:
    rates = parse_rates("guest=5/s:10, user=20/m, *=1k/h, admin=off", "limit_x")
    assert rates["guest"] == Rate(rate=5.0, burst=10.0)
    assert rates["user"] == Rate(rate=20 / 60, burst=20.0)
    assert rates["agent"] == Rate(rate=1024 / 3600, burst=1024.0)  # "*" fills the others
    assert rates["admin"] is None
    assert parse_rates("2M/d", "limit_x")["guest"] == Rate(rate=2 * 1024**2 / 86400, burst=2**21)
    assert parse_counts("guest=5,user=off", "limit_sockets") == {
        "guest": 5,
        "user": None,
        "admin": None,
        "agent": None,
    }
    assert role_of(Identity(id="a", name="a", roles=("admin", "guest"))) == "admin"
    assert role_of(Identity(id="a", name="a", roles=("agent",))) == "agent"
    assert role_of(Identity(id="a", name="a", roles=("guest",))) == "guest"
    assert role_of(Identity(id="a", name="a")) == "user"


@pytest.mark.parametrize(
    "setting,value",
    [
        ("limit_messages", "user=5"),
        ("limit_messages", "user=5/w"),
        ("limit_messages", "user=0/s"),
        ("limit_messages", "user=-1/s"),
        ("limit_messages", "root=5/s"),
        ("limit_messages", "user=5/s:lots"),
        ("limit_upload_bytes", "user=5T/d"),
        ("limit_sockets", "user=1/s"),
        ("limit_sockets", "user=0"),
        ("room_creators", "everyone"),
        ("limit_strikes", 0),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_setting(tmp_path, setting, value) -> None:
    settings = make_settings(str(tmp_path), **{setting: value})
    with pytest.raises(LimitSpecError) as info:
        Limits(settings)
    message = str(info.value)
    assert f"LYDIAN_{setting.upper()}" in message and "\n" not in message


def test_lydian_serve_refuses_a_bad_limit_with_one_line(tmp_path) -> None:
    env = {**os.environ, "LYDIAN_DATA_DIR": str(tmp_path), "LYDIAN_LIMIT_MESSAGES": "user=lots"}
    env.pop("LYDIAN_CONFIG", None)
    done = subprocess.run(
        ["lydian", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "LYDIAN_LIMIT_MESSAGES" in done.stderr and "user=lots" in done.stderr


def test_the_defaults_parse_and_leave_room_for_people() -> None:
    limits = Limits(load_settings(env={}))
    for role in ("guest", "user"):
        rate = limits.rate("messages", role)
        assert rate is not None and rate.burst >= 10 and rate.rate >= 1.0
    assert limits.rate("messages", "agent") is None


# ------------------------------------------------------------------ the socket


async def _closed_code(client: Client, timeout: float = 5.0) -> int:
    """Read until the hub closes the socket; its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.recv(timeout=timeout)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def hello_accepted(ws_url: str, token: str) -> bool:
    """Whether a new socket with ``token`` is welcomed (it stays open) or refused (closed)."""
    client = await Client.connect(ws_url)
    await client.send({"type": "hello", "token": token})
    if (await client.recv())["type"] == "welcome":
        return True
    await client.close()
    return False


async def test_messages_over_the_user_limit_are_refused_and_the_socket_lives(make_server):
    limits = {"limit_messages": "user=1/m:3", "limit_messages_socket": "off"}
    async with make_server(**limits) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        for i in range(3):
            assert (await alice.say("lobby", f"m{i}", f"m{i}"))["offset"] == i + 1
        await alice.send({"type": "send", "room": "lobby", "text": "too many", "id": "m3"})
        error = await alice.expect("error", skip=("ping", "presence", "message"))
        assert error["code"] == "rate_limited"
        assert error["id"] == "m3" and error["room"] == "lobby"
        assert 50 < error["retry_after"] <= 60.0  # one token at 1/min, 3 just taken
        # the socket is kept: other frames still work, and nothing was stored
        await alice.send({"type": "history", "room": "lobby", "id": "h"})
        page = await alice.expect("history", skip=("ping", "presence", "message"))
        assert [m["text"] for m in page["messages"]] == ["m0", "m1", "m2"]
        # a second socket of the same user shares the user's budget
        again = await server.client("alice")
        await again.join("lobby")
        await again.send({"type": "send", "room": "lobby", "text": "x", "id": "y"})
        assert (await again.expect("error"))["code"] == "rate_limited"
        # another user is not affected
        bob = await server.client("bob")
        await bob.join("lobby")
        assert (await bob.say("lobby", "hi", "b0"))["offset"] == 4


async def test_the_socket_limit_holds_per_connection(make_server):
    limits = {"limit_messages": "off", "limit_messages_socket": "user=1/m:2"}
    async with make_server(**limits) as server:
        await server.create_room("lobby")
        first, second = await server.client("alice"), await server.client("alice")
        for client in (first, second):
            await client.join("lobby")
            await client.say("lobby", "a", "a")
            await client.say("lobby", "b", "b")
            await client.send({"type": "send", "room": "lobby", "text": "c", "id": "c"})
            error = await client.expect("error", skip=("ping", "presence", "message"))
            assert error["code"] == "rate_limited" and error["id"] == "c"


async def test_direct_messages_count_as_messages(make_server):
    async with make_server(limit_messages="user=1/m:1", limit_messages_socket="off") as server:
        await (await server.client("bob")).close()  # DMs go only to users the hub knows
        alice = await server.client("alice")
        await alice.send({"type": "direct", "to": "bob", "text": "hi", "id": "d1"})
        assert (await alice.expect("ack"))["id"] == "d1"
        await alice.send({"type": "direct", "to": "bob", "text": "again", "id": "d2"})
        error = await alice.expect("error", skip=("ping", "presence", "message"))
        assert error["code"] == "rate_limited" and error["id"] == "d2" and error["retry_after"]


async def test_commands_over_the_limit_are_refused(make_server):
    async with make_server(limit_commands="user=1/m:2", limit_commands_socket="off") as server:
        await server.create_room("ops")
        alice = await server.client("alice")
        await alice.join("ops")
        for ref in ("c1", "c2"):
            await alice.send({"type": "command", "room": "ops", "text": "/help", "id": ref})
            assert (await alice.expect("command_result"))["id"] == ref
        await alice.send({"type": "command", "room": "ops", "text": "/help", "id": "c3"})
        error = await alice.expect("error")
        assert error["code"] == "rate_limited"
        assert error["id"] == "c3" and error["room"] == "ops" and error["retry_after"] > 0


async def test_typing_over_the_limit_is_dropped_silently(make_server):
    async with make_server(limit_typing="user=1/m:1", limit_typing_socket="off") as server:
        await server.create_room("lobby")
        alice, bob = await server.client("alice"), await server.client("bob")
        await alice.join("lobby")
        await bob.join("lobby")
        for i in range(6):  # start, stop, start, ...: without a limit each start is relayed
            await alice.send({"type": "typing", "room": "lobby", "active": i % 2 == 0})
        await alice.say("lobby", "done", "m1")  # after the typing frames, in order
        seen = []
        while (frame := await bob.expect(lambda f: True))["type"] != "message":
            seen.append(frame)
        assert [f["active"] for f in seen if f["type"] == "typing"][:1] == [True]
        assert len([f for f in seen if f["type"] == "typing" and f["active"]]) == 1
        assert [f for f in alice.seen if f["type"] == "error"] == []


async def test_a_client_that_keeps_hammering_is_closed_with_1008(make_server):
    limits = {"limit_messages": "user=1/m:1", "limit_messages_socket": "off", "limit_strikes": 5}
    async with make_server(**limits) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        await alice.say("lobby", "ok", "ok")
        for i in range(10):
            try:
                await alice.send({"type": "send", "room": "lobby", "text": "x", "id": f"x{i}"})
            except ConnectionClosed:
                break
        assert await _closed_code(alice) == 1008
        refused = [f for f in alice.seen if f["type"] == "error"]
        assert len(refused) == 5 and {f["code"] for f in refused} == {"rate_limited"}
        stored = await server.hub.store.messages_after("lobby", 0, 100)
        assert [m.text for m in stored] == ["ok"]  # nothing after the close was processed


async def test_refusals_below_the_strike_limit_keep_the_socket(make_server):
    limits = {"limit_messages": "user=1/m:1", "limit_messages_socket": "off", "limit_strikes": 5}
    async with make_server(**limits) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        await alice.say("lobby", "ok", "ok")
        for i in range(4):
            await alice.send({"type": "send", "room": "lobby", "text": "x", "id": f"x{i}"})
            error = await alice.expect("error", skip=("ping", "presence", "message"))
            assert error["code"] == "rate_limited"
        await alice.send({"type": "history", "room": "lobby", "id": "h"})
        assert (await alice.expect("history"))["id"] == "h"


async def test_sockets_per_user_over_the_limit_close_with_1013(make_server):
    async with make_server(limit_sockets="user=2") as server:
        first, second = await server.client("alice"), await server.client("alice")
        third = await Client.connect(server.ws_url)
        await third.send({"type": "hello", "token": server.token("alice")})
        error = await third.expect("error")
        assert error["code"] == "rate_limited" and error["retry_after"] > 0
        assert await _closed_code(third) == 1013
        assert (await server.client("bob")).welcome  # other users are not affected
        await first.close()
        # the hub counts the closed socket out when it notices the close
        await eventually(
            lambda: hello_accepted(server.ws_url, server.token("alice")),
            what="a socket in the place of the closed one",
        )
        await second.send({"type": "history", "room": "nowhere", "id": "h"})
        assert (await second.expect("error"))["code"] == "unknown_room"


# ------------------------------------------------------------------ REST


def _assert_429(resp) -> None:
    assert resp.status_code == 429, resp.text
    assert int(resp.headers["Retry-After"]) >= 1
    body = resp.json()
    assert "too many" in body["detail"] and body["extra"]["retry_after"] > 0


async def test_rest_requests_per_user_get_429_with_retry_after(make_server):
    async with make_server(limit_rest="user=1/m:3") as server:
        async with server.http("alice") as alice, server.http("bob") as bob:
            for _ in range(3):
                assert (await alice.get("/api/rooms")).status_code == 200
            _assert_429(await alice.get("/api/rooms"))
            assert (await bob.get("/api/rooms")).status_code == 200
            assert (await alice.get("/healthz")).status_code == 200  # health is never limited


async def test_rest_requests_per_address_get_429(make_server):
    async with make_server(limit_rest_address="1/m:4", limit_rest="off") as server:
        for user in ("a", "b", "c", "d"):
            async with server.http(user) as client:
                assert (await client.get("/api/rooms")).status_code == 200
        async with server.http("e") as client:
            _assert_429(await client.get("/api/rooms"))
    async with make_server(limit_rest_address="1/m:3") as server:
        bad = {"Authorization": "Bearer not-a-token"}
        async with server.http() as anon:  # refused tokens count too (before authentication)
            for _ in range(3):
                assert (await anon.get("/api/rooms", headers=bad)).status_code == 401
            _assert_429(await anon.get("/api/rooms", headers=bad))
            assert (await anon.get("/healthz")).status_code == 200


async def test_guest_tokens_per_address(make_server):
    async with make_server(limit_guest_tokens="1/m:2") as server:
        async with server.http() as anon:
            for _ in range(2):
                assert (await anon.post("/api/guest-token")).status_code == 201
            _assert_429(await anon.post("/api/guest-token"))


async def test_rooms_created_per_user_and_who_may_create(make_server):
    async with make_server(limit_rooms="user=1/h:2") as server:
        async with server.http("alice") as alice, server.http("bob") as bob:
            assert (await alice.post("/api/rooms", json={"id": "r1"})).status_code == 201
            assert (await alice.post("/api/rooms", json={"id": "r2"})).status_code == 201
            _assert_429(await alice.post("/api/rooms", json={"id": "r3"}))
            assert (await bob.post("/api/rooms", json={"id": "r3"})).status_code == 201
        async with server.http() as anon:
            guest = (await anon.post("/api/guest-token")).json()["token"]
        headers = {"Authorization": f"Bearer {guest}"}
        async with server.http() as anon:
            refused = await anon.post("/api/rooms", json={"id": "g1"}, headers=headers)
            assert refused.status_code == 403
    async with make_server(room_creators="admin") as server:
        async with server.http("alice") as alice, server.http("root", admin=True) as root:
            refused = await alice.post("/api/rooms", json={"id": "r9"})
            assert refused.status_code == 403 and "admins" in refused.json()["detail"]
            assert (await root.post("/api/rooms", json={"id": "r9"})).status_code == 201


# ------------------------------------------------------------------ Redis down


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_redis_down_fails_open_to_local_limits(make_server):
    redis = PrivateRedis()
    await redis.start()
    try:
        limits = {"limit_messages": "user=1/m:6", "limit_messages_socket": "off"}
        async with make_server(redis_url=redis.url, **limits) as server:
            assert not server.hub.limits.local
            await server.create_room("lobby")
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "shared", "m0")
            assert server.hub.limits._redis_ok
            seen = Records()  # the app's logging config replaces root handlers (and caplog's)
            logging.getLogger("hub.access.limits").addHandler(seen)
            redis.stop()
            for i in range(1, 4):  # still acked, not refused, not hung
                ack = await alice.say("lobby", f"m{i}", f"m{i}")
                assert ack["offset"] == i + 1
            logging.getLogger("hub.access.limits").removeHandler(seen)
            warnings = [r.getMessage() for r in seen.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1 and "per replica" in warnings[0]
            await redis.start()  # back on the same port, so the hub shuts down cleanly
    finally:
        redis.stop()


# ------------------------------------------------------------------ uploads


async def _upload(client, room: str, data: bytes):
    return await client.post(
        f"/api/rooms/{room}/attachments", files={"file": ("notes.txt", data, "text/plain")}
    )


async def test_uploads_per_user_and_per_address(make_server):
    async with make_server(limit_uploads="user=1/h:2", limit_uploads_address="off") as server:
        await server.create_room("lobby")
        async with server.http("alice") as alice, server.http("bob") as bob:
            for _ in range(2):
                assert (await _upload(alice, "lobby", b"hello")).status_code == 201
            _assert_429(await _upload(alice, "lobby", b"hello"))
            assert (await _upload(bob, "lobby", b"hello")).status_code == 201
    async with make_server(limit_uploads="off", limit_uploads_address="1/h:2") as server:
        await server.create_room("hall")
        for user in ("a", "b"):
            async with server.http(user) as client:
                assert (await _upload(client, "hall", b"hello")).status_code == 201
        async with server.http("c") as client:
            _assert_429(await _upload(client, "hall", b"hello"))


async def test_upload_bytes_per_user_and_per_room_per_day(make_server):
    limits = {"limit_upload_bytes": "user=1k/d", "limit_upload_bytes_room": "off"}
    async with make_server(**limits) as server:
        await server.create_room("lobby")
        async with server.http("alice") as alice, server.http("bob") as bob:
            assert (await _upload(alice, "lobby", b"a" * 600)).status_code == 201
            refused = await _upload(alice, "lobby", b"a" * 600)
            _assert_429(refused)
            assert int(refused.headers["Retry-After"]) > 3600  # 200 bytes more at 1 KiB/day
            assert (await _upload(alice, "lobby", b"a" * 400)).status_code == 201  # what is left
            assert (await _upload(bob, "lobby", b"b" * 600)).status_code == 201
            too_big = await _upload(bob, "lobby", b"b" * 2000)  # never fits in a day's bytes
            assert too_big.status_code == 413
    limits = {"limit_upload_bytes": "off", "limit_upload_bytes_room": "1k/d"}
    async with make_server(**limits) as server:
        await server.create_room("full")
        await server.create_room("other")
        async with server.http("alice") as alice, server.http("bob") as bob:
            assert (await _upload(alice, "full", b"a" * 600)).status_code == 201
            _assert_429(await _upload(bob, "full", b"b" * 600))
            assert (await _upload(bob, "other", b"b" * 600)).status_code == 201


# ------------------------------------------------------------------ model use


async def _assistant_room(server, room: str = "lobby") -> None:
    await server.create_room(room)
    async with server.http("root", admin=True) as root:
        resp = await root.put(f"/api/rooms/{room}/plugins/assistant", json={"enabled": True})
        assert resp.status_code == 200, resp.text


def _chat(text: str = "hi") -> dict:
    return {"model": "assistant", "messages": [{"role": "user", "content": text}]}


async def test_v1_guests_are_off_by_default_and_users_have_a_request_budget(make_server):
    async with make_server(limit_model_requests="user=1/d:2") as server:
        async with server.http() as anon:
            guest = (await anon.post("/api/guest-token")).json()["token"]
            refused = await anon.post(
                "/v1/chat/completions", json=_chat(), headers={"Authorization": f"Bearer {guest}"}
            )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert "guests" in refused.json()["error"]["message"]
        async with server.http("alice") as alice:
            for _ in range(2):
                assert (await alice.post("/v1/chat/completions", json=_chat())).status_code == 200
            over = await alice.post("/v1/chat/completions", json=_chat())
            assert over.status_code == 429 and int(over.headers["Retry-After"]) > 3600
            error = over.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and "requests" in error["message"]
    async with make_server(models_for_guests=True) as server:
        async with server.http() as anon:
            guest = (await anon.post("/api/guest-token")).json()["token"]
            allowed = await anon.post(
                "/v1/chat/completions", json=_chat(), headers={"Authorization": f"Bearer {guest}"}
            )
        assert allowed.status_code == 200, allowed.text


async def test_v1_tokens_per_day_are_counted_after_the_answer(make_server):
    async with make_server(limit_model_tokens="user=100/d") as server:
        async with server.http("alice") as alice, server.http("bob") as bob:
            long = "word " * 200  # about 250 tokens of prompt, echoed back by the offline model
            assert (await alice.post("/v1/chat/completions", json=_chat(long))).status_code == 200
            over = await alice.post("/v1/chat/completions", json=_chat())
            assert over.status_code == 429 and "tokens" in over.json()["error"]["message"]
            assert (await bob.post("/v1/chat/completions", json=_chat())).status_code == 200


async def test_agent_mentions_by_guests_get_a_system_message_not_an_answer(make_server):
    async with make_server() as server:
        await _assistant_room(server)
        guest = await server.client(None)
        await guest.join("lobby")
        await guest.say("lobby", "@assistant spend the budget", "q")
        refusal = await guest.expect(
            lambda f: f["type"] == "message" and f["message"]["kind"] == "system",
            skip=("ping", "presence", "typing", "message"),
        )
        message = refusal["message"]
        assert message["meta"]["refused"] == "forbidden" and "guests" in message["text"]
        assert message["meta"]["to"] == guest.welcome["user"]["id"]
        assert [f for f in guest.seen if f["type"].startswith("stream")] == []


async def test_ask_over_the_model_budget_is_refused_with_rate_limited(make_server):
    async with make_server(limit_model_requests="user=1/d:1") as server:
        await _assistant_room(server)
        alice = await server.client("alice")
        await alice.join("lobby")
        await alice.send({"type": "command", "room": "lobby", "text": "/ask one", "id": "a1"})
        assert (
            await alice.expect(
                "command_result",
                skip=("ping", "presence", "message", "stream_start", "stream_delta", "stream_end"),
            )
        )["id"] == "a1"
        await alice.send({"type": "command", "room": "lobby", "text": "/ask two", "id": "a2"})
        error = await alice.expect(
            "error",
            skip=("ping", "presence", "message", "stream_start", "stream_delta", "stream_end"),
        )
        assert error["code"] == "rate_limited" and error["id"] == "a2"
        assert error["room"] == "lobby" and error["retry_after"] > 3600
        stored = await server.hub.store.messages_after("lobby", 0, 100)
        assert "two" not in [m.text for m in stored]  # refused before the question was posted
        await alice.say("lobby", "@assistant three", "m3")  # mentions share the budget
        refusal = await alice.expect(
            lambda f: f["type"] == "message" and f["message"]["kind"] == "system",
            skip=("ping", "presence", "message", "stream_start", "stream_delta", "stream_end"),
        )
        assert refusal["message"]["meta"]["refused"] == "rate_limited"
        assert refusal["message"]["meta"]["retry_after"] > 3600


async def test_the_redis_script_does_the_same_math(tmp_path):
    from redis.asyncio import Redis

    from tests.procs import REDIS_URL

    redis = Redis.from_url(REDIS_URL)
    prefix = f"t{os.urandom(4).hex()}"
    settings = make_settings(str(tmp_path), redis_prefix=prefix, limit_rooms="user=1/h:3")
    limits = Limits(settings, redis=redis)
    try:
        assert not limits.local
        assert [await limits.take("rooms", "user", "u") for _ in range(3)] == [0.0, 0.0, 0.0]
        wait = await limits.take("rooms", "user", "u")
        assert 3590 < wait <= 3600  # one token at 1/h
        assert await limits.take("rooms", "user", "other") == 0.0
        assert await limits.take("rooms", "admin", "u") == 0.0  # admin=off: never asks Redis
        assert await limits.take("rooms", "user", "d", cost=5, force=True) == 0.0  # a debt
        assert 3 * 3600 - 10 < await limits.take("rooms", "user", "d", cost=1) <= 3 * 3600
        ttl = await redis.pttl(f"{prefix}:rl:rooms:u")
        assert 0 < ttl <= 3 * 3600 * 1000 + 1000  # gone once the bucket is full again
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}:*")])
        await redis.aclose()
