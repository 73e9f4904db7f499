"""In-hub attachment handlers (``AttachmentHandler(run_async=...)``, issue 15): awaited in
the hub process for network-bound work, with the child-process jobs' queueing, frames,
timeouts, stored results and failure reports, in slots of their own.

A real hub; files uploaded through the REST route and sent over the socket. Handlers: the
test-only ``tests.async_handlers`` (in the hub) and ``tests.attachment_handlers`` (a child).
"""

from __future__ import annotations

import asyncio

import pytest

from tests import async_handlers
from tests.async_handlers import TIMEOUT, AsyncProbePlugin, BothRuns, SyncRunAsync
from tests.attachment_handlers import ProbePlugin
from tests.plugin_support import add_plugin, frame_where
from tests.support import eventually
from tests.test_attachment_pipeline import (
    attachment_frame,
    enable,
    results,
    send,
    setup_room,
    statuses,
    upload,
)


async def join(client, room: str) -> None:
    """Join one more room (other frames may come first: they stay in ``client.seen``)."""
    await client.send({"type": "join", "room": room})
    await frame_where(client, lambda f: f["type"] == "joined" and f.get("room") == room)


@pytest.fixture(autouse=True)
def fresh_events():
    """The handler's events, new for this test's event loop."""
    async_handlers.GATE = asyncio.Event()
    async_handlers.RELEASE = asyncio.Event()
    async_handlers.LATE.clear()


async def test_an_in_hub_handler_runs_without_a_child_and_its_result_is_stored(server):
    await add_plugin(server, AsyncProbePlugin(), "aprobe")
    owner, alice = await setup_room(server, "lab", "aprobe")
    attachment = await upload(server, "lab", "notes.txt", b"four words in here")
    await send(alice, "lab", attachment, "n1")
    assert await statuses(alice, attachment, "aprobe") == ["queued", "running", "done"]
    done = await frame_where(alice, attachment_frame(attachment, "done"))
    assert done["summary"] == "4 words in lab" and done["filename"] == "notes.txt"
    stored = (await results(server, "lab", attachment))["aprobe"]
    assert stored["status"] == "done" and stored["markdown"] == "four words in here"
    assert stored["data"]["uploaded_by"] == "alice" and stored["data"]["size"] == 18
    assert stored["plugin"] == "aprobe" and stored["seconds"] >= 0
    stats = server.hub.attachment_pipeline.stats
    assert (stats.in_hub, stats.jobs) == (1, 0)  # no child process was started

    # the same bytes again: the stored result, no second job
    again = await upload(server, "lab", "copy.txt", b"four words in here")
    await send(alice, "lab", again, "n2")
    cached = await frame_where(alice, attachment_frame(again, "done"))
    assert cached["cached"] is True and cached["summary"] == "4 words in lab"
    assert stats.in_hub == 1
    await owner.close()
    await alice.close()


async def test_failures_are_reported_and_never_reused_and_the_next_job_runs(server):
    await add_plugin(server, AsyncProbePlugin(), "aprobe")
    owner, alice = await setup_room(server, "lab", "aprobe")
    cases = [
        ("raise.txt", b"raise now", "ValueError: aprobe was told to fail"),
        ("refuse.txt", b"refuse it", "aprobe refuses this file"),
        ("hang.txt", b"hang forever", f"timed out after {TIMEOUT:g} s"),
        ("badtype.txt", b"badtype", "the handler returned str, not HandlerResult"),
        ("badjson.txt", b"badjson", "the handler's result is not valid: "),
    ]
    stats = server.hub.attachment_pipeline.stats
    for i, (name, data, error) in enumerate(cases):
        attachment = await upload(server, "lab", name, data)
        await send(alice, "lab", attachment, f"f{i}")
        assert await statuses(alice, attachment, "aprobe") == ["queued", "running", "failed"]
        failed = await frame_where(alice, attachment_frame(attachment, "failed"))
        assert failed["error"].startswith(error), failed
        stored = (await results(server, "lab", attachment))["aprobe"]
        assert stored["status"] == "failed" and stored["error"] == failed["error"]
        # a failure of an in-hub handler (a model, a network) says nothing about the file:
        # the same bytes sent again get a new job, not the stored failure
        jobs = stats.in_hub
        again = await upload(server, "lab", f"again-{name}", data)
        await send(alice, "lab", again, f"a{i}")
        refailed = await frame_where(alice, attachment_frame(again, "failed"), timeout=30)
        assert not refailed.get("cached") and stats.in_hub == jobs + 1
        # and the next file is processed normally
        fine = await upload(server, "lab", f"ok{i}.txt", f"all good {i}".encode())
        await send(alice, "lab", fine, f"ok{i}")
        done = await frame_where(alice, attachment_frame(fine, "done"), timeout=30)
        assert done["summary"] == "3 words in lab"
    assert (stats.failed, stats.done) == (10, 5)
    assert not server.hub.attachment_pipeline._in_hub  # nothing left running
    await owner.close()
    await alice.close()


async def test_a_handler_ignoring_its_cancellation_is_still_cut_off_at_its_timeout(server):
    await add_plugin(server, AsyncProbePlugin(), "aprobe")
    owner, alice = await setup_room(server, "lab", "aprobe")
    deaf = await upload(server, "lab", "deaf.txt", b"deaf to cancellation")
    await send(alice, "lab", deaf, "d")
    failed = await frame_where(alice, attachment_frame(deaf, "failed"), timeout=30)
    assert failed["error"] == f"timed out after {TIMEOUT:g} s"
    # its slot is free again although the handler still runs: the next job is done
    fine = await upload(server, "lab", "fine.txt", b"after the deaf one")
    await send(alice, "lab", fine, "f")
    await frame_where(alice, attachment_frame(fine, "done"), timeout=30)
    # what it returns late is thrown away: the stored result stays the failure
    async_handlers.RELEASE.set()
    await eventually(lambda: async_handlers.LATE == [deaf], what="the deaf handler's end")
    stored = (await results(server, "lab", deaf))["aprobe"]
    assert stored["status"] == "failed" and "summary" not in stored
    await owner.close()
    await alice.close()


async def test_in_hub_jobs_have_their_own_bounded_slots(make_server):
    async with make_server(attachment_max_async_jobs=1, attachment_max_jobs=1) as server:
        await add_plugin(server, AsyncProbePlugin(timeout=120), "aprobe")  # waits for GATE
        await add_plugin(server, ProbePlugin(), "probe")
        owner, alice = await setup_room(server, "lab", "aprobe")
        first = await upload(server, "lab", "wait1.txt", b"wait for the gate")
        second = await upload(server, "lab", "wait2.txt", b"wait here too please")
        await send(alice, "lab", first, "w1")
        await frame_where(alice, attachment_frame(first, "running"))
        await send(alice, "lab", second, "w2")
        await frame_where(alice, attachment_frame(second, "queued"))
        # a child-process job is not held up by the busy in-hub slot
        await server.create_room("cpu")
        for client in (owner, alice):
            await join(client, "cpu")
        await enable(owner, "cpu", "probe")
        words = await upload(server, "cpu", "words.txt", b"one two three")
        await send(alice, "cpu", words, "c")
        await frame_where(alice, attachment_frame(words, "done"), timeout=60)
        assert not any(
            f["type"] == "attachment" and f["attachment"] == second and f["status"] == "running"
            for f in alice.seen
        )
        async_handlers.GATE.set()
        await frame_where(alice, attachment_frame(second, "done"), timeout=30)
        order = [
            (f["attachment"], f["status"])
            for f in alice.seen
            if f["type"] == "attachment"
            and f["attachment"] in (first, second)
            and f["status"] in ("running", "done")
        ]
        assert order == [(first, "running"), (first, "done"), (second, "running"), (second, "done")]
        await owner.close()
        await alice.close()


async def test_a_result_marked_not_reusable_is_made_again_for_the_same_bytes(server):
    await add_plugin(server, AsyncProbePlugin(), "aprobe")
    owner, alice = await setup_room(server, "lab", "aprobe")
    stats = server.hub.attachment_pipeline.stats
    first = await upload(server, "lab", "a.txt", b"hubnote")
    await send(alice, "lab", first, "h1")
    done = await frame_where(alice, attachment_frame(first, "done"))
    assert done["summary"] == "nothing to say about it yet"
    stored = (await results(server, "lab", first))["aprobe"]
    assert stored["data"] == {"reusable": False}
    second = await upload(server, "lab", "b.txt", b"hubnote")
    await send(alice, "lab", second, "h2")
    again = await frame_where(alice, attachment_frame(second, "done"))
    assert not again.get("cached") and stats.in_hub == 2
    await owner.close()
    await alice.close()


async def test_bad_in_hub_handlers_keep_their_plugin_off(server):
    await add_plugin(server, BothRuns(), "bothruns")
    await add_plugin(server, SyncRunAsync(), "syncasync")
    info = {i.name: i for i in server.hub.plugins.infos()}
    assert "give either run or run_async, not both" in (info["bothruns"].error or "")
    assert "run_async must be an async function" in (info["syncasync"].error or "")
    owners = {owner for owner, _ in server.hub.plugins.items("lydian_attachment_handlers")}
    assert not owners & {"bothruns", "syncasync"}


async def test_shutdown_cancels_in_hub_jobs_and_keeps_no_result(make_server):
    async with make_server() as server:
        await add_plugin(server, AsyncProbePlugin(), "aprobe")
        owner, alice = await setup_room(server, "lab", "aprobe")
        attachment = await upload(server, "lab", "wait.txt", b"wait until shutdown")
        await send(alice, "lab", attachment, "w")
        await frame_where(alice, attachment_frame(attachment, "running"))
        pipeline = server.hub.attachment_pipeline
        [task] = await eventually(lambda: list(pipeline._in_hub), what="the in-hub job")
        await owner.close()
        await alice.close()
    assert task.cancelled()
    assert (pipeline.stats.done, pipeline.stats.failed) == (0, 0)  # nothing stored as failed
