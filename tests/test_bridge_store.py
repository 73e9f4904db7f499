"""Bridge persistence on SQLite and PostgreSQL (migration 0003), and the ordered outbox."""

from __future__ import annotations

import asyncio
import time

import pytest

from lydian_adapters.bridge.outbox import Outbox, PermanentError, RateLimited
from lydian_adapters.bridge.store import BridgeStore, Link, MessageCopy, PlatformUser
from lydian_adapters.bridge.tables import bind
from tests.procs import opened_store


@pytest.fixture(params=["sqlite", "postgres"])
async def bridge_store(request, tmp_path):
    async with opened_store(request.param, tmp_path) as store:
        bind(store.engine)
        yield BridgeStore()


async def test_links_are_unique_per_room_and_channel(bridge_store):
    assert await bridge_store.add_link(Link("ops", "slack", "C1", "root"))
    assert not await bridge_store.add_link(Link("ops", "slack", "C1", "root"))
    assert await bridge_store.add_link(Link("ops", "slack", "C2", "root"))
    assert await bridge_store.add_link(Link("dev", "slack", "C1", "root"))
    assert await bridge_store.add_link(Link("ops", "discord", "42", "root"))
    assert await bridge_store.remove_links("ops", "slack") == 2
    assert [(lk.room, lk.platform, lk.channel) for lk in await bridge_store.links()] == [
        ("dev", "slack", "C1"),
        ("ops", "discord", "42"),
    ]
    assert await bridge_store.remove_links("ops", "discord", "nope") == 0


async def test_a_platform_message_is_recorded_once_even_when_racing(bridge_store):
    copy = MessageCopy("slack", "C1", "1700.1", "hub-1", "ops", origin=True)
    results = await asyncio.gather(*[bridge_store.add_copy(copy) for _ in range(5)])
    assert results.count(True) == 1
    other = MessageCopy("discord", "42", "99", "hub-1", "ops", origin=False)
    assert await bridge_store.add_copy(other)
    assert {c.platform for c in await bridge_store.copies("hub-1")} == {"slack", "discord"}
    assert (await bridge_store.copy_of("slack", "C1", "1700.1")).origin is True
    assert await bridge_store.copy_of("slack", "C2", "1700.1") is None  # ts is per channel


async def test_users_are_remembered_updated_and_linked(bridge_store):
    await bridge_store.remember_user(PlatformUser("slack", "U1", "Al"))
    updated = await bridge_store.remember_user(PlatformUser("slack", "U1", "Alice", "https://a"))
    assert (updated.name, updated.avatar, updated.hub_user) == ("Alice", "https://a", None)
    await bridge_store.link_user("slack", "U1", "alice")
    await bridge_store.link_user("slack", "U404", "nobody")  # not seen yet: recorded anyway
    assert (await bridge_store.user("slack", "U404")).hub_user == "nobody"
    again = await bridge_store.remember_user(PlatformUser("slack", "U1", "Alice", "https://a"))
    assert again.hub_user == "alice"


async def test_outbox_keeps_order_per_channel_and_runs_channels_independently():
    outbox = Outbox(backoff_initial=0.05)
    done: list[tuple[str, int]] = []
    fail_once = {"slow": True}

    def job(key: str, n: int, delay: float = 0.0):
        async def run() -> None:
            if key == "slow" and n == 0 and fail_once["slow"]:
                fail_once["slow"] = False
                raise RateLimited(0.3)
            await asyncio.sleep(delay)  # a slow platform call, on purpose
            done.append((key, n))

        return run

    started = time.monotonic()
    for n in range(3):
        outbox.put(("x", "slow"), job("slow", n))
        outbox.put(("x", "fast"), job("fast", n))
    await outbox.drain(timeout=5)
    assert [n for k, n in done if k == "slow"] == [0, 1, 2]
    assert [n for k, n in done if k == "fast"] == [0, 1, 2]
    assert done.index(("fast", 2)) < done.index(("slow", 0))  # not held up by the 429
    assert time.monotonic() - started >= 0.3
    assert outbox.retries == 1
    await outbox.close()


async def test_outbox_retries_errors_with_backoff_and_drops_permanent_ones():
    outbox = Outbox(backoff_initial=0.01, max_attempts=3)
    calls = {"flaky": 0, "broken": 0, "doomed": 0}

    async def flaky() -> None:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("platform down")

    async def broken() -> None:
        calls["broken"] += 1
        raise PermanentError("channel_not_found")

    async def doomed() -> None:
        calls["doomed"] += 1
        raise ConnectionError("down for good")

    after: list[str] = []

    async def later() -> None:
        after.append("delivered")

    for job in (broken, flaky, doomed, later):
        outbox.put(("slack", "C1"), job)
    await outbox.drain(timeout=5)
    assert calls == {"flaky": 3, "broken": 1, "doomed": 3}
    assert after == ["delivered"]  # the queue goes on after a dropped job
    assert outbox.dropped == 2
    await outbox.close()


async def test_a_hanging_platform_call_times_out_and_is_retried():
    outbox = Outbox(backoff_initial=0.01, job_timeout=0.2)
    attempts = []

    async def hangs_once() -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            await asyncio.sleep(3600)  # hangs on purpose: the outbox must time it out

    outbox.put(("discord", "1"), hangs_once)
    await outbox.drain(timeout=5)
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.2
    assert outbox.retries == 1 and outbox.dropped == 0
    await outbox.close()
