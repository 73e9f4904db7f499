"""The attachment pipeline (issue 15): handlers' jobs in child processes, results by content
hash, ``attachment`` frames, failures that never cost the message, re-processing on request.

A real hub; files uploaded through the REST route and sent with a message over the socket.
Handlers: the documents plugin, and ``tests.attachment_handlers`` (a test-only plugin).
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hub.store.store import AttachmentResult
from tests.attachment_handlers import MEMORY_MB, TIMEOUT, BadHandlers, ProbePlugin
from tests.plugin_support import add_plugin, command, frame_where
from tests.procs import opened_store
from tests.support import Client, HubServer, eventually

ROOT = Path(__file__).resolve().parent.parent


async def enable(owner: Client, room: str, plugin: str) -> None:
    reply = await command(owner, room, f"/plugins enable {plugin}", f"enable-{plugin}")
    assert reply["type"] == "command_result" and reply.get("ok", True), reply


async def upload(server: HubServer, room: str, name: str, data: bytes, user: str = "alice") -> str:
    async with server.http(user) as http:
        resp = await http.post(
            f"/api/rooms/{room}/attachments", files={"file": (name, data, "application/x-any")}
        )
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


async def send(client: Client, room: str, attachment: str, ref: str) -> dict[str, Any]:
    """Send a message carrying ``attachment``; the message frame as the room got it."""
    await client.send(
        {"type": "send", "room": room, "text": f"see {ref}", "attachments": [attachment], "id": ref}
    )
    await frame_where(client, lambda f: f["type"] == "ack" and f.get("id") == ref)
    return await frame_where(
        client,
        lambda f: f["type"] == "message" and f["message"]["text"] == f"see {ref}",
    )


def attachment_frame(attachment: str, status: str, handler: str | None = None):
    return lambda f: (
        f["type"] == "attachment"
        and f["attachment"] == attachment
        and f["status"] == status
        and (handler is None or f["handler"] == handler)
    )


async def statuses(client: Client, attachment: str, handler: str) -> list[str]:
    """The statuses the room saw for one job, up to its end (``done`` or ``failed``)."""
    await frame_where(
        client,
        lambda f: (
            f["type"] == "attachment"
            and f["attachment"] == attachment
            and f["handler"] == handler
            and f["status"] in ("done", "failed")
        ),
        timeout=60,
    )
    return [
        f["status"]
        for f in client.seen
        if f["type"] == "attachment" and f["attachment"] == attachment and f["handler"] == handler
    ]


async def results(server: HubServer, room: str, attachment: str, user: str = "alice") -> Any:
    async with server.http(user) as http:
        resp = await http.get(f"/api/rooms/{room}/attachments/{attachment}/results")
    assert resp.status_code == 200, resp.text
    return {r["handler"]: r for r in resp.json()["results"]}


async def setup_room(server: HubServer, room: str, *plugins: str) -> tuple[Client, Client]:
    await server.create_room(room)
    owner = await server.client("owner", admin=True)
    await owner.join(room)
    for plugin in plugins:
        await enable(owner, room, plugin)
    alice = await server.client("alice")
    await alice.join(room)
    return owner, alice


# ------------------------------------------------------------------ the documents handler


async def ensure_documents(server: HubServer, documents: object) -> None:
    """The documents plugin in the hub: found through its entry point when the package is
    installed with it, registered by hand otherwise (a checkout installed before it existed)."""
    if "documents" not in server.hub.plugins.names():
        await add_plugin(server, documents, "documents")


async def test_pdf_is_extracted_once_and_the_room_sees_progress(server):
    pytest.importorskip("pypdfium2")
    pytest.importorskip("pdfplumber")
    import lydian_plugins.documents.plugin as documents
    from tests.test_documents_extract import TABLE_MD, report_pdf

    await ensure_documents(server, documents)
    owner, alice = await setup_room(server, "docs", "documents")
    pdf = report_pdf()
    first = await upload(server, "docs", "report.pdf", pdf)
    message = await send(alice, "docs", first, "m1")
    assert message["message"]["attachments"][0]["id"] == first  # delivered at once
    assert await statuses(alice, first, "documents") == ["queued", "running", "done"], alice.seen[
        -2:
    ]
    done = await frame_where(alice, attachment_frame(first, "done"))
    assert done["filename"] == "report.pdf" and done["room"] == "docs"
    assert done["summary"].startswith("PDF, 3 pages, 1 table, outline of 4"), done
    # the owner, in the room too, saw the same frames
    await frame_where(owner, attachment_frame(first, "done", "documents"))

    stored = (await results(server, "docs", first))["documents"]
    assert stored["status"] == "done"
    assert "Quarterly Report" in stored["markdown"] and TABLE_MD in stored["markdown"]
    assert "Next quarter we expect similar figures." in stored["markdown"]
    assert stored["data"]["pages"] == 3
    assert stored["data"]["tables"][0]["rows"] == 4
    assert [o["title"] for o in stored["data"]["outline"]][:2] == ["Quarterly Report", "Highlights"]
    assert stored["sha256"] and stored["attachment_id"] == first

    # the same bytes again, under another name: announced from the store, no second job
    jobs = server.hub.attachment_pipeline.stats.by_handler["documents"]
    assert jobs == 1
    again = await upload(server, "docs", "copy.pdf", pdf)
    await send(alice, "docs", again, "m2")
    cached = await frame_where(alice, attachment_frame(again, "done"))
    assert cached["cached"] is True and cached["summary"] == done["summary"]
    assert await statuses(alice, again, "documents") == ["done"]
    assert server.hub.attachment_pipeline.stats.by_handler["documents"] == 1
    assert (await results(server, "docs", again))["documents"]["markdown"] == stored["markdown"]
    await owner.close()
    await alice.close()


async def test_bad_and_encrypted_pdfs_fail_clearly_and_messages_arrive(server):
    pytest.importorskip("pypdfium2")
    import pypdf

    import lydian_plugins.documents.plugin as documents
    from tests.test_documents_extract import report_pdf

    await ensure_documents(server, documents)
    owner, alice = await setup_room(server, "docs", "documents")
    corrupt = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nthis is not a pdf at all"
    bad = await upload(server, "docs", "broken.pdf", corrupt)
    await send(alice, "docs", bad, "bad")
    failed = await frame_where(alice, attachment_frame(bad, "failed", "documents"), timeout=60)
    assert "PDF" in failed["error"] and "corrupt" in failed["error"].lower(), failed

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(report_pdf())))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    locked = await upload(server, "docs", "locked.pdf", out.getvalue())
    await send(alice, "docs", locked, "locked")
    failed = await frame_where(alice, attachment_frame(locked, "failed", "documents"), timeout=60)
    assert failed["error"].startswith("password required"), failed
    stored = (await results(server, "docs", locked))["documents"]
    assert stored["status"] == "failed" and stored["error"] == failed["error"]
    # both messages are stored with their attachments
    history = await server.hub.history("docs")
    assert [m.text for m in history if m.attachments] == ["see bad", "see locked"]
    await owner.close()
    await alice.close()


def test_documents_plugin_has_an_entry_point():
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)
    plugins = project["project"]["entry-points"]["lydian.plugins"]
    assert plugins["documents"] == "lydian_plugins.documents.plugin"


# ------------------------------------------------------------------ failing handlers


async def test_failures_are_reported_and_the_next_job_runs(server):
    await add_plugin(server, ProbePlugin(), "probe")
    owner, alice = await setup_room(server, "lab", "probe")
    cases = [
        ("raise.txt", b"raise now", "ValueError: probe was told to fail"),
        ("hang.txt", b"hang forever", f"timed out after {TIMEOUT:g} s"),
        ("memory.txt", b"memory hog", f"exceeded its memory limit of {MEMORY_MB} MB"),
        ("exit.txt", b"exit quietly", "the handler exited without a result (exit code 3)"),
    ]
    for i, (name, data, error) in enumerate(cases):
        attachment = await upload(server, "lab", name, data)
        message = await send(alice, "lab", attachment, f"f{i}")
        assert message["message"]["attachments"][0]["name"] == name
        assert await statuses(alice, attachment, "probe") == ["queued", "running", "failed"]
        failed = await frame_where(alice, attachment_frame(attachment, "failed"))
        assert failed["error"] == error, failed
        assert (await results(server, "lab", attachment))["probe"]["error"] == error
        # the next upload is processed normally
        fine = await upload(server, "lab", f"ok{i}.txt", f"all good {i} here".encode())
        await send(alice, "lab", fine, f"ok{i}")
        done = await frame_where(alice, attachment_frame(fine, "done"), timeout=30)
        assert done["summary"] == "4 words"
    stats = server.hub.attachment_pipeline.stats
    assert (stats.failed, stats.done) == (4, 4)
    assert not server.hub.attachment_pipeline._children  # every child reaped
    texts = [m.text for m in await server.hub.history("lab") if m.attachments]
    assert texts == [f"see {r}" for i in range(4) for r in (f"f{i}", f"ok{i}")]
    await owner.close()
    await alice.close()


async def test_jobs_run_at_most_max_jobs_at_once(make_server):
    async with make_server(attachment_max_jobs=1) as server:
        await add_plugin(server, ProbePlugin(), "probe")
        owner, alice = await setup_room(server, "lab", "probe")
        hang = await upload(server, "lab", "hang.txt", b"hang on")
        fine = await upload(server, "lab", "fine.txt", b"one two")
        await send(alice, "lab", hang, "h")
        await frame_where(alice, attachment_frame(hang, "running"))
        await send(alice, "lab", fine, "f")
        await frame_where(alice, attachment_frame(fine, "queued"))
        # the second job waits for the only slot: it runs once the first is cut off
        await frame_where(alice, attachment_frame(hang, "failed"), timeout=30)
        await frame_where(alice, attachment_frame(fine, "done"), timeout=30)
        order = [
            (f["attachment"], f["status"])
            for f in alice.seen
            if f["type"] == "attachment" and f["status"] in ("running", "failed")
        ]
        assert order == [(hang, "running"), (hang, "failed"), (fine, "running")]
        await owner.close()
        await alice.close()


# ------------------------------------------------------------------ on request, and access


async def test_reprocess_on_request_after_enabling(server):
    await add_plugin(server, ProbePlugin(), "probe")
    owner, alice = await setup_room(server, "lab")  # probe not enabled yet
    attachment = await upload(server, "lab", "notes.txt", b"three little words")
    await send(alice, "lab", attachment, "n")
    assert await results(server, "lab", attachment) == {}
    async with server.http("alice") as http:
        url = f"/api/rooms/lab/attachments/{attachment}/process"
        refused = await http.post(url)
        assert refused.status_code == 409
        assert "no attachment handler enabled" in refused.json()["detail"]
        await enable(owner, "lab", "probe")
        resp = await http.post(url)
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"queued": ["probe"]}
        first_done = await frame_where(alice, attachment_frame(attachment, "done"), timeout=30)
        first = (await results(server, "lab", attachment))["probe"]
        assert first["summary"] == "3 words" and first["markdown"] == "three little words"
        # asked again: processed again, even though the bytes have a result
        resp = await http.post(url, json={"handlers": ["probe"]})
        assert resp.status_code == 202
        await eventually(
            lambda: server.hub.attachment_pipeline.stats.by_handler.get("probe") == 2,
            what="the second job",
        )
        done = attachment_frame(attachment, "done")
        await frame_where(alice, lambda f: done(f) and f is not first_done, timeout=30)
        second = (await results(server, "lab", attachment))["probe"]
        assert second["data"]["pid"] != first["data"]["pid"]  # a new child process
        assert (await http.post(url, json={"handlers": ["nope"]})).status_code == 409
        # unknown attachments and rooms
        assert (
            await http.get("/api/rooms/lab/attachments/x" * 1 + "y" * 22 + "/results")
        ).status_code == 404
    await owner.close()
    await alice.close()


async def test_results_follow_room_visibility(server):
    await add_plugin(server, ProbePlugin(), "probe")
    await server.create_room("secret", private=True)
    await server.create_room("open")
    attachment = await upload(server, "secret", "s.txt", b"hidden words", user="owner")
    mine = await upload(server, "open", "o.txt", b"open words", user="owner")
    async with server.http("mallory") as http:  # sees the room, but is not the uploader
        resp = await http.post(f"/api/rooms/open/attachments/{mine}/process")
        assert resp.status_code == 403
        assert "only the uploader or an admin" in resp.json()["detail"]
        assert (await http.get(f"/api/rooms/open/attachments/{mine}/results")).status_code == 200
    async with server.http("mallory") as http:
        for verb in ("get", "post"):
            suffix = "results" if verb == "get" else "process"
            resp = await getattr(http, verb)(f"/api/rooms/secret/attachments/{attachment}/{suffix}")
            assert resp.status_code == 403, resp.text
            # and it is not reachable through a room mallory can see
            resp = await getattr(http, verb)(f"/api/rooms/open/attachments/{attachment}/{suffix}")
            assert resp.status_code == 404, resp.text


async def test_a_handler_that_cannot_be_pickled_keeps_its_plugin_off(server):
    await add_plugin(server, BadHandlers(), "badhandlers")
    info = {i.name: i for i in server.hub.plugins.infos()}["badhandlers"]
    assert "run must be a top-level function" in (info.error or "")
    owners = {owner for owner, _ in server.hub.plugins.items("lydian_attachment_handlers")}
    assert "badhandlers" not in owners


async def test_spawn_start_method_works_too(make_server):
    async with make_server(attachment_start_method="spawn") as server:
        await add_plugin(server, ProbePlugin(), "probe")
        owner, alice = await setup_room(server, "lab", "probe")
        attachment = await upload(server, "lab", "a.txt", b"spawned child here")
        await send(alice, "lab", attachment, "s")
        done = await frame_where(alice, attachment_frame(attachment, "done"), timeout=60)
        assert done["summary"] == "3 words"
        await owner.close()
        await alice.close()


def test_fork_is_refused(tmp_path):
    """A fork of the hub would copy its event loop and threads mid-use: refused at start."""
    from hub.media.attachments import AttachmentStore
    from hub.media.pipeline import AttachmentPipeline

    with pytest.raises(ValueError, match="attachment_start_method must be one of"):
        AttachmentPipeline(
            None,  # type: ignore[arg-type]
            AttachmentStore(tmp_path, 1000),
            lambda room: [],
            None,  # type: ignore[arg-type]
            None,
            start_method="fork",
        )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_store_keeps_one_result_per_hash_and_handler(kind, tmp_path):
    async with opened_store(kind, tmp_path) as store:
        sha = "ab" * 32
        first = AttachmentResult(
            handler="documents",
            status="failed",
            sha256=sha,
            plugin="documents",
            attachment_id="a" * 22,
            error="timed out after 1 s",
        )
        await store.save_attachment_result(first)
        other = AttachmentResult(handler="probe", status="done", sha256=sha, summary="x")
        await store.save_attachment_result(other)
        again = AttachmentResult(
            handler="documents",
            status="done",
            sha256=sha,
            summary="PDF, 1 page",
            markdown="# Title",
            data={"pages": 1, "outline": [{"title": "T", "level": 1}]},
            warnings=["declared as text/plain"],
            seconds=0.25,
        )
        await store.save_attachment_result(again)
        got = await store.attachment_results(sha)
        assert [r.handler for r in got] == ["documents", "probe"]
        assert got[0].status == "done" and got[0].error == ""
        assert got[0].data == {"pages": 1, "outline": [{"title": "T", "level": 1}]}
        assert got[0].warnings == ["declared as text/plain"] and got[0].seconds == 0.25
        assert got[0].created_at > 0
        assert [r.summary for r in await store.attachment_results(sha, "probe")] == ["x"]
        assert await store.attachment_results("cd" * 32) == []


async def test_two_plugins_may_not_share_a_handler_name(server):
    await add_plugin(server, ProbePlugin(), "probe")
    await add_plugin(server, ProbePlugin(), "probe2")
    info = {i.name: i for i in server.hub.plugins.infos()}
    assert info["probe"].error is None
    assert "attachment handler 'probe' is taken by 'probe'" in (info["probe2"].error or "")


async def test_shutdown_kills_running_jobs_and_keeps_no_result(make_server):
    async with make_server() as server:
        await add_plugin(server, ProbePlugin(), "probe")
        owner, alice = await setup_room(server, "lab", "probe")
        attachment = await upload(server, "lab", "hang.txt", b"hang until shutdown")
        await send(alice, "lab", attachment, "h")
        await frame_where(alice, attachment_frame(attachment, "running"))
        pipeline = server.hub.attachment_pipeline
        children = await eventually(lambda: list(pipeline._children), what="the child")
        pid = children[0].pid
        await owner.close()
        await alice.close()
    await eventually(lambda: not Path(f"/proc/{pid}").exists(), what="the child to be gone")
    assert (pipeline.stats.done, pipeline.stats.failed) == (0, 0)  # nothing stored as failed


# ------------------------------------------------------------------ waiting for the jobs


async def test_wait_attachment_results_waits_for_the_jobs_of_a_message_just_posted(server):
    """``hub.wait_attachment_results`` (the SDK call an agent uses): right after
    ``post_message`` returns (its jobs not even queued yet) it waits for them, and returns
    the results; at once when no job runs; ``TimeoutError`` naming the handler still at
    work; ``LookupError`` for an unknown upload."""
    import asyncio

    from hub.base.protocol import UserRef

    await add_plugin(server, ProbePlugin(), "probe")
    owner, alice = await setup_room(server, "lab", "probe")
    hub = server.hub
    author = UserRef(id="alice", name="Alice")
    attachment = await upload(server, "lab", "notes.txt", b"four words right here")
    await hub.post_message("lab", author, "see the notes", attachments=[attachment])
    assert hub.attachment_pipeline.pending(attachment, "unknown") == ["(queued)"]
    found = await hub.wait_attachment_results(attachment, timeout=60)
    assert [(r.handler, r.status, r.summary) for r in found] == [("probe", "done", "4 words")]
    # nothing running: at once, the stored results
    again = await asyncio.wait_for(hub.wait_attachment_results(attachment, timeout=60), 5)
    assert [r.summary for r in again] == ["4 words"]
    # an upload no message carries: nothing to wait for
    lone = await upload(server, "lab", "lone.txt", b"never sent")
    assert await asyncio.wait_for(hub.wait_attachment_results(lone, timeout=60), 5) == []

    # a job that outlasts the wait: TimeoutError saying which handler is at work
    hang = await upload(server, "lab", "hang.txt", b"hang on")
    await hub.post_message("lab", author, "see the hang", attachments=[hang])
    with pytest.raises(TimeoutError, match=r"hang.txt: still being processed after 0.5 s \("):
        await hub.wait_attachment_results(hang, timeout=0.5)  # the job takes 2 s at least
    # and once it has ended (cut off at its timeout), the failure is what there is
    failed = await hub.wait_attachment_results(hang, timeout=60)
    assert [(r.handler, r.status) for r in failed] == [("probe", "failed")]
    assert failed[0].error == f"timed out after {TIMEOUT:g} s"

    with pytest.raises(LookupError):
        await hub.wait_attachment_results("att_nope", timeout=1)
    await owner.close()
    await alice.close()
