"""One way in (issue 14): every door posts through ``Hub.post_message``, which holds the one
rule for a message, and every door asks ``Hub.visible_room`` whether a room may be seen.

The same bad message gets the same refusal (code and detail) through the socket, REST, a
plugin calling ``hub.post_message`` and the Slack/Discord bridge, and nothing is stored.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from hub.base import errors
from hub.base.protocol import Attachment, UserRef
from hub.media.attachments import AttachmentStore
from hub.plugin_host.hookspecs import hookimpl
from lydian_adapters.bridge.service import bridge_for
from lydian_adapters.bridge.store import PlatformUser
from tests.adapter_support import eventually
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.plugin_support import add_plugin
from tests.stream_support import assistant_room, collect, text_of, upstream

MAX_TEXT = 200
MAX_ATTACHMENTS = 3
UNKNOWN = "NoSuchUpload0123456789"  # a well-formed upload id nobody uploaded
CASES = {
    "blank": ("   \n\t ", []),
    "oversize": ("x" * (MAX_TEXT + 1), []),
    "unknown attachment": ("see the file", [UNKNOWN]),
    "too many attachments": ("four files", [f"{UNKNOWN}{i}" for i in range(4)]),
}
SETTINGS = {"max_text_chars": MAX_TEXT, "max_attachments_per_message": MAX_ATTACHMENTS}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def bridge_log():
    """Lines the bridge service logs (the bridge's form of a refusal)."""
    handler = _Lines()
    logger = logging.getLogger("lydian_adapters.bridge.service")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def _socket(server: Any, text: str, ids: list[str]) -> tuple[str, str]:
    alice = await server.client("alice")
    await alice.join("ops")
    await alice.send({"type": "send", "room": "ops", "text": text, "attachments": ids, "id": "m"})
    error = await alice.expect("error")
    assert error["id"] == "m" and error["room"] == "ops"
    await alice.close()
    return error["code"], error["detail"]


async def _rest(server: Any, text: str, ids: list[str]) -> tuple[str, str]:
    async with server.http("alice") as http:
        resp = await http.post(
            "/api/rooms/ops/messages", json={"text": text, "attachments": ids, "client_id": "r"}
        )
    body = resp.json()
    expected = 413 if len(text) > MAX_TEXT else 400
    assert resp.status_code == expected, resp.text
    return body["code"], body["detail"]


async def _plugin(server: Any, text: str, ids: list[str]) -> tuple[str, str]:
    bot = UserRef(id="bot:test", name="Test bot")
    try:
        await server.hub.post_message("ops", bot, text, attachments=ids)
    except Exception as exc:  # imported late: on code without it, each case fails alone
        assert isinstance(exc, errors.MessageRefused), repr(exc)
        return str(exc.code), exc.detail
    raise AssertionError(f"the hub stored {text[:20]!r} with {ids}")


async def _bridge(server: Any, text: str, ids: list[str], lines: list[str]) -> tuple[str, str]:
    service = bridge_for(server.hub)
    await service.bridge("ops", "slack", "C0OPS", "admin")
    # as a platform would hand them over: attachments naming hub uploads by id
    attachments = [
        Attachment(id=i, name="f.txt", media_type="text/plain", size=1, url=f"/api/attachments/{i}")
        for i in ids
    ]
    before = len(lines)
    user = PlatformUser("slack", "UALICE", "Alice")
    msg = f"17000.{len(lines):06d}"
    assert await service.ingest("slack", "C0OPS", msg, user, text, attachments) == []
    refusal = [line for line in lines[before:] if "not posted to the hub" in line]
    assert len(refusal) == 1, lines[before:]
    named, detail = refusal[0].split(" not posted to the hub (", 1)[1].split("): ", 1)
    return named.split(", ")[0], detail


@pytest.mark.parametrize("case", list(CASES))
async def test_the_same_message_gets_the_same_refusal_through_every_door(
    make_server, bridge_log, case
):
    text, ids = CASES[case]
    async with make_server(**SETTINGS) as server:
        await server.create_room("ops")
        refusals = {
            "socket": await _socket(server, text, ids),
            "rest": await _rest(server, text, ids),
            "plugin": await _plugin(server, text, ids),
            "bridge": await _bridge(server, text, ids, bridge_log),
        }
        assert len(set(refusals.values())) == 1, refusals
        code, detail = refusals["socket"]
        assert code == "invalid_frame" and detail
        async with server.http("alice") as http:
            page = (await http.get("/api/rooms/ops/messages")).json()
        assert page["messages"] == []  # nothing stored through any door


async def test_bridge_refuses_too_long_instead_of_cutting_and_posts_the_rest(
    make_server, bridge_log
):
    """A platform message within the rule still goes in; a long one is not cut short."""
    async with make_server(**SETTINGS) as server:
        await server.create_room("ops")
        service = bridge_for(server.hub)
        await service.bridge("ops", "slack", "C0OPS", "admin")
        user = PlatformUser("slack", "UALICE", "Alice")
        assert await service.ingest("slack", "C0OPS", "1.1", user, "y" * (MAX_TEXT + 5)) == []
        external = Attachment(
            id="slack:F01", name="a.png", media_type="image/png", size=9, url="https://x.test/a"
        )
        posted = await service.ingest("slack", "C0OPS", "1.2", user, "", [external])
        assert [m.attachments[0].id for m in posted] == ["slack:F01"]  # a link elsewhere: kept
        async with server.http("alice") as http:
            page = (await http.get("/api/rooms/ops/messages")).json()
        assert [m["text"] for m in page["messages"]] == [""]
        assert any("too_long" in line for line in bridge_log)


async def test_a_known_upload_is_accepted_by_every_door(make_server):
    """The rule is not merely a wall: an upload of this room goes through REST and plugins."""
    async with make_server(**SETTINGS) as server:
        await server.create_room("ops")
        async with server.http("alice") as http:
            up = await http.post(
                "/api/rooms/ops/attachments", files={"file": ("a.txt", b"hello", "text/plain")}
            )
            assert up.status_code == 201, up.text
            upload = up.json()["id"]
            resp = await http.post(
                "/api/rooms/ops/messages", json={"text": "", "attachments": [upload]}
            )
            assert resp.status_code == 201, resp.text
            assert resp.json()["attachments"][0]["name"] == "a.txt"
        async with server.http("alice") as http:  # an id is always an upload of the hub
            resp = await http.post(
                "/api/rooms/ops/messages", json={"text": "x", "attachments": ["slack:F01"]}
            )
            assert (resp.status_code, resp.json()["reason"]) == (400, "unknown_attachment")
        forged = Attachment(id=upload, name="evil.exe", media_type="x/y", size=1, url="/x")
        message, _ = await server.hub.post_message(
            "ops", UserRef(id="bot:t", name="T"), "again", attachments=[forged]
        )
        assert message.attachments[0].name == "a.txt"  # the stored description, not the given


# ------------------------------------------------------------------ visible_room


async def test_every_door_refuses_an_unknown_and_a_private_room_alike(make_server):
    async with make_server() as server:
        await server.create_room("secret", private=True)
        paths = [
            "/api/rooms/{r}",
            "/api/rooms/{r}/members",
            "/api/rooms/{r}/messages",
            "/api/rooms/{r}/plugins",
            "/api/rooms/{r}/bridges",
            "/api/rooms/{r}/events",
        ]
        refusals = (("nowhere", 404, "unknown_room"), ("secret", 403, "forbidden"))
        async with server.http("mallory") as http:
            for room, status, code in refusals:
                for path in paths:
                    resp = await http.get(path.format(r=room))
                    assert (resp.status_code, resp.json().get("code")) == (status, code), path
                resp = await http.post(
                    f"/api/rooms/{room}/attachments",
                    files={"file": ("a.txt", b"hello", "text/plain")},
                )
                assert (resp.status_code, resp.json().get("code")) == (status, code)
                resp = await http.post(f"/api/rooms/{room}/messages", json={"text": "hi"})
                assert (resp.status_code, resp.json().get("code")) == (status, code)
        mallory = await server.client("mallory")
        for room, code in (("nowhere", "unknown_room"), ("secret", "forbidden")):
            await mallory.send({"type": "join", "room": room, "id": "j"})
            assert (await mallory.expect("error"))["code"] == code


# ------------------------------------------------------------------ streamed = stored


class Stamp:
    """Transforms every message it sees (appends a mark) and records what it observed."""

    LYDIAN_DEFAULT_ENABLED = True

    def __init__(self) -> None:
        self.observed: list[Any] = []

    @hookimpl
    def lydian_transform_message(self, text):
        return f"{text} [stamped]"

    @hookimpl
    async def lydian_message(self, message):
        self.observed.append(message)


async def test_a_transform_plugin_does_not_change_the_streamed_answer(make_server):
    tokens = [f"w{i} " for i in range(20)]
    stamp = Stamp()
    async with FakeOpenAI(Script(tokens=tokens, token_delay=0.001)) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            await assistant_room(server)
            await add_plugin(server, stamp, "stamp")
            alice = await server.client("alice")
            await alice.join("lobby")
            await alice.say("lobby", "@assistant count", "q")
            stream = await collect(alice)
            assert stream["end"]["type"] == "stream_end", stream["end"]
            watched = text_of(stream)
            assert watched == "".join(tokens)
            assert stream["end"]["message"]["text"] == watched
            async with server.http("alice") as http:
                page = (await http.get("/api/rooms/lobby/messages")).json()
            texts = [m["text"] for m in page["messages"]]
            assert texts == ["@assistant count [stamped]", watched]  # the question was

            def answers() -> list[Any]:
                return [m for m in stamp.observed if m.kind == "agent"]

            await eventually(answers, what="the observer to see the answer")
            assert [m.text for m in answers()] == [watched]  # observed once, as streamed


# ------------------------------------------------------------------ file I/O off the loop


async def test_attachment_files_are_read_and_written_off_the_event_loop(make_server, monkeypatch):
    loop_thread = threading.get_ident()
    threads: dict[str, set[int]] = {}

    def watch(name: str) -> None:
        original = getattr(AttachmentStore, name)

        def wrapper(self, *args, **kwargs):
            threads.setdefault(name, set()).add(threading.get_ident())
            return original(self, *args, **kwargs)

        monkeypatch.setattr(AttachmentStore, name, wrapper)

    for name in ("_write", "get", "resolve"):
        watch(name)
    async with make_server() as server:
        await server.create_room("ops")
        async with server.http("alice") as http:
            up = await http.post(
                "/api/rooms/ops/attachments", files={"file": ("a.txt", b"hello", "text/plain")}
            )
            upload = up.json()["id"]
            alice = await server.client("alice")
            await alice.join("ops")
            await alice.send({"type": "send", "room": "ops", "text": "", "attachments": [upload]})
            await alice.expect("message")
            got = await http.get(f"/api/attachments/{upload}")
            assert got.content == b"hello"
    assert set(threads) == {"_write", "get", "resolve"}
    assert all(loop_thread not in ids for ids in threads.values()), threads


# ------------------------------------------------------------------ the bridge's notice


async def test_discord_author_of_a_refused_message_gets_a_reply(make_server, monkeypatch):
    """Discord has no ephemeral messages outside interactions: the notice is a reply."""
    from tests.adapter_support import DISCORD_TOKEN, discord_env
    from tests.fakes.discord import FakeDiscord

    discord_env(monkeypatch)
    channel, alice = "800000000000000001", FakeDiscord.user("700000000000000001", "Alice")
    fake = FakeDiscord(DISCORD_TOKEN)
    await fake.start()
    config = {"api_url": fake.api_url, "edit_interval": 0.05, "guild_ready_timeout": 0.1}
    try:
        async with make_server(**SETTINGS, plugin_config={"discord": config}) as server:
            await server.create_room("ops")
            async with server.http("root", admin=True) as http:
                resp = await http.post(
                    "/api/rooms/ops/bridges", json={"platform": "discord", "channel": channel}
                )
                assert resp.status_code == 201, resp.text
            from lydian_adapters.discord.plugin import adapter_for

            adapter = adapter_for(server.hub)
            assert adapter is not None
            await eventually(adapter.ready.is_set, what="READY")
            web = await server.client("bob")
            await web.join("ops")
            long_id = await fake.user_says(channel, alice, "z" * (MAX_TEXT + 1))

            def notice() -> list[Any]:
                return [
                    b
                    for b in fake.sent()
                    if str((b.get("message_reference") or {}).get("message_id")) == long_id
                ]

            replies = await eventually(notice, what="the reply to the refused message")
            assert f"exceeds {MAX_TEXT} characters" in replies[0]["content"]
            await fake.user_says(channel, alice, "short one")
            assert (await web.expect("message"))["message"]["text"] == "short one"
    finally:
        await fake.stop()
