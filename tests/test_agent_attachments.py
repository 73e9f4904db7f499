"""Agents see attachments (issue 15): the ``documents`` handler's chunks of an uploaded PDF
reach the assistant's prompt (the fake OpenAI-compatible server records what it was sent),
the relevant page and not the others, under their citations; ``/extract``, ``/ocr`` and
``/summarize`` on the room's attachments.

A real hub, the real documents plugin (extraction in its child process) and the real
OpenAI-compatible provider plugin pointed at ``tests.fakes.openai_server``.
"""

from __future__ import annotations

from typing import Any

import pytest

from lydian_plugins.assistant.files import INSTRUCTION, PENDING, rank, select
from tests.attachment_handlers import ProbePlugin
from tests.documents_support import PageFlow, make_pdf
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.plugin_support import add_plugin, command, frame_where
from tests.stream_support import collect, text_of, upstream
from tests.support import Client, HubServer
from tests.test_attachment_pipeline import attachment_frame, enable, upload

LEASE = "The Zanzibar warehouse lease expires on 14 March 2031 at a rent of 7,450 euros."
FERRY = "The Okapi ferry contract was signed with Brightwater Marine for nine years."
FILLER = {
    1: "Our staff handbook explains holidays, travel rules and the office opening hours.",
    3: "The marketing plan lists trade fairs, newsletters and the website redesign.",
    4: "Quality audits found the assembly line in good order and the training complete.",
    5: FERRY,
    6: "The appendix has the glossary of terms and the list of abbreviations used here.",
}


def handbook_pdf() -> bytes:
    """Six pages of about 300 tokens each; page 2 holds the lease, page 5 the ferry."""
    pages = []
    for number in range(1, 7):
        flow = PageFlow()
        flow.heading(f"Part {number}", 14)
        unique = LEASE if number == 2 else FILLER[number]
        # the unique sentence in the middle of ordinary text, repeated filler around it
        flow.paragraph("Routine matters are described in this part at some length. " * 8)
        flow.paragraph(unique)
        flow.paragraph("Nothing else of note happened in the period under review. " * 8)
        pages.append(flow.page)
    return make_pdf(pages)


async def shared_pdf(server: HubServer, alice: Client, owner: Client, room: str) -> str:
    """Upload the handbook, share it in a message, wait until the documents handler is done."""
    attachment = await upload(server, room, "handbook.pdf", handbook_pdf())
    await alice.send(
        {
            "type": "send",
            "room": room,
            "text": "here is the handbook",
            "attachments": [attachment],
            "id": "share",
        }
    )
    await frame_where(alice, attachment_frame(attachment, "done", "documents"), timeout=60)
    await frame_where(owner, attachment_frame(attachment, "done", "documents"), timeout=10)
    return attachment


async def room_with(server: HubServer, room: str, *plugins: str) -> tuple[Client, Client]:
    import lydian_plugins.documents.plugin as documents

    if "documents" not in server.hub.plugins.names():
        await add_plugin(server, documents, "documents")  # installed: not by every test config
    await server.create_room(room)
    owner = await server.client("owner", admin=True)
    await owner.join(room)
    for plugin in plugins:
        await enable(owner, room, plugin)
    alice = await server.client("alice")
    await alice.join(room)
    return owner, alice


def system_text(body: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


# ------------------------------------------------------------------ the prompt


async def test_the_agent_gets_the_relevant_page_with_its_citation(make_server):
    pytest.importorskip("pypdfium2")
    script = Script(tokens=["It expires on 14 March 2031 ", "(handbook.pdf, p. 2)."])
    async with FakeOpenAI(script) as fake:
        config = {**upstream(fake), "assistant": {"context_tokens": 1400}}
        async with make_server(plugin_config=config) as server:
            owner, alice = await room_with(server, "ops", "documents", "assistant")
            await shared_pdf(server, alice, owner, "ops")

            await alice.send(
                {
                    "type": "send",
                    "room": "ops",
                    "text": "@assistant when does the Zanzibar warehouse lease expire?",
                    "id": "q1",
                }
            )
            answer = await collect(alice, timeout=15)
            assert answer["end"]["type"] == "stream_end", answer["end"]
            body = fake.chat_requests()[-1].body
            system = system_text(body)
            # the citing instruction, then page 2's chunk under its citation
            assert INSTRUCTION in system
            assert "[handbook.pdf, p. 2]\n" in system
            page2 = system.split("[handbook.pdf, p. 2]\n", 1)[1]
            assert LEASE in page2.split("\n\n[", 1)[0]
            # within the budget (700 tokens: 1400 // 2), so not every page came along
            assert FERRY not in system and "[handbook.pdf, p. 5]" not in system
            assert sum(f"[handbook.pdf, p. {n}]" in system for n in range(1, 7)) < 6
            # the excerpts come before the room's history and the question, which is last
            assert body["messages"][-1]["content"].endswith("Zanzibar warehouse lease expire?")
            # the stored answer is what the model said, citation included
            history = await server.hub.history("ops")
            assert history[-1].user.id == "agent:assistant"
            assert history[-1].text == "It expires on 14 March 2031 (handbook.pdf, p. 2)."

            # another question, through /ask: now page 5 is the relevant one
            reply = await command(alice, "ops", "/ask who runs the Okapi ferry contract?", "q2")
            assert reply["type"] == "command_result", reply
            await collect(alice, timeout=15)
            system = system_text(fake.chat_requests()[-1].body)
            assert "[handbook.pdf, p. 5]\n" in system and FERRY in system
            assert LEASE not in system
            await owner.close()
            await alice.close()


async def test_a_question_sent_with_its_pdf_waits_for_the_extraction(make_server):
    """The PDF and the question in one message: the jobs start with the message, and the
    assistant waits for them (``hub.wait_attachment_results``) before building its prompt."""
    pytest.importorskip("pypdfium2")
    script = Script(tokens=["It expires on 14 March 2031 ", "(handbook.pdf, p. 2)."])
    async with FakeOpenAI(script) as fake:
        config = {**upstream(fake), "assistant": {"context_tokens": 1400}}
        async with make_server(plugin_config=config) as server:
            owner, alice = await room_with(server, "ops", "documents", "assistant")
            attachment = await upload(server, "ops", "handbook.pdf", handbook_pdf())
            await alice.send(
                {
                    "type": "send",
                    "room": "ops",
                    "text": "@assistant when does the Zanzibar warehouse lease expire?",
                    "attachments": [attachment],
                    "id": "q1",
                }
            )
            answer = await collect(alice, timeout=90)
            assert answer["end"]["type"] == "stream_end", answer["end"]
            assert text_of(answer) == "It expires on 14 March 2031 (handbook.pdf, p. 2)."
            # the extraction ended before the answer started
            kinds = [
                (f["type"], f.get("status"))
                for f in alice.seen
                if f["type"] == "stream_start"
                or (f["type"] == "attachment" and f["attachment"] == attachment)
            ]
            assert kinds.index(("attachment", "done")) < kinds.index(("stream_start", None))
            (request,) = fake.chat_requests()
            system = system_text(request.body)
            assert "[handbook.pdf, p. 2]\n" in system
            assert LEASE in system.split("[handbook.pdf, p. 2]\n", 1)[1].split("\n\n[", 1)[0]
            assert "Still being processed" not in system
            history = await server.hub.history("ops")
            assert [m.user.id for m in history] == ["alice", "agent:assistant"]
            await owner.close()
            await alice.close()


async def test_a_file_still_processing_after_file_wait_is_named_and_the_answer_comes(make_server):
    """A job that outlasts ``file_wait``: the assistant answers anyway, tells the room the
    file is still being processed, and tells the model not to guess its content."""
    async with FakeOpenAI(Script(tokens=["I cannot read it yet."])) as fake:
        config = {**upstream(fake), "assistant": {"file_wait": 0.5}}
        async with make_server(plugin_config=config) as server:
            await add_plugin(server, ProbePlugin(), "probe")
            owner, alice = await room_with(server, "ops", "probe", "assistant")
            # the probe handler hangs on this file until its 2 s timeout: longer than 0.5 s
            slow = await upload(server, "ops", "minutes.txt", b"hang for a while")
            await alice.send(
                {
                    "type": "send",
                    "room": "ops",
                    "text": "@assistant what do the minutes say?",
                    "attachments": [slow],
                    "id": "q1",
                }
            )
            notice = await frame_where(
                alice,
                lambda f: f["type"] == "message" and f["message"]["kind"] == "system",
                timeout=30,
            )
            assert notice["message"]["text"] == (
                "minutes.txt is still being processed: this answer does not use it yet. "
                "Ask again once the room shows it done."
            )
            assert notice["message"]["meta"]["files_pending"] == ["minutes.txt"]
            answer = await collect(alice, timeout=30)
            assert text_of(answer) == "I cannot read it yet."
            system = system_text(fake.chat_requests()[-1].body)
            assert PENDING.format(names="minutes.txt", pronoun="it", s="s") in system
            # the job was still at work when the answer started
            started = next(i for i, f in enumerate(alice.seen) if f["type"] == "stream_start")
            ended = [
                i
                for i, f in enumerate(alice.seen)
                if f["type"] == "attachment" and f["status"] in ("done", "failed")
            ]
            assert not ended or ended[0] > started
            await owner.close()
            await alice.close()


SCANNED = ["Okapi ferry contract", "signed with Brightwater Marine", "for nine years"]


def scanned_handbook_pdf() -> bytes:
    """Three pages; page 2 is only a picture of text (a scan, no text layer)."""
    from tests.test_vision import encoded, render

    picture = render(SCANNED, size=40).convert("RGB")
    jpeg = encoded(picture, "JPEG", quality=95)
    pages = []
    for number in (1, 2, 3):
        flow = PageFlow()
        if number == 2:
            width, height = picture.size
            flow.image(jpeg, width, height, w=width * 0.4, h=height * 0.4)
        else:
            flow.heading(f"Part {number}", 14)
            flow.paragraph(FILLER[number + 1 if number > 1 else 1])  # holidays; audits
        pages.append(flow.page)
    return make_pdf(pages)


async def test_ocr_text_of_a_scanned_page_reaches_the_agent_with_its_page(make_server):
    """A scanned page read by OCR is in the chunks (with its page, ``ocr: true``), so the
    question about its text gets it under ``[scan.pdf, p. 2]``, and the answer cites it."""
    pytest.importorskip("pypdfium2")
    pytest.importorskip("pytesseract")
    pytest.importorskip("skimage")  # tests.test_vision's imports
    import shutil

    if shutil.which("tesseract") is None:
        pytest.skip("no tesseract")
    script = Script(tokens=["Brightwater Marine ", "(scan.pdf, p. 2)."])
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            owner, alice = await room_with(server, "ops", "documents", "assistant")
            attachment = await upload(server, "ops", "scan.pdf", scanned_handbook_pdf())
            await alice.send(
                {
                    "type": "send",
                    "room": "ops",
                    "text": "@assistant who signed the Okapi ferry contract?",
                    "attachments": [attachment],
                    "id": "q1",
                }
            )
            answer = await collect(alice, timeout=120)
            assert text_of(answer) == "Brightwater Marine (scan.pdf, p. 2)."
            (result,) = await server.hub.attachment_results(attachment)
            assert result.data["needs_ocr"] == [2] and result.data["ocr_pages"] == [2]
            scanned = [c for c in result.data["chunks"] if c["page"] == 2]
            assert scanned and all(c.get("ocr") is True for c in scanned)
            assert all(c["citation"] == "scan.pdf, p. 2" for c in scanned)
            assert [c["page"] for c in result.data["chunks"]] == sorted(
                c["page"] for c in result.data["chunks"]
            )  # in page order, between pages 1 and 3
            assert not [c for c in result.data["chunks"] if c["page"] != 2 and c.get("ocr")]
            system = system_text(fake.chat_requests()[-1].body)
            assert "[scan.pdf, p. 2]\n" in system
            excerpt = system.split("[scan.pdf, p. 2]\n", 1)[1].split("\n\n[", 1)[0]
            # the page's OCR text (after the end of page 1's chunk, the overlap)
            assert " ".join(excerpt.split()).endswith(" ".join(SCANNED)), system
            assert "[scan.pdf, p. 1]" not in system and "[scan.pdf, p. 3]" not in system
            await owner.close()
            await alice.close()


async def test_no_files_no_excerpts_and_a_disabled_budget(make_server):
    pytest.importorskip("pypdfium2")
    async with FakeOpenAI(Script(tokens=["ok"])) as fake:
        config = {**upstream(fake), "assistant": {"document_tokens": 0}}
        async with make_server(plugin_config=config) as server:
            owner, alice = await room_with(server, "ops", "documents", "assistant")
            await command(alice, "ops", "/ask anything about the Zanzibar lease?", "q0")
            await collect(alice, timeout=15)
            assert INSTRUCTION not in system_text(fake.chat_requests()[-1].body)
            await shared_pdf(server, alice, owner, "ops")
            # document_tokens = 0: files are not used even though one is relevant
            await command(alice, "ops", "/ask anything about the Zanzibar lease?", "q1")
            await collect(alice, timeout=15)
            assert LEASE not in system_text(fake.chat_requests()[-1].body)
            await owner.close()
            await alice.close()


def test_ranking_prefers_the_chunk_that_shares_rare_words():
    texts = [
        "routine matters of the period under review " * 5,
        "the zanzibar warehouse lease expires in march " + "routine matters " * 5,
        "routine matters and the warehouse cleaning rota " * 3,
    ]
    scores = rank("When does the Zanzibar warehouse lease expire?", texts)
    assert scores[1] > scores[2] > scores[0] == 0.0
    chunks = [{"text": t, "tokens": 30, "citation": f"x.pdf, p. {i}"} for i, t in enumerate(texts)]
    assert [c["citation"] for c in select("zanzibar lease", chunks, 40, fallback=False)] == [
        "x.pdf, p. 1"
    ]
    # no word in common: nothing, unless the file was asked about directly (its start)
    assert select("summarise it", chunks, 100, fallback=False) == []
    assert len(select("summarise it", chunks, 65, fallback=True)) == 2


# ------------------------------------------------------------------ the commands


async def test_extract_ocr_and_their_errors(make_server):
    pytest.importorskip("pypdfium2")
    async with make_server() as server:
        owner, alice = await room_with(server, "docs", "documents")
        reply = await command(alice, "docs", "/extract", "none")
        assert reply["type"] == "error" and "no attachment in the last" in reply["detail"], reply

        attachment = await shared_pdf(server, alice, owner, "docs")
        reply = await command(alice, "docs", "/extract", "last")
        assert reply["type"] == "command_result", reply
        assert reply["text"].startswith("handbook.pdf (PDF, 6 pages")
        # page 2 is within the first 3,000 characters shown, page 5 beyond them
        assert LEASE in reply["text"] and FERRY not in reply["text"]
        assert (
            "(text truncated: 2,996 of 6,267 characters shown; the whole text: GET "
            in (reply["text"])
        )
        by_id = await command(alice, "docs", f"/extract {attachment}", "by-id")
        assert by_id["text"] == reply["text"]

        reply = await command(alice, "docs", "/extract att_nope", "unknown")
        assert reply["type"] == "error", reply
        assert reply["detail"] == "no attachment 'att_nope' in the last 500 messages of this room"

        reply = await command(alice, "docs", "/ocr", "ocr")
        assert reply["type"] == "error", reply
        assert "no OCR result: enable the vision plugin" in reply["detail"]

        # a long text file: cut, with a note saying how much and where the rest is
        words = " ".join(f"word{i}" for i in range(2000))
        long = await upload(server, "docs", "long.txt", words.encode())
        await alice.send(
            {"type": "send", "room": "docs", "text": "long", "attachments": [long], "id": "l"}
        )
        await frame_where(alice, attachment_frame(long, "done", "documents"), timeout=60)
        reply = await command(alice, "docs", "/extract", "long")
        assert reply["type"] == "command_result", reply
        assert "word0 word1" in reply["text"] and "word1999" not in reply["text"]
        assert (
            f"characters shown; the whole text: GET /api/rooms/docs/attachments/{long}"
            in (reply["text"])
        )
        # an attachment of another room is not reachable from here
        await server.create_room("other")
        root = await server.client("root", admin=True)
        await root.join("other")
        await enable(root, "other", "documents")
        reply = await command(root, "other", f"/extract {attachment}", "elsewhere")
        assert reply["type"] == "error" and "no attachment" in reply["detail"], reply
        await root.close()
        await owner.close()
        await alice.close()


async def test_extract_without_the_documents_plugin_says_so(make_server):
    async with make_server() as server:
        owner, alice = await room_with(server, "docs")
        attachment = await upload(server, "docs", "notes.txt", b"plain notes")
        await alice.send(  # documents off when the file is shared: not extracted
            {"type": "send", "room": "docs", "text": "n", "attachments": [attachment], "id": "n"}
        )
        await frame_where(alice, lambda f: f["type"] == "ack" and f.get("id") == "n")
        await enable(owner, "docs", "documents")  # on for the command
        reply = await command(alice, "docs", "/extract", "x")
        assert reply["type"] == "error" and "notes.txt: not extracted" in reply["detail"], reply
        await owner.close()
        await alice.close()


async def test_summarize_streams_the_agents_summary_of_the_chunks(make_server):
    pytest.importorskip("pypdfium2")
    async with FakeOpenAI(Script(tokens=["A handbook ", "(handbook.pdf, p. 1)."])) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            owner, alice = await room_with(server, "docs", "documents")
            attachment = await shared_pdf(server, alice, owner, "docs")
            reply = await command(alice, "docs", "/summarize", "s0")
            assert reply["type"] == "error", reply
            assert "no agent is enabled in this room" in reply["detail"]

            await enable(owner, "docs", "assistant")
            reply = await command(alice, "docs", "/summarize", "s1")
            assert reply["type"] == "command_result", reply
            assert reply["text"] == "Assistant is summarising handbook.pdf…"
            stream = await collect(alice, timeout=15)
            assert stream["start"]["agent"]["id"] == "agent:assistant"
            assert stream["start"]["requested_by"] == "alice"
            assert text_of(stream) == "A handbook (handbook.pdf, p. 1)."
            body = fake.chat_requests()[-1].body
            system = system_text(body)
            assert "Summarise the document" in system
            # the whole (short) document, every page under its citation, in order
            at = [system.index(f"[handbook.pdf, p. {n}]") for n in range(1, 7)]
            assert at == sorted(at)
            assert LEASE in system and FERRY in system
            assert body["messages"][-1]["content"] == "Alice asks: summarise handbook.pdf."

            reply = await command(alice, "docs", "/summarize att_nope", "s2")
            assert reply["type"] == "error" and "no attachment 'att_nope'" in reply["detail"]
            reply = await command(alice, "docs", f"/summarize {attachment} nobody", "s3")
            assert reply["type"] == "error", reply
            assert reply["detail"] == "no agent 'nobody' is enabled here (enabled: assistant)"
            await owner.close()
            await alice.close()
