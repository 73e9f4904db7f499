"""Attachments: upload over HTTP, sniffed media types, limits, download headers, sending."""

from __future__ import annotations

import struct
import zlib

import httpx

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WAV = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + bytes(24)


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def upload(
    client: httpx.AsyncClient, room: str, name: str, data: bytes, ctype: str
) -> httpx.Response:
    return await client.post(f"/api/rooms/{room}/attachments", files={"file": (name, data, ctype)})


async def test_upload_image_audio_document_and_download(server):
    await server.create_room("lobby")
    async with server.http("alice") as http:
        for name, data, ctype, kind in [
            ("dot.png", tiny_png(), "image/png", "image/png"),
            ("clip.wav", WAV, "audio/wav", "audio/wav"),
            ("spec.pdf", PDF, "application/pdf", "application/pdf"),
            ("notes.md", "# Héllo\n- one\n".encode(), "text/markdown", "text/markdown"),
        ]:
            resp = await upload(http, "lobby", name, data, ctype)
            assert resp.status_code == 201, resp.text
            att = resp.json()
            assert (att["name"], att["media_type"], att["size"]) == (name, kind, len(data))
            assert att["url"] == f"/api/attachments/{att['id']}"
            async with httpx.AsyncClient(base_url=server.http_url) as anon:
                got = await anon.get(att["url"])
            assert got.status_code == 200
            assert got.content == data
            assert got.headers["content-type"].startswith(kind)
            assert got.headers["x-content-type-options"] == "nosniff"
            assert "sandbox" in got.headers["content-security-policy"]
            inline = kind.startswith(("image/", "audio/"))
            disposition = got.headers["content-disposition"]
            assert disposition.startswith("inline" if inline else "attachment"), disposition
            assert name in disposition


async def test_media_type_is_sniffed_not_trusted(server):
    await server.create_room("lobby")
    async with server.http("alice") as http:
        # HTML claiming to be an image is stored as what it is: plain text, never HTML
        resp = await upload(http, "lobby", "x.png", b"<script>alert(1)</script>", "image/png")
        assert resp.status_code == 201
        assert resp.json()["media_type"] == "text/plain"
        got = await http.get(resp.json()["url"])
        assert got.headers["content-type"].startswith("text/plain")
        assert got.headers["content-disposition"].startswith("attachment")
        # a binary blob (an executable) is refused with a clear reason
        resp = await upload(http, "lobby", "a.exe", b"MZ\x90\x00" + bytes(64), "image/png")
        assert resp.status_code == 415
        assert "not a supported" in resp.json()["detail"]
        # a zip that is not an office document is refused too
        resp = await upload(http, "lobby", "a.zip", b"PK\x03\x04" + bytes(40), "application/zip")
        assert resp.status_code == 415


async def test_bad_uploads_get_clear_errors(make_server):
    async with make_server(max_upload_bytes=1000) as server:
        await server.create_room("lobby")
        await server.create_room("secret", private=True)
        async with server.http("alice") as http:
            resp = await upload(http, "lobby", "big.pdf", PDF + bytes(2000), "application/pdf")
            assert resp.status_code == 413, resp.text
            resp = await upload(http, "lobby", "empty.pdf", b"", "application/pdf")
            assert resp.status_code == 400 and "empty" in resp.json()["detail"]
            resp = await http.post("/api/rooms/lobby/attachments", data={"other": "x"})
            assert resp.status_code == 400 and "'file'" in resp.json()["detail"]
            resp = await http.post(
                "/api/rooms/lobby/attachments",
                content=b"--zz\r\nnonsense",
                headers={"content-type": "multipart/form-data; boundary=zz"},
            )
            assert resp.status_code == 400
            resp = await upload(http, "nowhere", "a.pdf", PDF, "application/pdf")
            assert resp.status_code == 404
            resp = await upload(http, "secret", "a.pdf", PDF, "application/pdf")
            assert resp.status_code == 403
        async with httpx.AsyncClient(base_url=server.http_url) as anon:
            resp = await upload(anon, "lobby", "a.pdf", PDF, "application/pdf")
            assert resp.status_code == 401
            for bad in ("nope", "../../secret", "a" * 100):
                assert (await anon.get(f"/api/attachments/{bad}")).status_code == 404
        # after all that, a good upload still works
        async with server.http("alice") as http:
            assert (await upload(http, "lobby", "a.pdf", PDF, "application/pdf")).status_code == 201


async def test_send_with_attachments_carries_them_to_everyone(server):
    await server.create_room("lobby")
    await server.create_room("other")
    async with server.http("alice") as http:
        att = (await upload(http, "lobby", "dot.png", tiny_png(), "image/png")).json()
        foreign = (await upload(http, "other", "spec.pdf", PDF, "application/pdf")).json()
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.join("lobby")
    await bob.join("lobby")

    await alice.send({"type": "send", "room": "lobby", "text": "", "attachments": ["x" * 22]})
    err = await alice.expect("error")
    assert err["code"] == "invalid_frame" and "unknown attachment" in err["detail"]
    # an upload to another room cannot be smuggled into this one
    await alice.send(
        {"type": "send", "room": "lobby", "text": "hi", "attachments": [foreign["id"]]}
    )
    assert (await alice.expect("error"))["code"] == "invalid_frame"
    await alice.send({"type": "send", "room": "lobby", "text": "", "id": "e"})
    assert (await alice.expect("error"))["detail"] == "message text is empty"

    # an attachment without text is a message of its own
    await alice.send(
        {"type": "send", "room": "lobby", "text": "", "attachments": [att["id"]], "id": "m1"}
    )
    ack = await alice.expect("ack")
    assert ack["offset"] == 1
    message = (await bob.expect("message"))["message"]
    assert message["attachments"] == [att]
    assert message["offset"] == 1  # the refused sends above posted nothing

    # and history keeps it
    async with server.http("bob") as http:
        page = (await http.get("/api/rooms/lobby/messages")).json()
    assert page["messages"][0]["attachments"] == [att]
