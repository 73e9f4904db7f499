"""The web widget waits and retries by itself (issue 13): ``rate_limited`` and
``store_unavailable`` resends, 429 on uploads, ``reconnect`` and the close codes 1001, 1008,
1012, 1013, 4401 and 4403. Headless Chromium against a tiny scripted hub (aiohttp) that
serves the real widget files and answers the socket as each test needs, so the widget's
side is tested whatever the real hub's limiter does."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from playwright.async_api import expect

from tests.support import eventually, free_port
from tests.test_attachments import PDF
from tests.test_widget_browser import WidgetPage, browser  # noqa: F401  (fixture)

STATIC = Path(__file__).resolve().parent.parent / "adapters" / "lydian_adapters" / "web" / "static"
ROOM = "lobby"
USER = {"id": "una", "name": "Una"}

Policy = Callable[["Conn", dict[str, Any]], Awaitable[bool]]


class Conn:
    """One socket the widget opened to the fake hub."""

    def __init__(self, hub: FakeHub, ws: web.WebSocketResponse, number: int) -> None:
        self.hub, self.ws, self.number = hub, ws, number

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def close(self, code: int) -> None:
        await self.ws.close(code=code)


class FakeHub:
    """Just enough of the hub for the widget: the page, widget files, /token, uploads and a
    socket speaking the protocol; ``policy`` may answer a client frame first (True: handled)."""

    def __init__(self, policy: Policy | None = None, tokens: list[str] | None = None) -> None:
        self.policy = policy
        self.tokens = list(tokens or [])
        self.token_fetches = 0
        self.port = free_port()
        self.frames: list[tuple[float, int, dict[str, Any]]] = []  # (time, socket, frame)
        self.hellos: list[str | None] = []
        self.conns: list[Conn] = []
        self.messages: list[dict[str, Any]] = []
        self.by_client_id: dict[str, dict[str, Any]] = {}
        self.uploads: list[float] = []
        self.upload_answers: list[tuple[int, dict[str, str]]] = []  # (status, headers) to use first
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/widget.js", self.static)
        app.router.add_get("/widget.css", self.static)
        app.router.add_get("/ws", self.socket)
        app.router.add_post("/token", self.token)
        app.router.add_post("/api/rooms/{room}/attachments", self.upload)
        app.router.add_get("/api/rooms/{room}", self.room_info)
        self.runner = web.AppRunner(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeHub:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    def sent(self, kind: str) -> list[tuple[float, int, dict[str, Any]]]:
        return [entry for entry in self.frames if entry[2].get("type") == kind]

    # -- HTTP ----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        token_url = ' data-token-url="/token"' if request.query.get("token") else ""
        html = (
            "<!doctype html><html><body><div id='chat' style='height:600px'></div>"
            f'<script src="/widget.js" data-room="{ROOM}" data-target="#chat"{token_url}>'
            "</script></body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def static(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / request.path.lstrip("/"))

    async def token(self, request: web.Request) -> web.Response:
        self.token_fetches += 1
        token = self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]
        return web.json_response({"token": token})

    async def room_info(self, request: web.Request) -> web.Response:
        return web.json_response({"detail": "not here"}, status=404)

    async def upload(self, request: web.Request) -> web.Response:
        self.uploads.append(time.monotonic())
        form = await request.post()
        if self.upload_answers:
            status, headers = self.upload_answers.pop(0)
            return web.json_response({"detail": "slow down"}, status=status, headers=headers)
        file = form["file"]
        data = file.file.read()
        att_id = uuid.uuid4().hex[:22]
        return web.json_response(
            {
                "id": att_id,
                "name": file.filename,
                "media_type": "application/pdf",
                "size": len(data),
                "url": f"/api/attachments/{att_id}",
            },
            status=201,
        )

    # -- the socket ----------------------------------------------------------------------

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Conn(self, ws, len(self.conns) + 1)
        self.conns.append(conn)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            self.frames.append((time.monotonic(), conn.number, frame))
            if self.policy is not None and await self.policy(conn, frame):
                continue
            await self.answer(conn, frame)
        return ws

    async def answer(self, conn: Conn, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "hello":
            self.hellos.append(frame.get("token"))
            await conn.send(
                {
                    "type": "welcome",
                    "user": USER,
                    "session": f"s{conn.number}",
                    "roles": [],
                    "heartbeat_interval": 25.0,
                    "heartbeat_timeout": 60.0,
                    "typing_ttl": 6.0,
                    "max_frame_bytes": 65536,
                }
            )
        elif kind == "join":
            await conn.send(
                {
                    "type": "joined",
                    "room": ROOM,
                    "name": "Lobby",
                    "offset": len(self.messages),
                    "epoch": "e1",
                    "presence": [{"user": USER, "status": "online"}],
                    "recovered": True,
                    "replayed": 0,
                    "streams": [],
                    "id": frame.get("id"),
                }
            )
        elif kind == "history":
            await conn.send(
                {"type": "history", "room": ROOM, "messages": self.messages, "has_more": False}
            )
        elif kind == "send":
            client_id = frame["id"]
            message = self.by_client_id.get(client_id)
            duplicate = message is not None
            if message is None:
                message = {
                    "room": ROOM,
                    "offset": len(self.messages) + 1,
                    "id": uuid.uuid4().hex,
                    "user": USER,
                    "text": frame.get("text", ""),
                    "ts": time.time(),
                    "kind": "user",
                    "client_id": client_id,
                    "attachments": [
                        {
                            "id": a,
                            "name": "file.pdf",
                            "media_type": "application/pdf",
                            "size": 1,
                            "url": f"/api/attachments/{a}",
                        }
                        for a in frame.get("attachments", [])
                    ],
                    "meta": {},
                }
                self.messages.append(message)
                self.by_client_id[client_id] = message
                await conn.send({"type": "message", "message": message})
            await conn.send(
                {
                    "type": "ack",
                    "id": client_id,
                    "room": ROOM,
                    "offset": message["offset"],
                    "duplicate": duplicate,
                }
            )


async def until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """Wait for a condition on the fake hub's side (bounded)."""
    await eventually(condition, timeout=seconds)


async def open_page(browser, hub: FakeHub, token: bool = False) -> WidgetPage:  # noqa: F811
    page = await browser.new_page()
    widget = WidgetPage(page)
    await page.goto(f"{hub.url}/?token=1" if token else f"{hub.url}/")
    await expect(widget.panel).to_have_attribute("data-state", "online")
    return widget


async def stats(widget: WidgetPage) -> dict[str, Any]:
    return await widget.stats()


@pytest.fixture
async def fake_hub():
    hubs: list[FakeHub] = []

    async def make(policy: Policy | None = None, tokens: list[str] | None = None) -> FakeHub:
        hub = await FakeHub(policy, tokens).start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


# ------------------------------------------------------------------ refused frames


@pytest.mark.parametrize("code", ["rate_limited", "store_unavailable"])
async def test_a_refused_send_is_sent_again_with_the_same_id_after_retry_after(
    fake_hub,
    browser,  # noqa: F811
    code,
):
    refused: set[str] = set()
    retry_after = 2.0

    async def refuse_first(conn: Conn, frame: dict[str, Any]) -> bool:
        if frame.get("type") == "send" and frame["id"] not in refused:
            refused.add(frame["id"])
            detail = "slow down" if code == "rate_limited" else "the database is busy"
            await conn.send(
                {
                    "type": "error",
                    "code": code,
                    "detail": detail,
                    "id": frame["id"],
                    "room": ROOM,
                    "retry_after": retry_after,
                }
            )
            return True
        return False

    hub = await fake_hub(refuse_first)
    widget = await open_page(browser, hub)
    await widget.say("hello there")

    await expect(widget.css(".lw-slow")).to_be_visible()  # the small slowed-down mark
    await expect(widget.css(".lw-ghost")).to_have_count(1)  # still on its way, not failed
    await expect(widget.messages).to_have_count(1)
    await expect(widget.messages.locator(".lw-text")).to_have_text("hello there")
    await expect(widget.css(".lw-ghost")).to_have_count(0)
    await expect(widget.css(".lw-slow")).to_be_hidden()

    sends = hub.sent("send")
    assert len(sends) == 2
    (t1, c1, first), (t2, c2, second) = sends
    assert first["id"] == second["id"] and first == second and c1 == c2
    assert t2 - t1 >= retry_after - 0.1  # it waited as told (a lower bound, not a speed)
    assert len(hub.messages) == 1  # stored once
    assert await widget.css(".lw-note-error").count() == 0
    assert (await stats(widget))["resent"] == 1
    assert widget.errors == []


async def test_sends_made_while_slowed_down_wait_and_keep_their_order(fake_hub, browser):  # noqa: F811
    refused: set[str] = set()

    async def refuse_first(conn: Conn, frame: dict[str, Any]) -> bool:
        if frame.get("type") == "send" and not refused:
            refused.add(frame["id"])
            await conn.send(
                {
                    "type": "error",
                    "code": "rate_limited",
                    "detail": "slow down",
                    "id": frame["id"],
                    "room": ROOM,
                    "retry_after": 1.5,
                }
            )
            return True
        return False

    hub = await fake_hub(refuse_first)
    widget = await open_page(browser, hub)
    await widget.say("one")
    await expect(widget.css(".lw-slow")).to_be_visible()
    await widget.say("two")  # held back, not sent into the limit
    await expect(widget.messages).to_have_count(2)
    assert await widget.texts() == ["one", "two"]
    assert [f["text"] for _, _, f in hub.sent("send")] == ["one", "one", "two"]


async def test_a_send_refused_too_long_is_reported_not_waited_out(fake_hub, browser):  # noqa: F811
    async def refuse(conn: Conn, frame: dict[str, Any]) -> bool:
        if frame.get("type") == "send":
            await conn.send(
                {
                    "type": "error",
                    "code": "rate_limited",
                    "detail": "daily limit reached",
                    "id": frame["id"],
                    "room": ROOM,
                    "retry_after": 3600.0,
                }
            )
            return True
        return False

    hub = await fake_hub(refuse)
    widget = await open_page(browser, hub)
    await widget.say("hello")
    await expect(widget.css(".lw-note-error")).to_have_text("Not sent: daily limit reached")
    await expect(widget.css(".lw-ghost")).to_have_count(0)
    assert len(hub.sent("send")) == 1


async def test_an_upload_answered_429_is_retried_after_retry_after(fake_hub, browser):  # noqa: F811
    hub = await fake_hub()
    hub.upload_answers = [(429, {"Retry-After": "1"})]
    widget = await open_page(browser, hub)
    await widget.css(".lw-composer input[type=file]").set_input_files(
        [{"name": "runbook.pdf", "mimeType": "application/pdf", "buffer": PDF}]
    )
    await expect(widget.css(".lw-chip-busy")).to_contain_text("slowed down")
    await expect(widget.css(".lw-chip-ready")).to_have_count(1)
    assert len(hub.uploads) == 2
    assert hub.uploads[1] - hub.uploads[0] >= 0.9
    await widget.css(".lw-input").press("Enter")
    await expect(widget.messages.locator(".lw-att-file")).to_have_count(1)
    assert len(hub.sent("send")[0][2]["attachments"]) == 1


# ------------------------------------------------------------------ closes


async def _close_after_first_join(code: int, before: list[dict[str, Any]] | None = None) -> Policy:
    async def policy(conn: Conn, frame: dict[str, Any]) -> bool:
        if frame.get("type") == "join" and conn.number == 1:
            await conn.hub.answer(conn, frame)
            for extra in before or []:
                await conn.send(extra)
            await conn.close(code)
            return True
        return False

    return policy


async def test_a_reconnect_frame_then_1001_reconnects_after_its_retry_after_and_resumes(
    fake_hub,
    browser,  # noqa: F811
):
    hub = await fake_hub()
    widget = await open_page(browser, hub)
    await widget.say("before the restart")
    await expect(widget.messages).to_have_count(1)
    await hub.conns[0].send({"type": "reconnect", "reason": "shutdown", "retry_after": 1.0})
    await hub.conns[0].close(1001)
    await until(lambda: len(hub.sent("join")) == 2)
    await expect(widget.panel).to_have_attribute("data-state", "online")
    assert (await stats(widget))["lastDelay"] >= 1000  # the hub's hint, not the 0.5 s backoff
    assert hub.sent("join")[1][2]["since"] == 1  # resumed where it was


@pytest.mark.parametrize("code", [1001, 1008, 1012, 1013])
async def test_closes_the_hub_may_send_are_followed_by_a_reconnect(fake_hub, browser, code):  # noqa: F811
    hub = await fake_hub(await _close_after_first_join(code))
    page = await browser.new_page()
    widget = WidgetPage(page)
    await page.goto(hub.url + "/")
    await until(lambda: len(hub.conns) >= 1 and hub.conns[0].ws.closed)
    await page.wait_for_function("() => window.LydianWidget.instances[0].stats.lastDelay !== null")
    delay = (await stats(widget))["lastDelay"]
    if code == 1013:
        assert delay >= 5000  # over a connection limit: a longer back-off
    else:
        assert delay <= 500  # the first ordinary back-off step
    await until(lambda: len(hub.sent("join")) == 2, seconds=30)
    await expect(widget.panel).to_have_attribute("data-state", "online", timeout=30_000)
    assert hub.hellos == [None, None]


async def test_a_revoked_token_is_not_reused_a_fresh_one_is_fetched(fake_hub, browser):  # noqa: F811
    revoked = [
        {"type": "error", "code": "token_revoked", "detail": "the token was revoked"},
    ]
    hub = await fake_hub(await _close_after_first_join(4403, revoked), tokens=["tok-1", "tok-2"])
    widget = await open_page(browser, hub, token=True)
    await until(lambda: len(hub.hellos) == 2)
    await expect(widget.panel).to_have_attribute("data-state", "online")
    assert hub.hellos == ["tok-1", "tok-2"]
    assert hub.token_fetches == 2


async def test_a_revoked_token_with_no_other_to_get_ends_the_session(fake_hub, browser):  # noqa: F811
    revoked = [{"type": "error", "code": "token_revoked", "detail": "the token was revoked"}]
    # the token URL keeps handing out the revoked token
    hub = await fake_hub(await _close_after_first_join(4403, revoked), tokens=["tok-1"])
    page = await browser.new_page()
    widget = WidgetPage(page)
    await page.goto(hub.url + "/?token=1")
    await expect(widget.panel).to_have_attribute("data-state", "ended")
    assert hub.token_fetches == 2  # it asked for a fresh one and got the revoked one back
    assert hub.hellos == ["tok-1"]
    await expect(widget.css(".lw-input")).to_be_disabled()
    assert "retrying" not in await widget.css(".lw-status-text").inner_text()


async def test_4403_without_a_token_url_ends_the_session(fake_hub, browser):  # noqa: F811
    revoked = [{"type": "error", "code": "token_revoked", "detail": "the token was revoked"}]
    hub = await fake_hub(await _close_after_first_join(4403, revoked))
    page = await browser.new_page()
    widget = WidgetPage(page)
    await page.goto(hub.url + "/")
    await expect(widget.panel).to_have_attribute("data-state", "ended")
    assert (await stats(widget))["lastDelay"] is None  # no reconnect was ever scheduled
    assert len(hub.conns) == 1


async def test_an_expired_token_is_replaced_from_the_token_url(fake_hub, browser):  # noqa: F811
    expired = [{"type": "error", "code": "token_expired", "detail": "the token expired"}]
    hub = await fake_hub(await _close_after_first_join(4401, expired), tokens=["tok-1", "tok-2"])
    widget = await open_page(browser, hub, token=True)
    await until(lambda: len(hub.hellos) == 2)
    await expect(widget.panel).to_have_attribute("data-state", "online")
    assert hub.hellos == ["tok-1", "tok-2"]
