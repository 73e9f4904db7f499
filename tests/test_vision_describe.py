"""The vision plugin's ``describe`` handler (issue 15): an image sent in a room is described,
with the objects seen, by the room's vision model through the real ``openai`` client and the
fake OpenAI-compatible server; plainly "unavailable" without one; a model that errors,
hangs or answers garbage is handled; the assistant reads the description and the OCR text.

Images are rendered here, uploaded through the REST route and sent over the socket.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI, Script, image_parts
from tests.plugin_support import add_plugin, frame_where
from tests.stream_support import upstream
from tests.support import Client, eventually
from tests.test_attachment_pipeline import attachment_frame, results, send, setup_room, upload

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
UNAVAILABLE = "image description unavailable: no vision model is configured"

pytestmark = pytest.mark.skipif(not FONT.is_file(), reason="no DejaVu font")


def text_image(text: str) -> bytes:
    from tests.test_v1_images import text_image as render

    return render(text)


def sent_images(body: dict[str, Any]) -> list[bytes]:
    """The bytes of every ``data:`` image part a request carried."""
    return [
        base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
        for p in image_parts(body)
        if p["image_url"]["url"].startswith("data:")
    ]


def vision_model(body: dict[str, Any]) -> list[str]:
    """A fake vision model: JSON naming the image it got (by hash), streamed in pieces; a
    plain answer to requests without images (the assistant's)."""
    images = sent_images(body)
    if not images:
        return ["Noted ", "from ", "the ", "excerpts."]
    digest = hashlib.sha256(images[0]).hexdigest()[:12]
    answer = json.dumps(
        {
            "description": f"A white card with printed black text (image {digest}).",
            "objects": ["card", "printed text", {"name": "border"}, "card"],
        }
    )
    return [answer[i : i + 20] for i in range(0, len(answer), 20)]


async def vision_room(server: Any, room: str, *plugins: str) -> tuple[Client, Client]:
    import lydian_plugins.vision.plugin as vision

    if "vision" not in server.hub.plugins.names():
        await add_plugin(server, vision, "vision")
    return await setup_room(server, room, "vision", *plugins)


async def described(client: Client, attachment: str, status: str = "done") -> dict[str, Any]:
    return await frame_where(client, attachment_frame(attachment, status, "describe"), timeout=120)


async def test_an_image_is_described_by_the_vision_model_and_the_assistant_reads_it(
    make_server,
):
    pytest.importorskip("pytesseract")
    image = text_image("INVOICE 4711")
    digest = hashlib.sha256(image).hexdigest()
    async with FakeOpenAI(Script(answer=vision_model)) as fake:
        config = upstream(fake, vision_models=["fake-model"])
        async with make_server(plugin_config=config) as server:
            owner, alice = await vision_room(server, "photos", "assistant")
            attachment = await upload(server, "photos", "scan.png", image)
            await send(alice, "photos", attachment, "img")
            done = await described(alice, attachment)
            assert done["summary"].startswith(
                f"A white card with printed black text (image {digest[:12]})."
            ), done
            assert "(objects: card, printed text, border)" in done["summary"]

            # the model got the image itself, as an image_url part with its bytes
            [request] = [r for r in fake.chat_requests() if r.image_parts()]
            assert sent_images(request.body) == [image]
            assert request.image_parts()[0]["image_url"]["url"].startswith("data:image/png;base64,")
            assert "JSON" in request.text() and request.body["model"] == "fake-model"

            stored = (await results(server, "photos", attachment))["describe"]
            assert stored["status"] == "done" and stored["plugin"] == "vision"
            data = stored["data"]
            assert data["available"] is True and data["agent"] == "assistant"
            assert data["description"] == (
                f"A white card with printed black text (image {digest[:12]})."
            )
            assert data["objects"] == ["card", "printed text", "border"]  # deduplicated
            assert stored["markdown"].endswith("Objects: card, printed text, border")
            assert "warnings" not in stored

            # the assistant's prompt carries the image's description and its OCR text
            await frame_where(alice, attachment_frame(attachment, "done", "ocr"), timeout=120)
            before = len(fake.chat_requests())
            await alice.send(
                {
                    "type": "send",
                    "room": "photos",
                    "text": "@assistant what is in the image?",
                    "id": "q",
                }
            )
            asked = await eventually(
                lambda: len(fake.chat_requests()) > before and fake.chat_requests()[-1],
                timeout=30,
                what="the assistant's request",
            )
            prompt = asked.text()
            assert "[scan.png, image]" in prompt, prompt
            assert (
                f"Image description: A white card with printed black text (image {digest[:12]})"
                in prompt
            )
            assert "Objects seen: card, printed text, border" in prompt
            assert "Text read in the image (OCR): INVOICE 4711" in prompt
            assert asked.image_parts() == []  # the assistant reads text, not the image
            await owner.close()
            await alice.close()


async def test_without_a_vision_model_the_result_says_so_plainly(make_server):
    async with FakeOpenAI(Script(answer=vision_model)) as fake:
        # a model server, but no model listed in vision_models
        async with make_server(plugin_config=upstream(fake)) as server:
            owner, alice = await vision_room(server, "photos", "assistant")
            image = text_image("NO MODEL HERE")
            attachment = await upload(server, "photos", "plain.png", image)
            await send(alice, "photos", attachment, "img")
            done = await described(alice, attachment)
            assert done["summary"] == UNAVAILABLE
            stored = (await results(server, "photos", attachment))["describe"]
            assert stored["status"] == "done" and "markdown" not in stored
            assert stored["data"]["available"] is False
            assert stored["data"]["reason"] == "no_vision_model"
            assert fake.chat_requests() == []  # no model was asked

            # a statement about the hub, not the file: the same bytes get a new job
            jobs = server.hub.attachment_pipeline.stats.by_handler["describe"]
            again = await upload(server, "photos", "again.png", image)
            await send(alice, "photos", again, "img2")
            done = await described(alice, again)
            assert done["summary"] == UNAVAILABLE and not done.get("cached")
            assert server.hub.attachment_pipeline.stats.by_handler["describe"] == jobs + 1
            await owner.close()
            await alice.close()


async def test_a_named_describe_agent_without_vision_is_unavailable_too(make_server):
    async with FakeOpenAI(Script(answer=vision_model)) as fake:
        config = {
            **upstream(fake, vision_models=["some-other-model"]),
            "vision": {"rooms": {"photos": {"describe_agent": "nobody"}}},
        }
        async with make_server(plugin_config=config) as server:
            owner, alice = await vision_room(server, "photos", "assistant")
            attachment = await upload(server, "photos", "a.png", text_image("NAMED"))
            await send(alice, "photos", attachment, "img")
            done = await described(alice, attachment)
            assert done["summary"] == (
                f"{UNAVAILABLE} (describe_agent 'nobody' is not an agent of this hub)"
            )
            assert fake.chat_requests() == []
            await owner.close()
            await alice.close()


async def test_a_failing_a_hanging_and_a_garbled_model(make_server):
    script = Script(answer=vision_model, status=500)
    async with FakeOpenAI(script) as fake:
        config = upstream(fake, vision_models=["*"], timeout=1.0)
        async with make_server(plugin_config=config) as server:
            owner, alice = await vision_room(server, "photos", "assistant")

            # the model server answers an error: a failed job saying so
            broken = await upload(server, "photos", "broken.png", text_image("ERROR CASE"))
            await send(alice, "photos", broken, "e")
            failed = await described(alice, broken, "failed")
            assert failed["error"] == (
                "the vision model (agent 'assistant') failed: the model server answered 500: "
                "Error code: 500 - scripted failure"
            ), failed
            stored = (await results(server, "photos", broken))["describe"]
            assert stored["status"] == "failed" and stored["error"] == failed["error"]

            # the model hangs: the provider's timeout fails the job; the connection is closed
            script.status, script.hang_after = 200, 0
            hung = await upload(server, "photos", "hung.png", text_image("HANG CASE"))
            await send(alice, "photos", hung, "h")
            failed = await described(alice, hung, "failed")
            assert failed["error"] == (
                "the vision model (agent 'assistant') failed: the model server timed out"
            ), failed
            request = fake.chat_requests()[-1]
            await eventually(lambda: request.client_closed, what="the hub closing the request")

            # the model answers something that is not the JSON asked for: kept as text
            script.hang_after = None
            script.answer = lambda body: ["Sure! It is ", "a card with text {oops"]
            garbled = await upload(server, "photos", "garbled.png", text_image("GARBLED"))
            await send(alice, "photos", garbled, "g")
            done = await described(alice, garbled)
            assert done["summary"] == "Sure! It is a card with text {oops"
            stored = (await results(server, "photos", garbled))["describe"]
            assert stored["data"]["description"] == "Sure! It is a card with text {oops"
            assert stored["data"]["objects"] == []
            assert stored["warnings"] == [
                "the vision model did not answer with the JSON asked for: its text is kept "
                "as the description, without objects"
            ]

            # and the next image, with the model back to normal, is described
            script.answer = vision_model
            fine = await upload(server, "photos", "fine.png", text_image("FINE AGAIN"))
            await send(alice, "photos", fine, "f")
            done = await described(alice, fine)
            assert "(objects: card, printed text, border)" in done["summary"]

            # the failures were not kept for the bytes: sent again, the image is described
            again = await upload(server, "photos", "broken-again.png", text_image("ERROR CASE"))
            await send(alice, "photos", again, "e2")
            done = await described(alice, again)
            assert not done.get("cached") and done["summary"].startswith("A white card")
            await owner.close()
            await alice.close()


async def test_model_use_is_charged_to_the_uploader_and_refused_past_the_limit(make_server):
    async with FakeOpenAI(Script(answer=vision_model)) as fake:
        config = upstream(fake, vision_models=["fake-model"])
        # one description (an image counts 765 tokens) uses up alice's 500 tokens a day
        async with make_server(plugin_config=config, limit_model_tokens="user=500/d") as server:
            owner, alice = await vision_room(server, "photos", "assistant")
            first = await upload(server, "photos", "one.png", text_image("FIRST"))
            await send(alice, "photos", first, "1")
            assert (await described(alice, first))["summary"].startswith("A white card")
            second = await upload(server, "photos", "two.png", text_image("SECOND"))
            await send(alice, "photos", second, "2")
            done = await described(alice, second)
            assert done["summary"].startswith(
                "image description unavailable: the uploader's model use is refused (you have "
                "used your tokens for now"
            ), done
            stored = (await results(server, "photos", second))["describe"]
            assert stored["data"] == {
                "available": False,
                "reason": "rate_limited",
                "reusable": False,
                "settings": stored["data"]["settings"],
            }
            assert len([r for r in fake.chat_requests() if r.image_parts()]) == 1
            await owner.close()
            await alice.close()


@pytest.mark.parametrize(
    ("answer", "description", "objects", "warnings"),
    [
        ('{"description": "A cat.", "objects": ["cat"]}', "A cat.", ["cat"], 0),
        (
            '```json\n{"description": "A dog.", "objects": ["dog", "ball"]}\n```',
            "A dog.",
            ["dog", "ball"],
            0,
        ),
        (
            'Here you go: {"description": "Two cups.", "objects": [{"label": "cup"}]} Enjoy.',
            "Two cups.",
            ["cup"],
            0,
        ),
        ('{"description": "A tree.", "objects": "tree"}', "A tree.", [], 1),
        ('{"objects": ["lamp"]}', "", ["lamp"], 1),
        ("[1, 2, 3]", "[1, 2, 3]", [], 1),
        ("A plain sentence about a boat.", "A plain sentence about a boat.", [], 1),
        (
            '{"description": "x", "objects": [' + ", ".join(f'"o{i}"' for i in range(60)) + "]}",
            "x",
            [f"o{i}" for i in range(50)],
            1,
        ),
    ],
)
def test_the_model_answer_is_read_leniently(answer, description, objects, warnings):
    from lydian_plugins.vision.describe import parse_answer

    got = parse_answer(answer)
    assert got[0] == description and got[1] == objects
    assert len(got[2]) == warnings, got[2]
