"""Issue 13, item 4: a database that stops answering (packets dropped, not refused) is
visible: a send gets ``store_unavailable`` (with ``retry_after``, its ``id`` and ``room``)
within the timeouts instead of hanging, REST answers 503 with Retry-After, ``/readyz`` turns
503 naming the database; after the network heals ``/readyz`` is 200 again and the client's
resend with the same id is stored exactly once. PostgreSQL is reached through a local TCP
proxy that black-holes traffic on demand (tests/blackhole.py)."""

from __future__ import annotations

import sqlite3
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.blackhole import BlackHoleProxy
from tests.procs import PrivateRedis, pg_schema
from tests.support import eventually, running
from tests.support import test_settings as make_settings

TIMEOUT = 1.0  # each database step (connect, acquire, statement) in these tests
SKIP = ("ping", "presence", "typing", "message")


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.replace(f":{parts.port}", f":{port}")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def outage_hub(tmp_path):
    async with pg_schema() as url, BlackHoleProxy(5432) as proxy:
        settings = make_settings(
            str(tmp_path),
            database_url=_through(url, proxy.port),
            db_pool_min=1,
            db_pool_max=2,
            db_connect_timeout=TIMEOUT,
            db_statement_timeout=TIMEOUT,
            db_acquire_timeout=TIMEOUT,
            readyz_timeout=TIMEOUT,
            store_retry_after=0.5,
        )
        async with running(settings) as server:
            try:
                yield server, proxy
            finally:
                proxy.heal()  # a failed test must not leave the hub's shutdown in the hole


async def _ready(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/readyz")


@pytest.mark.parametrize("replies_only", [False, True], ids=["all-dropped", "replies-dropped"])
async def test_black_holed_database_gives_store_unavailable_then_resend_stores_once(
    outage_hub, replies_only
):
    server, proxy = outage_hub
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    assert (await alice.say("lobby", "before", "m1"))["offset"] == 1
    async with server.http("alice") as http:
        assert (await _ready(http)).status_code == 200
        assert (await http.get("/livez")).status_code == 200

        proxy.drop(replies_only=replies_only)
        started = time.monotonic()
        await alice.send({"type": "send", "room": "lobby", "text": "during", "id": "m2"})
        error = await alice.expect("error", timeout=10 * TIMEOUT, skip=SKIP)
        took = time.monotonic() - started
        assert error["code"] == "store_unavailable", error
        assert (error["id"], error["room"], error["retry_after"]) == ("m2", "lobby", 0.5)
        assert took < 5 * TIMEOUT, took  # bounded by the timeouts, not hanging

        ready = await _ready(http)
        assert ready.status_code == 503 and "database" in ready.json()["failed"], ready.text
        assert ready.json()["checks"]["database"]["ok"] is False
        assert (await http.get("/livez")).status_code == 200  # alive, just not ready
        assert (await http.get("/healthz")).status_code == 200  # unchanged: no checks
        body = {"text": "rest", "client_id": "r1"}
        post = await http.post("/api/rooms/lobby/messages", json=body)
        assert post.status_code == 503 and post.headers["Retry-After"] == "1", post.text
        assert post.json()["code"] == "store_unavailable"

        proxy.heal()

        async def ready_again() -> bool:
            return (await _ready(http)).status_code == 200

        await eventually(ready_again, timeout=20)

        # the client's resend of the same frame: stored once, whatever happened before
        async def resend() -> dict | None:
            await alice.send({"type": "send", "room": "lobby", "text": "during", "id": "m2"})
            frame = await alice.expect(
                lambda f: f["type"] in ("ack", "error"), timeout=10, skip=SKIP
            )
            return frame if frame["type"] == "ack" else None

        ack = await eventually(resend, timeout=20)
        # (with replies dropped the write may have committed unseen: then this is a duplicate)
        assert ack["offset"] == 2, ack
        again = await alice.say("lobby", "during", "m2")
        assert again.get("duplicate") is True and again["offset"] == 2
        assert (await alice.say("lobby", "after", "m3"))["offset"] == 3
        page = (await http.get("/api/rooms/lobby/messages")).json()["messages"]
        assert [m["text"] for m in page] == ["before", "during", "after"]
        assert [m["offset"] for m in page] == [1, 2, 3]


async def test_busy_sqlite_gives_store_unavailable_then_the_resend_works(make_server):
    """The embedded store: a writer held up past the busy timeout is ``store_unavailable``."""
    async with make_server(db_statement_timeout=0.5, store_retry_after=0.5) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        assert (await alice.say("lobby", "before", "m1"))["offset"] == 1
        other = sqlite3.connect(server.settings.sqlite_path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            await alice.send({"type": "send", "room": "lobby", "text": "during", "id": "m2"})
            error = await alice.expect("error", timeout=10, skip=SKIP)
            assert (error["code"], error["id"], error["room"]) == (
                "store_unavailable",
                "m2",
                "lobby",
            )
        finally:
            other.execute("ROLLBACK")
            other.close()
        ack = await alice.say("lobby", "during", "m2")
        assert ack["offset"] == 2 and not ack.get("duplicate")


async def test_readyz_names_redis_when_it_is_away(make_server):
    redis = PrivateRedis()
    await redis.start()
    try:
        async with make_server(redis_url=redis.url, readyz_timeout=TIMEOUT) as server:
            async with server.http() as http:
                ready = await http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert set(ready.json()["checks"]) == {"database", "migrations", "redis"}
                redis.stop()
                ready = await http.get("/readyz")
                assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]
                assert ready.headers["Retry-After"]
                assert (await http.get("/livez")).status_code == 200
    finally:
        redis.stop()


async def test_a_hub_stops_promptly_while_the_database_is_black_holed(outage_hub):
    """Shutting down during an outage closes the pool within its timeout, not never."""
    server, proxy = outage_hub
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    proxy.drop()
    await alice.send({"type": "send", "room": "lobby", "text": "during", "id": "m2"})
    assert (await alice.expect("error", timeout=10, skip=SKIP))["code"] == "store_unavailable"
    started = time.monotonic()
    await server.stop()  # the fixture heals only afterwards
    assert time.monotonic() - started < 8 * TIMEOUT
