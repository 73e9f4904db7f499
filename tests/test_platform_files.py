"""Files shared in Slack and Discord brought into the hub (issue 15), and passwords of
encrypted PDFs given with ``/password`` or REST.

A PDF shared on a platform is fetched with the platform's auth (the fakes check it: Slack's
bot token on ``url_private``, Discord's signed CDN URL), stored as a hub upload of the room,
processed by the documents handler, and its summary comes back as a threaded reply. A file
over ``max_upload_bytes`` or one that cannot be fetched gives its author a notice, and the
message is still relayed (with the link). Real slack-bolt/slack_sdk and discord.py.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from tests.adapter_support import (
    DISCORD_TOKEN,
    SIGNING_SECRET,
    SLACK_TOKEN,
    discord_env,
    eventually,
    slack_env,
)
from tests.fakes.discord import BOT, FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.plugin_support import add_plugin, command, frame_where
from tests.test_attachment_pipeline import attachment_frame, enable, upload

pytest.importorskip("pypdfium2")

SLACK_CHANNEL = "C0FILES"
DISCORD_CHANNEL = "800000000000000001"
ALICE = FakeDiscord.user("700000000000000001", "Alice")
LIMIT = 200_000  # max_upload_bytes of these hubs


def report() -> bytes:
    from tests.test_documents_extract import report_pdf

    return report_pdf()


LAST_WORDS = "The final clause names the Quokka harbour as the place of delivery."


def long_pdf() -> bytes:
    """Three pages of text, several thousand characters extracted: more than a reply
    quotes (``REPLY_EXCERPT``), so it goes to the platform as a file."""
    from tests.documents_support import PageFlow, make_pdf

    pages = []
    for number in range(1, 4):
        flow = PageFlow()
        flow.heading(f"Chapter {number}", 14)
        for _ in range(4):
            flow.paragraph(f"Chapter {number} sets out the terms of the agreement in detail. " * 4)
        if number == 3:
            flow.paragraph(LAST_WORDS)
        pages.append(flow.page)
    return make_pdf(pages)


async def _extracted(server, attachment: str) -> str:
    (result,) = [
        r for r in await server.hub.attachment_results(attachment) if r.handler == "documents"
    ]
    return result.markdown.strip()


def locked_pdf(password: str) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(report())))
    writer.encrypt(user_password=password, owner_password="owner-" + password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture
async def slack():
    fake = FakeSlack(SIGNING_SECRET, token=SLACK_TOKEN)
    await fake.start()
    fake.add_user("UALICE", "Alice")
    try:
        yield fake
    finally:
        await fake.settle()
        await fake.stop()


@pytest.fixture
async def discord_fake():
    fake = FakeDiscord(DISCORD_TOKEN)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def _documents(server) -> None:
    """The documents plugin in the hub (found by its entry point, else registered here)."""
    import lydian_plugins.documents.plugin as documents

    if "documents" not in server.hub.plugins._records:
        await add_plugin(server, documents, "documents")


async def _with_documents(server, room: str, platform: str, channel: str):
    """Room ``room`` bridged to ``channel`` with the documents handler enabled; its owner."""
    await _documents(server)
    await server.create_room(room)
    owner = await server.client("owner", admin=True)
    await owner.join(room)
    await enable(owner, room, "documents")
    async with server.http("root", admin=True) as http:
        resp = await http.post(
            f"/api/rooms/{room}/bridges", json={"platform": platform, "channel": channel}
        )
        assert resp.status_code == 201, resp.text
    return owner


def _message_with(owner, text: str) -> dict:
    return next(
        f["message"] for f in owner.seen if f["type"] == "message" and f["message"]["text"] == text
    )


# ------------------------------------------------------------------ Slack


async def test_pdf_shared_in_slack_is_fetched_processed_and_answered_in_its_thread(
    make_server, slack, monkeypatch
):
    slack_env(monkeypatch)
    config = {"api_url": slack.api_url, "edit_interval": 0.05}
    async with make_server(max_upload_bytes=LIMIT, plugin_config={"slack": config}) as server:
        slack.hub_url = server.http_url
        owner = await _with_documents(server, "files", "slack", SLACK_CHANNEL)
        shared = slack.add_file("report.pdf", report(), "application/pdf")
        ts = await slack.user_says(
            SLACK_CHANNEL,
            "UALICE",
            "our report",
            extra={"subtype": "file_share", "files": [shared]},
        )
        frame = await frame_where(
            owner, lambda f: f["type"] == "message" and f["message"]["text"] == "our report"
        )
        (attachment,) = frame["message"]["attachments"]
        assert ":" not in attachment["id"], attachment  # a hub upload, not a link
        assert attachment["name"] == "report.pdf" and attachment["media_type"] == "application/pdf"
        assert slack.file_fetches == [(shared["id"], f"Bearer {SLACK_TOKEN}")]
        done = await frame_where(
            owner, attachment_frame(attachment["id"], "done", "documents"), timeout=60
        )
        assert done["summary"].startswith("PDF, 3 pages"), done

        def threaded():
            return [p for p in slack.posted() if p.get("thread_ts") == ts]

        (reply,) = await eventually(threaded, what="the threaded reply", timeout=10)
        assert reply["channel"] == SLACK_CHANNEL
        assert "report.pdf" in reply["text"] and done["summary"] in reply["text"]
        assert "Quarterly Report" in reply["text"]  # the extracted text, quoted
        await owner.close()


async def test_long_text_goes_to_the_slack_thread_as_a_file_or_cut_when_the_upload_fails(
    make_server, slack, monkeypatch
):
    from lydian_adapters.bridge.service import REPLY_EXCERPT

    slack_env(monkeypatch)
    config = {"api_url": slack.api_url, "edit_interval": 0.05}
    async with make_server(max_upload_bytes=LIMIT, plugin_config={"slack": config}) as server:
        slack.hub_url = server.http_url
        owner = await _with_documents(server, "files", "slack", SLACK_CHANNEL)
        shared = slack.add_file("terms.pdf", long_pdf(), "application/pdf")
        ts = await slack.user_says(
            SLACK_CHANNEL, "UALICE", "the terms", extra={"subtype": "file_share", "files": [shared]}
        )
        attachment = _message_with(await _seen(owner, "the terms"), "the terms")["attachments"][0][
            "id"
        ]
        done = await frame_where(
            owner, attachment_frame(attachment, "done", "documents"), timeout=60
        )
        full = await _extracted(server, attachment)
        assert len(full) > REPLY_EXCERPT and full.endswith(LAST_WORDS)

        def uploaded():
            return [u for u in slack.uploads.values() if u["shared"] and u["thread_ts"] == ts]

        (upload,) = await eventually(uploaded, what="the file in the thread", timeout=10)
        # files_upload_v2's three steps: URL, bytes, completion in the thread
        methods = [m for m, _, _ in slack.calls if m.startswith("files.")]
        assert methods == ["files.getUploadURLExternal", "files.completeUploadExternal"]
        assert upload["data"].decode() == full  # the whole extracted text
        assert upload["filename"] == upload["title"] == "terms.pdf.documents.md"
        assert upload["length"] == len(upload["data"]) and upload["channel"] == SLACK_CHANNEL
        assert upload["initial_comment"] == (
            f"📄 terms.pdf (documents): {done['summary']}\nThe extracted text "
            f"({len(full):,} characters) is in the attached file terms.pdf.documents.md."
        )
        (message,) = [
            m
            for m in slack.in_channel(SLACK_CHANNEL)
            if m.get("thread_ts") == ts and m.get("files")
        ]
        assert message["files"][0]["id"] == upload["id"] and message["bot_id"] == "BBOT"
        assert not [p for p in slack.posted() if p.get("thread_ts") == ts]  # no quoted text

        # the upload fails (the upload URL answers 500): the text cut, with a note
        slack.fail_uploads = 1
        again = slack.add_file("terms-2.pdf", long_pdf() + b"\n", "application/pdf")
        ts2 = await slack.user_says(
            SLACK_CHANNEL, "UALICE", "once more", extra={"subtype": "file_share", "files": [again]}
        )
        second = _message_with(await _seen(owner, "once more"), "once more")["attachments"][0]["id"]
        (reply,) = await eventually(
            lambda: [p for p in slack.posted() if p.get("thread_ts") == ts2],
            what="the cut reply",
            timeout=60,
        )
        text = reply["text"]
        assert text.startswith("📄 terms-2.pdf (documents): PDF, 3 pages")
        assert full[:200] in text and LAST_WORDS not in text
        assert (
            f"… (cut at 1,500 of {len(full):,} characters; it could not be sent as a file (" in text
        )
        assert (
            f"the whole text is in the hub: GET /api/rooms/files/attachments/{second}/results)"
            in text
        )
        assert not [u for u in slack.uploads.values() if u["shared"] and u["thread_ts"] == ts2]
        await owner.close()


async def _seen(owner, text: str):
    await frame_where(owner, lambda f: f["type"] == "message" and f["message"]["text"] == text)
    return owner


async def test_slack_file_over_the_limit_or_not_fetchable_gives_a_notice_and_the_text_arrives(
    make_server, slack, monkeypatch
):
    slack_env(monkeypatch)
    config = {"api_url": slack.api_url, "edit_interval": 0.05}
    async with make_server(max_upload_bytes=LIMIT, plugin_config={"slack": config}) as server:
        slack.hub_url = server.http_url
        owner = await _with_documents(server, "files", "slack", SLACK_CHANNEL)
        big = slack.add_file("big.pdf", b"%PDF-1.7\n" + b"0" * 100, "application/pdf")
        big["size"] = LIMIT + 1  # as Slack declares it: not even fetched
        await slack.user_says(
            SLACK_CHANNEL, "UALICE", "a big one", extra={"subtype": "file_share", "files": [big]}
        )
        message = (
            await frame_where(
                owner, lambda f: f["type"] == "message" and f["message"]["text"] == "a big one"
            )
        )["message"]
        assert [a["id"] for a in message["attachments"]] == [f"slack:{big['id']}"]
        assert slack.file_fetches == []
        notices = await eventually(
            lambda: slack.posted("chat.postEphemeral"), what="the notice", timeout=10
        )
        assert notices[0]["user"] == "UALICE"
        assert "big.pdf was not brought into the hub" in notices[0]["text"]
        assert f"{LIMIT:,}" in notices[0]["text"]

        gone = slack.add_file("gone.pdf", b"%PDF-1.7\n", "application/pdf")
        del slack.files[gone["id"]]  # Slack answers 404
        await slack.user_says(
            SLACK_CHANNEL, "UALICE", "a lost one", extra={"subtype": "file_share", "files": [gone]}
        )
        message = (
            await frame_where(
                owner, lambda f: f["type"] == "message" and f["message"]["text"] == "a lost one"
            )
        )["message"]
        assert [a["id"] for a in message["attachments"]] == [f"slack:{gone['id']}"]
        notices = await eventually(
            lambda: slack.posted("chat.postEphemeral")[1:], what="a second notice", timeout=10
        )
        assert "gone.pdf was not brought into the hub" in notices[0]["text"]
        assert "could not be fetched from Slack (HTTP 404)" in notices[0]["text"]
        await owner.close()


# ------------------------------------------------------------------ Discord


async def _discord_ready(server, fake) -> None:
    from lydian_adapters.discord.plugin import adapter_for

    await eventually(lambda: fake.identified.is_set(), what="IDENTIFY")
    adapter = adapter_for(server.hub)
    assert adapter is not None
    await eventually(lambda: adapter.ready.is_set(), what="READY")


def _replies_to(fake: FakeDiscord, message_id: str) -> list[dict]:
    return [
        body
        for body in fake.sent()
        if str((body.get("message_reference") or {}).get("message_id")) == message_id
    ]


async def test_pdf_shared_in_discord_is_fetched_processed_and_answered_as_a_reply(
    make_server, discord_fake, monkeypatch
):
    discord_env(monkeypatch)
    config = {"api_url": discord_fake.api_url, "edit_interval": 0.05, "guild_ready_timeout": 0.1}
    async with make_server(max_upload_bytes=LIMIT, plugin_config={"discord": config}) as server:
        owner = await _with_documents(server, "files", "discord", DISCORD_CHANNEL)
        await _discord_ready(server, discord_fake)
        item = discord_fake.attachment(DISCORD_CHANNEL, "report.pdf", report(), "application/pdf")
        msg_id = await discord_fake.user_says(DISCORD_CHANNEL, ALICE, "our report", [item])
        frame = await frame_where(
            owner, lambda f: f["type"] == "message" and f["message"]["text"] == "our report"
        )
        (attachment,) = frame["message"]["attachments"]
        assert ":" not in attachment["id"] and attachment["name"] == "report.pdf"
        assert discord_fake.cdn_fetches == [(item["id"], True)]  # the signed URL, as given
        done = await frame_where(
            owner, attachment_frame(attachment["id"], "done", "documents"), timeout=60
        )
        (reply,) = await eventually(
            lambda: _replies_to(discord_fake, msg_id), what="the reply", timeout=10
        )
        assert done["summary"] in reply["content"] and "Quarterly Report" in reply["content"]
        assert len(reply["content"]) <= 2000
        replied = [m for m in discord_fake.in_channel(DISCORD_CHANNEL) if m["author"] == BOT]
        assert len(replied) == 1  # the reply, as the bot; its echo was not ingested
        await owner.close()


async def test_long_text_goes_to_discord_as_a_file_in_a_reply_or_cut_when_refused(
    make_server, discord_fake, monkeypatch
):
    discord_env(monkeypatch)
    config = {"api_url": discord_fake.api_url, "edit_interval": 0.05, "guild_ready_timeout": 0.1}
    async with make_server(max_upload_bytes=LIMIT, plugin_config={"discord": config}) as server:
        owner = await _with_documents(server, "files", "discord", DISCORD_CHANNEL)
        await _discord_ready(server, discord_fake)
        item = discord_fake.attachment(DISCORD_CHANNEL, "terms.pdf", long_pdf(), "application/pdf")
        msg_id = await discord_fake.user_says(DISCORD_CHANNEL, ALICE, "the terms", [item])
        attachment = _message_with(await _seen(owner, "the terms"), "the terms")["attachments"][0][
            "id"
        ]
        done = await frame_where(
            owner, attachment_frame(attachment, "done", "documents"), timeout=60
        )
        full = await _extracted(server, attachment)

        def replies_with_files():
            return [
                m
                for m in discord_fake.in_channel(DISCORD_CHANNEL)
                if str((m.get("message_reference") or {}).get("message_id")) == msg_id
                and m["attachments"]
            ]

        (reply,) = await eventually(replies_with_files, what="the reply with a file", timeout=10)
        assert reply["author"] == BOT
        assert reply["content"] == (
            f"📄 terms.pdf (documents): {done['summary']}\nThe extracted text "
            f"({len(full):,} characters) is in the attached file terms.pdf.documents.md."
        )
        (sent,) = reply["attachments"]
        assert sent["filename"] == "terms.pdf.documents.md"
        assert discord_fake.files[sent["id"]].decode() == full  # the whole extracted text
        assert sent["size"] == len(full.encode())

        # Discord refuses the file (413, over its upload limit): the text cut, with a note
        discord_fake.too_large = 1
        again = discord_fake.attachment(
            DISCORD_CHANNEL, "terms-2.pdf", long_pdf() + b"\n", "application/pdf"
        )
        msg2 = await discord_fake.user_says(DISCORD_CHANNEL, ALICE, "once more", [again])
        second = _message_with(await _seen(owner, "once more"), "once more")["attachments"][0]["id"]
        (cut,) = await eventually(
            lambda: _replies_to(discord_fake, msg2), what="the cut", timeout=60
        )
        text = cut["content"]
        assert text.startswith("📄 terms-2.pdf (documents): PDF, 3 pages") and len(text) <= 2000
        assert full[:200] in text and LAST_WORDS not in text
        assert "it could not be sent as a file (Discord: 413 Request Entity Too Large" in text, text
        assert f"GET /api/rooms/files/attachments/{second}/results)" in text
        await owner.close()


async def test_discord_file_over_the_limit_gives_a_notice_and_the_text_arrives(
    make_server, discord_fake, monkeypatch
):
    discord_env(monkeypatch)
    config = {"api_url": discord_fake.api_url, "edit_interval": 0.05, "guild_ready_timeout": 0.1}
    async with make_server(max_upload_bytes=LIMIT, plugin_config={"discord": config}) as server:
        owner = await _with_documents(server, "files", "discord", DISCORD_CHANNEL)
        await _discord_ready(server, discord_fake)
        big = discord_fake.attachment(
            DISCORD_CHANNEL, "big.pdf", b"%PDF-1.7\n", "application/pdf", size=LIMIT + 1
        )
        broken = discord_fake.attachment(DISCORD_CHANNEL, "old.pdf", b"%PDF", "application/pdf")
        broken["url"] = broken["url"].replace("hm=", "hm=0")  # an expired signature: 403
        msg_id = await discord_fake.user_says(DISCORD_CHANNEL, ALICE, "two files", [big, broken])
        message = (
            await frame_where(
                owner, lambda f: f["type"] == "message" and f["message"]["text"] == "two files"
            )
        )["message"]
        ids = [a["id"] for a in message["attachments"]]
        assert ids == [f"discord:{big['id']}", f"discord:{broken['id']}"]
        notices = await eventually(
            lambda: _replies_to(discord_fake, msg_id)[1:] and _replies_to(discord_fake, msg_id),
            what="two notices",
            timeout=10,
        )
        assert "big.pdf was not brought into the hub" in notices[0]["content"]
        assert "old.pdf was not brought into the hub" in notices[1]["content"]
        assert "could not be fetched from Discord" in notices[1]["content"]
        assert discord_fake.cdn_fetches == [(broken["id"], False)]
        await owner.close()


# ------------------------------------------------------------------ passwords


async def test_password_by_command_and_rest_is_used_once_and_never_kept(
    server, caplog, tmp_path: Path
):
    caplog.set_level(logging.DEBUG)
    secret = "Tr0ub4dor-s3cret"
    await _documents(server)
    await server.create_room("docs")
    owner = await server.client("owner", admin=True)
    await owner.join("docs")
    await enable(owner, "docs", "documents")
    alice = await server.client("alice")
    await alice.join("docs")
    bob = await server.client("bob")
    await bob.join("docs")

    locked = await upload(server, "docs", "locked.pdf", locked_pdf(secret))
    await alice.send(
        {"type": "send", "room": "docs", "text": "locked", "attachments": [locked], "id": "m1"}
    )
    failed = await frame_where(alice, attachment_frame(locked, "failed", "documents"), timeout=60)
    assert failed["error"].startswith("password required"), failed
    assert f"/password {locked} PASSWORD" in failed["error"]

    # someone else may not give it
    denied = await command(bob, "docs", f"/password {locked} {secret}", "p0")
    assert denied["type"] == "error" or denied.get("ok") is False, denied
    assert "only the uploader or an admin" in str(denied)
    async with server.http("bob") as http:
        resp = await http.post(
            f"/api/rooms/docs/attachments/{locked}/password", json={"password": secret}
        )
        assert resp.status_code == 403, resp.text

    # a wrong one says so; the right one opens the PDF
    wrong = await command(alice, "docs", f"/password {locked} nope", "p1")
    assert wrong["type"] == "command_result" and "processing locked.pdf again" in wrong["text"]
    failed = await frame_where(
        alice,
        lambda f: (
            attachment_frame(locked, "failed", "documents")(f)
            and f["error"].startswith("wrong password")
        ),
        timeout=60,
    )
    ok = await command(alice, "docs", f"/password {locked} {secret}", "p2")
    assert ok["type"] == "command_result", ok
    done = await frame_where(alice, attachment_frame(locked, "done", "documents"), timeout=60)
    assert done["summary"].startswith("PDF, 3 pages"), done

    # the REST route, by an admin, the same way
    async with server.http("root", admin=True) as http:
        resp = await http.post(
            f"/api/rooms/docs/attachments/{locked}/password", json={"password": secret}
        )
        assert resp.status_code == 202 and resp.json() == {"queued": ["documents"]}, resp.text
        resp = await http.post(f"/api/rooms/docs/attachments/{locked}/password", json={})
        assert resp.status_code == 400
    again = await frame_where(
        alice,
        lambda f: attachment_frame(locked, "done", "documents")(f) and f is not done,
        timeout=60,
    )
    assert again["summary"] == done["summary"]

    # never in the room, the history, the logs, or anything on disk (database, uploads)
    history = await server.hub.history("docs")
    assert [m.text for m in history] == ["locked"]
    for client in (alice, bob, owner):
        assert secret not in str(client.seen)
    # the hub's own log records (the test's clients log the frames they send themselves)
    ours = [r for r in caplog.records if not r.name.startswith(("websockets", "httpcore", "httpx"))]
    assert ours and not [r for r in ours if secret in r.getMessage()]
    for path in Path(server.hub.settings.data_dir).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    for client in (alice, bob, owner):
        await client.close()


async def test_a_password_typed_as_a_discord_message_is_not_relayed(
    make_server, discord_fake, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG, logger="lydian_adapters")
    discord_env(monkeypatch)
    config = {"api_url": discord_fake.api_url, "edit_interval": 0.05, "guild_ready_timeout": 0.1}
    async with make_server(plugin_config={"discord": config}) as server:
        owner = await _with_documents(server, "files", "discord", DISCORD_CHANNEL)
        await _discord_ready(server, discord_fake)
        msg_id = await discord_fake.user_says(DISCORD_CHANNEL, ALICE, "/password abc hunter2")
        (notice,) = await eventually(
            lambda: _replies_to(discord_fake, msg_id), what="the notice", timeout=10
        )
        assert "Not relayed" in notice["content"] and "hunter2" not in notice["content"]
        await discord_fake.user_says(DISCORD_CHANNEL, ALICE, "after it")
        await frame_where(
            owner, lambda f: f["type"] == "message" and f["message"]["text"] == "after it"
        )
        assert "hunter2" not in str(owner.seen)
        assert [m.text for m in await server.hub.history("files")] == ["after it"]
        await owner.close()
