"""Image content parts on ``/v1/chat/completions``, driven by the real ``openai`` client:
passed on to a vision model, read offline without one, refused (400) when malformed."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib
from pathlib import Path

import openai
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.fakes.openai_server import FakeOpenAI, Script, describe_images
from tests.stream_support import upstream

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def client_for(server, user: str = "alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.http_url}/v1", api_key=server.token(user), max_retries=0, timeout=30
    )


def text_image(text: str, fmt: str = "PNG") -> bytes:
    """Black text on white, large enough for Tesseract to read without doubt."""
    font = ImageFont.truetype(str(FONT), 40)
    img = Image.new("RGB", (int(font.getlength(text)) + 80, 120), "white")
    ImageDraw.Draw(img).text((40, 35), text, font=font, fill="black")
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` pixels, with a few bytes of data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def ask(url: str, question: str = "What does the image say?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": question},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


async def test_a_vision_model_receives_the_image_part_and_answers_from_it(make_server):
    image = text_image("INVOICE 4711")
    async with FakeOpenAI(Script(answer=describe_images)) as fake:
        config = upstream(fake, vision_models=["fake-model"])
        async with make_server(plugin_config=config) as server:
            client = client_for(server)
            raw = await client.chat.completions.with_raw_response.create(
                model="assistant", messages=ask(data_url(image))
            )
            answer = raw.parse()
            received = fake.chat_requests()[-1]
            parts = received.image_parts()
            assert [p["image_url"]["url"] for p in parts] == [data_url(image)]
            assert "What does the image say?" in received.text()
            assert "OCR text" not in received.text()  # passed on, not read offline
            size = Image.open(io.BytesIO(image)).size
            digest = hashlib.sha256(image).hexdigest()[:12]
            text = answer.choices[0].message.content
            assert f"PNG {size[0]}x{size[1]}" in text and digest in text
            assert raw.headers["lydian-images"] == "vision_model; count=1"
            assert answer.model_extra["lydian_images"] == {"mode": "vision_model", "images": 1}

            stream = await client.chat.completions.create(
                model="assistant", messages=ask(data_url(image)), stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            assert digest in "".join(pieces)
            assert fake.chat_requests()[-1].image_parts() == parts
            await client.close()


async def test_without_a_vision_model_the_image_is_read_offline_and_the_answer_says_so(
    make_server,
):
    image = text_image("INVOICE 4711 PAID")
    async with FakeOpenAI(Script(tokens=["It ", "says ", "paid."])) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:  # no vision_models
            client = client_for(server)
            raw = await client.chat.completions.with_raw_response.create(
                model="assistant", messages=ask(data_url(image))
            )
            answer = raw.parse()
            received = fake.chat_requests()[-1]
            assert received.image_parts() == []  # the model server takes no images
            sent = received.text()
            assert "What does the image say?" in sent
            assert "[image 1, read offline" in sent and "INVOICE 4711 PAID" in sent
            assert "0 faces" in sent
            assert raw.headers["lydian-images"] == "offline; count=1"
            text = answer.choices[0].message.content
            assert text.startswith("(No vision model is configured: the image was read offline")
            assert text.endswith("It says paid.")
            report = answer.model_extra["lydian_images"]
            assert report["mode"] == "offline"
            [reading] = report["images"]
            assert "INVOICE 4711 PAID" in reading["text"] and reading["faces"] == 0

            stream = await client.chat.completions.create(
                model="assistant", messages=ask(data_url(image)), stream=True
            )
            first = None
            pieces = []
            async for chunk in stream:
                first = first or chunk
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
            assert first.model_extra["lydian_images"]["mode"] == "offline"
            assert "".join(pieces).startswith("(No vision model is configured")
            await client.close()


async def test_the_offline_provider_answers_from_the_ocr_text(server):
    """No model server at all: the offline model echoes the question, OCR text included."""
    client = client_for(server)
    answer = await client.chat.completions.create(
        model="assistant", messages=ask(data_url(text_image("HELLO LYDIAN", "JPEG"), "image/jpeg"))
    )
    text = answer.choices[0].message.content
    assert "[offline model] You said:" in text and "HELLO LYDIAN" in text
    assert "JPEG" in text
    await client.close()


async def test_malformed_image_parts_get_clear_400s(server):
    png = text_image("x")
    client = client_for(server)
    cases = [
        ("data:image/png;base64,@@not base64@@", "not valid base64", "invalid_image"),
        (data_url(png, "image/jpeg"), "declared image/jpeg but the bytes are image/png", None),
        (data_url(b"%PDF-1.7 not an image"), "not a PNG, JPEG, GIF or WebP", None),
        (data_url(png, "image/svg+xml"), "'image/svg+xml' is not an image", None),
        ("https://169.254.169.254/latest/meta-data", "remote image URLs are not accepted", None),
        ("file:///etc/passwd", "must be a base64 data: URL", None),
        (data_url(b"\x89PNG\r\n\x1a\n" + b"\0" * (6 * 1024 * 1024)), "exceeds the limit", None),
        (data_url(b"\x89PNG\r\n\x1a\n truncated"), "messages[0].content[1]", "image_unreadable"),
        (data_url(png_claiming(20_000, 20_000)), "exceeds the limits", "image_unreadable"),
    ]
    for url, message, code in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="assistant", messages=ask(url))
        error = refused.value.body
        assert message in error["message"], (url[:40], error)
        assert "messages[0].content[1]" in error["message"]
        if code:
            assert error["code"] == code
    await client.close()

    async with server.http("alice") as http:
        unknown = {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
        body = {"model": "assistant", "messages": [{"role": "user", "content": [unknown]}]}
        resp = await http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 400  # an unknown part is refused, not skipped
        assert "input_audio" in resp.json()["error"]["message"]
        part = {"type": "image_url", "image_url": {"url": data_url(png)}}
        said = {"role": "assistant", "content": [part]}
        body = {"model": "assistant", "messages": [said, {"role": "user", "content": "so?"}]}
        resp = await http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 400
        assert "only user messages may carry images" in resp.json()["error"]["message"]
        many = [part] * 9
        body = {"model": "assistant", "messages": [{"role": "user", "content": many}]}
        resp = await http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "too_many_images"


async def test_remote_urls_go_only_to_a_vision_model_when_allowed(make_server):
    url = "https://example.com/cat.png"
    async with FakeOpenAI(Script(answer=describe_images)) as fake:
        config = {**upstream(fake), "openai_api": {"remote_images": True}}
        async with make_server(plugin_config=config) as server:  # no vision model
            async with server.http("alice") as http:
                body = {"model": "assistant", "messages": ask(url)}
                resp = await http.post("/v1/chat/completions", json=body)
                assert resp.status_code == 400
                error = resp.json()["error"]
                assert error["code"] == "remote_image_refused"
                assert "needs a vision model" in error["message"]
            assert fake.chat_requests() == []
        config = {
            **upstream(fake, vision_models=["*"]),
            "openai_api": {"remote_images": True},
        }
        async with make_server(plugin_config=config) as server:
            client = client_for(server)
            answer = await client.chat.completions.create(model="assistant", messages=ask(url))
            assert answer.choices[0].message.content == f"image 1 is at {url}. "
            assert fake.chat_requests()[-1].image_parts()[0]["image_url"]["url"] == url
            await client.close()


async def test_the_provider_never_drops_images_for_a_model_without_vision(make_server):
    """Below ``/v1``: a turn with images sent to a model not in ``vision_models`` fails."""
    from hub.sdk import ChatTurn, ImagePart, LLMError

    async with FakeOpenAI() as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            hub = server.hub
            agent = hub.agent("assistant")
            assert hub.accepts_images(agent) is False
            turn = ChatTurn(role="user", content="look", images=[ImagePart(url="data:x")])
            with pytest.raises(LLMError) as failed:
                async for _ in hub.complete(agent, [turn]):
                    pass
            assert failed.value.code == "images_unsupported"
            assert fake.chat_requests() == []
