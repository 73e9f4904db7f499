"""Uploads no message refers to are deleted after a grace period; referenced ones never are
(issue 13, item 5). Sweeps run in several replicas at once without harm."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import httpx

from hub.media.attachments import PENDING, AttachmentStore, UnknownAttachment
from tests.support import eventually, running
from tests.support import test_settings as hub_settings
from tests.test_attachments import PDF, tiny_png, upload


async def _status(server, att: dict) -> int:
    async with httpx.AsyncClient(base_url=server.http_url) as anon:
        return (await anon.get(att["url"])).status_code


async def test_orphans_are_swept_and_referenced_uploads_kept(server):
    await server.create_room("lobby")
    async with server.http("alice") as http:
        orphan = (await upload(http, "lobby", "o.pdf", PDF, "application/pdf")).json()
        sent = (await upload(http, "lobby", "dot.png", tiny_png(), "image/png")).json()
        legacy = (await upload(http, "lobby", "old.pdf", PDF, "application/pdf")).json()
    store = AttachmentStore.for_settings(server.settings)
    # an upload kept from before the marker existed: it may be referenced, so it stays
    (store.root / legacy["id"] / PENDING).unlink()
    # debris of an upload that died half-written long ago (no sidecar, no marker)
    debris = store.root / ("d" * 22)
    debris.mkdir()
    (debris / "blob").write_bytes(b"half")
    os.utime(debris, (time.time() - 7200, time.time() - 7200))

    alice = await server.client("alice")
    await alice.join("lobby")
    await alice.send(
        {"type": "send", "room": "lobby", "text": "", "attachments": [sent["id"]], "id": "m1"}
    )
    await alice.expect("ack")

    # a grace of an hour: everything is too young
    assert await asyncio.to_thread(store.sweep, 3600.0) == 1  # only the two-hour-old debris
    assert await _status(server, orphan) == 200
    # a tiny grace: the orphan goes, the sent and the legacy uploads stay
    assert await asyncio.to_thread(store.sweep, 0.0) == 1
    assert await _status(server, orphan) == 404
    assert await _status(server, sent) == 200
    assert await _status(server, legacy) == 200
    assert not debris.exists()
    assert await asyncio.to_thread(store.sweep, 0.0) == 0  # sweeping again changes nothing
    assert sorted(os.listdir(store.root)) == sorted([sent["id"], legacy["id"]])

    # the swept upload can no longer be sent; the sent one can be sent again
    await alice.send(
        {"type": "send", "room": "lobby", "text": "", "attachments": [orphan["id"]], "id": "m2"}
    )
    err = await alice.expect("error", skip=("message", "presence"))
    assert err["code"] == "invalid_frame" and "unknown attachment" in err["detail"]
    await alice.send(
        {"type": "send", "room": "lobby", "text": "again", "attachments": [sent["id"]], "id": "m3"}
    )
    await alice.expect("ack", skip=("message", "presence"))
    await alice.close()


async def test_a_refused_message_does_not_mark_its_uploads(server):
    """All ids are checked before any is marked: one bad id leaves the good ones orphans."""
    await server.create_room("lobby")
    async with server.http("alice") as http:
        good = (await upload(http, "lobby", "a.pdf", PDF, "application/pdf")).json()
    alice = await server.client("alice")
    await alice.join("lobby")
    await alice.send(
        {"type": "send", "room": "lobby", "text": "x", "attachments": [good["id"], "y" * 22]}
    )
    assert (await alice.expect("error"))["code"] == "invalid_frame"
    store = AttachmentStore.for_settings(server.settings)
    assert await asyncio.to_thread(store.sweep, 0.0) == 1
    assert await _status(server, good) == 404
    await alice.close()


async def test_the_hub_sweeps_by_itself(tmp_path):
    """A replica with sweeping off takes the uploads; another on the same storage sweeps."""
    async with running(hub_settings(str(tmp_path), upload_sweep_interval=0)) as first:
        await first.create_room("lobby")
        async with first.http("alice") as http:
            orphan = (await upload(http, "lobby", "o.pdf", PDF, "application/pdf")).json()
            sent = (await upload(http, "lobby", "s.pdf", PDF, "application/pdf")).json()
        alice = await first.client("alice")
        await alice.join("lobby")
        await alice.send(
            {"type": "send", "room": "lobby", "text": "", "attachments": [sent["id"]], "id": "m"}
        )
        await alice.expect("ack")
        await alice.close()
        assert await _status(first, orphan) == 200
    settings = hub_settings(str(tmp_path), upload_orphan_grace=0.0, upload_sweep_interval=0.05)
    async with running(settings) as second:

        async def swept() -> bool:
            return await _status(second, orphan) == 404

        await eventually(swept, timeout=20, what="the orphan swept")
        assert await _status(second, sent) == 200


def test_concurrent_sweeps_and_references_never_lose_a_referenced_upload(tmp_path):
    """Four sweepers (replicas sharing the directory) race with messages referring to half of
    the orphans: each orphan is deleted exactly once, and every upload a message managed to
    refer to is still there afterwards."""
    store = AttachmentStore(tmp_path / "attachments", 1024)
    n = 200
    metas = [asyncio.run(store.save("lobby", "alice", f"f{i}.pdf", PDF)) for i in range(n)]
    to_refer = {m.id for m in metas[::2]}

    def refer(attachment_id: str) -> bool:
        try:
            AttachmentStore(store.root, 1024).resolve([attachment_id], "lobby")
        except UnknownAttachment:
            return False
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sweeps = [pool.submit(AttachmentStore(store.root, 1024).sweep, 0.0) for _ in range(4)]
        refers = {i: pool.submit(refer, i) for i in to_refer}
        deleted = sum(f.result() for f in sweeps)
        referred = {i for i, f in refers.items() if f.result()}
    deleted += store.sweep(0.0)  # whatever the racing sweeps had not reached yet

    left = set(os.listdir(store.root))
    assert referred <= left  # a message that got its attachment keeps it
    assert left == referred  # everything else was an orphan and is gone
    assert deleted == n - len(referred)  # each deleted once, whatever the race
