"""The web widget end to end, in headless Chromium (Playwright), against a real hub.

The hub loads the widget adapter through its entry point; the pages are the demo site
that ``lydian serve`` shows at ``/``. Screenshots of the widget's states go to
``tests/artifacts/screenshots/`` (``docs/screenshots/`` with ``LYDIAN_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from hub.base.auth import Identity, issue_token
from hub.base.protocol import UserRef
from tests.procs import STARTUP_TIMEOUT
from tests.support import TEST_SECRET, eventually, free_port
from tests.test_attachments import PDF

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Screenshots go to tests/artifacts/ (ignored by git); LYDIAN_UPDATE_SCREENSHOTS=1 writes the
# committed copies in docs/screenshots/ instead (they differ run to run: clocks, avatars).
_ROOT = Path(__file__).resolve().parent.parent
SHOTS = (
    _ROOT / "docs" / "screenshots"
    if os.environ.get("LYDIAN_UPDATE_SCREENSHOTS") == "1"
    else _ROOT / "tests" / "artifacts" / "screenshots"
)
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 780}

expect.set_options(timeout=15_000)


@pytest.fixture
async def browser():
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class WidgetPage:
    """One browser tab showing the demo site, with what it sent and any script errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sent: list[dict[str, Any]] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("websocket", self._watch)

    def _watch(self, ws: Any) -> None:
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))

    def css(self, selector: str):
        return self.page.locator(selector)  # CSS locators pierce the widget's open shadow root

    @property
    def panel(self):
        return self.css(".lw-panel")

    @property
    def messages(self):
        return self.css(".lw-messages .lw-msg")

    async def offsets(self) -> list[int]:
        return [
            int(o)
            for o in await self.messages.evaluate_all("els => els.map(e => e.dataset.offset)")
        ]

    async def texts(self) -> list[str]:
        return await self.css(".lw-messages .lw-msg .lw-text").all_inner_texts()

    async def say(self, text: str) -> None:
        box = self.css(".lw-input")
        await box.click()
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if i:
                await box.press("Shift+Enter")
            await box.press_sequentially(line)
        await box.press("Enter")

    async def stats(self) -> dict[str, Any]:
        return await self.page.evaluate("() => window.LydianWidget.instances[0].stats")

    async def shot(self, name: str, full: bool = False) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        target = self.page if full else self.panel
        await target.screenshot(path=str(SHOTS / name), animations="disabled")


async def open_widget(
    browser: Browser, base: str, name: str, query: str = "", viewport: dict | None = None
) -> WidgetPage:
    page = await browser.new_page(viewport=viewport or DESKTOP)
    widget = WidgetPage(page)
    await page.goto(f"{base}/?name={name}{query}")
    await expect(widget.panel).to_have_attribute("data-state", "online")
    return widget


async def post(base: str, user: str, text: str, name: str | None = None) -> dict[str, Any]:
    token = issue_token(Identity(id=user, name=name or user.title()), TEST_SECRET, 3600)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        resp = await http.post(
            "/api/rooms/lobby/messages",
            json={"text": text},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status_code == 201, resp.text
        return resp.json()


# ------------------------------------------------------------------ two users


async def test_two_pages_see_each_others_messages_presence_and_typing(server, browser):
    alice = await open_widget(browser, server.http_url, "Alice")
    bob = await open_widget(browser, server.http_url, "Bob")

    await expect(alice.css(".lw-presence-count")).to_have_text("2 online")
    await expect(alice.css('.lw-person[title="Bob"]')).to_have_count(1)
    await expect(bob.css('.lw-person[title="Alice"]')).to_have_count(1)

    # Bob types: Alice sees it; Bob sends (Enter): the indicator goes, the message comes
    await bob.css(".lw-input").click()
    await bob.css(".lw-input").press_sequentially("Hi Alice, is the **deploy** done?")
    await expect(alice.css(".lw-typing")).to_have_text("Bob is typing…")
    await bob.css(".lw-input").press("Enter")
    await expect(alice.messages).to_have_count(1)
    await expect(alice.css(".lw-messages .lw-msg strong")).to_have_text("deploy")
    await expect(alice.css(".lw-typing")).to_have_text("")
    await expect(bob.css(".lw-input")).to_have_value("")

    # Shift+Enter is a newline, Enter sends; the markdown subset renders on both sides
    await alice.say("Yes! Steps:\n1. `make release`\n2. check https://status.example.com")
    for page in (alice, bob):
        await expect(page.messages).to_have_count(2)
        last = page.messages.nth(1)
        await expect(last.locator("ol li")).to_have_count(2)
        await expect(last.locator("code")).to_have_text("make release")
        link = last.locator("a")
        await expect(link).to_have_attribute("href", "https://status.example.com/")
        await expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    await alice.say("Line one\nline two")
    await expect(bob.messages.nth(2).locator("br")).to_have_count(1)
    await expect(bob.css(".lw-mine")).to_have_count(1)  # Bob's own message, styled as his

    assert await alice.offsets() == [1, 2, 3] == await bob.offsets()
    await alice.shot("widget-demo-page.png", full=True)
    await bob.shot("widget-conversation.png")

    await bob.page.close()
    await expect(alice.css(".lw-presence-count")).to_have_text("1 online")
    assert alice.errors == [] and bob.errors == []


# ------------------------------------------------------------------ streaming + Stop


class Feed:
    """The pieces of an answer, handed to the hub's stream one at a time by the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = False

    async def pieces(self):
        try:
            while (piece := await self.queue.get()) is not None:
                yield piece
        finally:
            self.closed = True  # the hub closed the upstream (end or cancel)


async def user_id(page: WidgetPage) -> str:
    return await page.page.evaluate("() => window.LydianWidget.instances[0].me.id")


async def test_streamed_answer_renders_incrementally_and_stop_ends_it_in_both_pages(
    server, browser
):
    alice = await open_widget(browser, server.http_url, "Alice")
    bob = await open_widget(browser, server.http_url, "Bob")
    await bob.say("How do I roll back a deploy?")
    await expect(alice.messages).to_have_count(1)

    feed = Feed()
    agent = UserRef(id="agent:helper", name="Helper")
    stream = await server.hub.streams.launch(
        "lobby", agent, feed.pieces(), requested_by=await user_id(bob)
    )
    for page in (alice, bob):
        await expect(page.css(f'.lw-streaming[data-stream="{stream.id}"]')).to_have_count(1)
        await expect(page.css(".lw-streaming .lw-author")).to_have_text("Helper")
    # only the member who asked (or an admin) gets a Stop button
    await expect(bob.css(".lw-stop")).to_be_visible()
    await expect(alice.css(".lw-stop")).to_be_hidden()

    chunks = ["Run ", "`lydian rollback`", " with the ", "release id", "; it takes ", "a minute."]
    states = []
    for n, chunk in enumerate(chunks, start=1):
        await feed.queue.put(chunk)
        expected = "".join(chunks[:n]).replace("`", "")  # the markdown renders as code
        for page in (alice, bob):
            await expect(page.css(".lw-streaming .lw-text")).to_have_text(expected)
        await expect(alice.css(".lw-streaming .lw-cursor")).to_be_visible()
        states.append(await alice.css(".lw-streaming .lw-text").inner_text())
        if n == 3:
            await bob.shot("widget-streaming.png")
    assert len(set(states)) == len(chunks) >= 4
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(states))
    await expect(alice.css(".lw-streaming code")).to_have_text("lydian rollback")

    # Bob presses Stop: the widget sends cancel{room, stream_id}; the hub stops the answer
    # for everyone: the live bubble goes, the partial answer stays, marked, exactly once
    await bob.css(".lw-stop").click()
    cancel = next(f for f in bob.sent if f["type"] == "cancel")
    assert (cancel["room"], cancel["stream_id"]) == ("lobby", stream.id)
    message = await asyncio.wait_for(stream.done, 10)
    assert message is not None and message.meta["cancelled"] is True
    assert feed.closed
    partial = "".join(chunks).replace("`", "")
    for page in (alice, bob):
        await expect(page.css(".lw-streaming")).to_have_count(0)
        final = page.css(f'.lw-msg[data-offset="{message.offset}"]')
        await expect(final).to_have_count(1)
        await expect(final.locator(".lw-text")).to_have_text(partial)
        await expect(final.locator(".lw-flag")).to_have_text("Stopped")
        await expect(final.locator(".lw-tag")).to_have_text("AI")
        assert await page.offsets() == [1, 2]
    await bob.shot("widget-stopped.png")
    assert alice.errors == [] and bob.errors == []


async def test_page_dropping_mid_stream_resumes_the_answer_without_repeating_it(server, browser):
    alice = await open_widget(browser, server.http_url, "Alice")
    await alice.say("Tell me everything")
    await expect(alice.messages).to_have_count(1)
    feed = Feed()
    agent = UserRef(id="agent:helper", name="Helper")
    stream = await server.hub.streams.launch("lobby", agent, feed.pieces())
    await feed.queue.put("First part. ")
    await expect(alice.css(".lw-streaming .lw-text")).to_have_text("First part.")

    # the socket drops; more of the answer streams while the page is away
    await alice.page.evaluate("() => window.LydianWidget.instances[0].ws.close()")
    await expect(alice.panel).to_have_attribute("data-state", "reconnecting")
    await feed.queue.put("Second part, ")
    await feed.queue.put("sent while away. ")
    await expect(alice.panel).to_have_attribute("data-state", "online")
    expected = "First part. Second part, sent while away."
    await expect(alice.css(".lw-streaming .lw-text")).to_have_text(expected)
    await feed.queue.put("And the end.")
    await expect(alice.css(".lw-streaming .lw-text")).to_have_text(expected + " And the end.")
    await feed.queue.put(None)
    message = await asyncio.wait_for(stream.done, 10)
    await expect(alice.css(".lw-streaming")).to_have_count(0)
    await expect(alice.messages).to_have_count(2)
    await expect(alice.messages.nth(1).locator(".lw-text")).to_have_text(message.text)
    assert message.text == expected + " And the end."
    assert await alice.offsets() == [1, 2]
    stats = await alice.stats()
    assert stats["joins"] == 2 and stats["lastSince"] == 1, stats
    assert alice.errors == []


# ------------------------------------------------------------------ hostile input


HOSTILE = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
    "[click me](javascript:window.__pwned=3)",
    '<a href="javascript:window.__pwned=4">link</a> **<b>bold</b>**',
    "`<svg onload=window.__pwned=5>` and <iframe src=javascript:window.__pwned=6>",
    "```html\n<img src=x onerror=window.__pwned=7>\n```",
    # pathological for naive markdown regexes (quadratic): must still render, as text
    "`" * 16000,
    "[" * 8000 + "](" * 4000,
    "http://)" * 2000,
]


async def test_hostile_messages_render_as_text_and_run_nothing(server, browser):
    alice = await open_widget(browser, server.http_url, "Alice")
    for i, text in enumerate(HOSTILE):
        await post(
            server.http_url, f"mallory{i}", text, name=f"<img src=x onerror=window.__pwned={i}>"
        )
    await alice.say('<img src=x onerror="window.__pwned=8"><script>window.__pwned=9</script>')
    await expect(alice.messages).to_have_count(len(HOSTILE) + 1)

    # the page has no CSP: an injected handler *would* run here (proven with a canary) ...
    await alice.page.evaluate(
        "() => { const i = document.createElement('img'); i.src = 'x';"
        " i.onerror = () => { window.__canary = 1 }; document.body.appendChild(i) }"
    )
    await alice.page.wait_for_function("() => window.__canary === 1")
    await asyncio.sleep(0.3)  # a window for anything injected to run: an absence has no event
    # ... yet none of the hostile messages ran anything or added any element
    assert await alice.page.evaluate("() => window.__pwned") is None
    root = alice.css(".lw-messages")
    for tag in ("img", "script", "iframe", "svg image", "b", "a[href^='javascript']"):
        assert await root.locator(tag).count() == 0, tag
    texts = await alice.texts()
    assert texts[0] == HOSTILE[0]
    assert texts[1] == HOSTILE[1]
    assert texts[2] == HOSTILE[2]  # a javascript: link stays text
    assert "<b>bold</b>" in texts[3]
    await expect(alice.messages.nth(0).locator(".lw-author")).to_have_text(
        "<img src=x onerror=window.__pwned=0>"
    )
    await expect(alice.messages.nth(5).locator("pre code")).to_have_text(
        "<img src=x onerror=window.__pwned=7>"
    )
    await alice.messages.nth(0).evaluate("el => el.scrollIntoView()")
    await alice.shot("widget-hostile.png")
    assert alice.errors == []


MARKDOWN_CASES = [
    ("plain <b>text</b> & more", "<p>plain &lt;b&gt;text&lt;/b&gt; &amp; more</p>"),
    ("**bold** and *it* and _em_ and snake_case_name", None),
    ("[ok](https://a.example/x?y=1) [bad](javascript:alert(1)) [data](data:text/html,x)", None),
    ("see https://a.example/path.", None),
    ("- one\n- two\n\n3. three\n4. four", None),
    (
        "```\nunclosed <script>fence",
        '<pre class="lw-code" tabindex="0"><code>unclosed &lt;script&gt;fence</code></pre>',
    ),
    ("> quoted *words*", "<blockquote>quoted <em>words</em></blockquote>"),
]


async def test_markdown_subset_is_built_from_dom_nodes_only(server, browser):
    alice = await open_widget(browser, server.http_url, "Alice")
    html = await alice.page.evaluate(
        """cases => cases.map(text => {
            const box = document.createElement('div');
            box.appendChild(window.LydianWidget.renderMarkdown(text));
            return box.innerHTML;
        })""",
        [text for text, _ in MARKDOWN_CASES],
    )
    for (_, expected), got in zip(MARKDOWN_CASES, html, strict=True):
        if expected is not None:
            assert got == expected
    assert html[1] == (
        "<p><strong>bold</strong> and <em>it</em> and <em>em</em> and snake_case_name</p>"
    )
    links = html[2]
    safe = 'target="_blank" rel="noopener noreferrer nofollow"'
    assert f'<a href="https://a.example/x?y=1" {safe}>ok</a>' in links
    assert "[bad](javascript:alert(1))" in links and "[data](data:text/html,x)" in links
    assert links.count("<a ") == 1
    assert html[3] == (
        '<p>see <a href="https://a.example/path" target="_blank" '
        'rel="noopener noreferrer nofollow">https://a.example/path</a>.</p>'
    )
    assert html[4] == (
        '<ul><li>one</li><li>two</li></ul><ol start="3"><li>three</li><li>four</li></ol>'
    )


async def test_page_answers_heartbeats_and_stays_connected(make_server, browser):
    async with make_server(heartbeat_interval=0.3, heartbeat_timeout=1.0) as server:
        alice = await open_widget(browser, server.http_url, "Alice")
        # ten heartbeats: a page that did not answer would be dropped
        pongs = lambda: sum(f["type"] == "pong" for f in alice.sent)  # noqa: E731
        await eventually(lambda: pongs() >= 10, timeout=30, what="ten heartbeats answered")
        await expect(alice.panel).to_have_attribute("data-state", "online")
        stats = await alice.stats()
        assert (stats["connects"], stats["joins"]) == (1, 1), stats
        assert sum(f["type"] == "pong" for f in alice.sent) >= 5


# ------------------------------------------------------------------ history, attachments


async def test_history_loads_older_pages_on_scroll_up(server, browser):
    # the demo page creates the room; then 75 messages arrive before our page opens
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http_url + "/")).status_code == 200
    for i in range(1, 76):
        await post(server.http_url, "bot", f"message number {i}")
    alice = await open_widget(browser, server.http_url, "Alice")
    await expect(alice.messages).to_have_count(30)
    assert await alice.offsets() == list(range(46, 76))
    for expected in (60, 75):
        await alice.css(".lw-log").evaluate("el => el.scrollTop = 0")
        await expect(alice.messages).to_have_count(expected)
    await expect(alice.css(".lw-older")).to_have_text("This is the beginning of the room.")
    assert await alice.offsets() == list(range(1, 76))
    assert (await alice.texts())[0] == "message number 1"


def gradient_png(width: int = 240, height: int = 140) -> bytes:
    """A small real PNG (a teal-to-indigo gradient) for the attachment screenshots."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00"
        + b"".join(
            bytes((20 + x * 60 // width, 184 - y * 100 // height, 166 + x * 70 // width))
            for x in range(width)
        )
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def test_attachments_are_uploaded_and_shown_to_everyone(server, browser):
    alice = await open_widget(browser, server.http_url, "Alice")
    bob = await open_widget(browser, server.http_url, "Bob")
    await alice.css(".lw-composer input[type=file]").set_input_files(
        [
            {"name": "chart.png", "mimeType": "image/png", "buffer": gradient_png()},
            {"name": "runbook.pdf", "mimeType": "application/pdf", "buffer": PDF},
            {"name": "virus.exe", "mimeType": "image/png", "buffer": b"MZ\x90\x00" + bytes(64)},
        ]
    )
    await expect(alice.css(".lw-chip-ready")).to_have_count(2)
    await expect(alice.css(".lw-chip-error")).to_contain_text("not a supported")
    await alice.css(".lw-chip-error .lw-chip-remove").click()
    await alice.css(".lw-input").press_sequentially("Screenshot and runbook attached")
    await alice.css(".lw-input").press("Enter")
    for page in (alice, bob):
        message = page.messages.nth(0)
        await expect(message.locator(".lw-att")).to_have_count(2)
        image = message.locator(".lw-att-image img")
        await expect(image).to_have_attribute("alt", "chart.png")
        await page.page.wait_for_function(
            "el => el.complete && el.naturalWidth === 240", arg=await image.element_handle()
        )
        await expect(message.locator(".lw-att-file .lw-file-name")).to_have_text("runbook.pdf")
    await expect(alice.css(".lw-chips li")).to_have_count(0)

    # a file dropped onto the panel is uploaded and sent the same way
    dropped = await alice.page.evaluate_handle(
        """([name, b64]) => {
            const dt = new DataTransfer();
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, {type: 'application/pdf'}));
            return dt;
        }""",
        ["dropped.pdf", base64.b64encode(PDF).decode()],
    )
    await alice.panel.dispatch_event("dragenter", {"dataTransfer": dropped})
    await expect(alice.panel).to_have_class(re.compile(r"lw-dragging"))
    await alice.panel.dispatch_event("drop", {"dataTransfer": dropped})
    await expect(alice.panel).not_to_have_class(re.compile(r"lw-dragging"))
    await expect(alice.css(".lw-chip-ready .lw-chip-name")).to_have_text("dropped.pdf")
    await alice.css(".lw-input").press("Enter")
    await expect(bob.messages.nth(1).locator(".lw-file-name")).to_have_text("dropped.pdf")
    await bob.shot("widget-attachments.png")


# ------------------------------------------------------------------ phone, keyboard


async def test_launcher_on_a_phone_is_keyboard_operable(server, browser):
    carol = await open_widget(browser, server.http_url, "Carol", "&mode=launcher", viewport=PHONE)
    launcher = carol.css(".lw-launcher")
    await expect(launcher).to_have_attribute("aria-expanded", "false")
    await expect(carol.panel).to_be_hidden()
    await carol.shot("widget-launcher-phone.png", full=True)
    await launcher.focus()
    await carol.page.keyboard.press("Enter")
    await expect(carol.panel).to_be_visible()
    await expect(launcher).to_have_attribute("aria-expanded", "true")
    await expect(carol.css(".lw-input")).to_be_focused()
    box = await carol.panel.bounding_box()
    assert box is not None and box["width"] <= PHONE["width"] and box["x"] >= 0
    await expect(carol.css('[role="log"]')).to_have_count(1)
    await expect(carol.css('[role="status"]')).to_have_text("Connected")
    await carol.page.keyboard.type("Hello from my phone")
    await carol.page.keyboard.press("Enter")
    await expect(carol.messages).to_have_count(1)
    await carol.shot("widget-phone.png", full=True)
    await carol.page.keyboard.press("Escape")
    await expect(carol.panel).to_be_hidden()
    await expect(launcher).to_be_focused()


# ------------------------------------------------------------------ hub restart


class HubProcess:
    """``lydian serve`` in a subprocess, with the embedded SQLite store under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = data_dir / f"hub-{port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LYDIAN_")}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        self.env = {
            **env,
            "LYDIAN_PORT": str(port),
            "LYDIAN_DATA_DIR": str(data_dir),
            "LYDIAN_SECRET": TEST_SECRET,
            "LYDIAN_LOG_LEVEL": "warning",
            "LYDIAN_CONFIG": str(data_dir / "none.toml"),
        }
        self.proc: subprocess.Popen | None = None

    async def start(self) -> HubProcess:
        out = self.log.open("ab")
        cmd = [sys.executable, "-m", "hub.cli", "serve"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(self.base + "/healthz")).status_code == 200:
                        return self
                await asyncio.sleep(0.1)
        raise AssertionError(f"hub did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


async def test_page_reconnects_after_hub_restart_and_shows_missed_messages_once(tmp_path, browser):
    port = free_port()
    first = await HubProcess(tmp_path, port).start()
    procs = [first]
    try:
        alice = await open_widget(browser, first.base, "Alice")
        await alice.say("before the restart")
        await post(first.base, "bob", "bob before the restart")
        await expect(alice.messages).to_have_count(2)

        first.kill()  # no goodbye: the page only notices the dropped socket
        await expect(alice.panel).to_have_attribute("data-state", "reconnecting")
        await expect(alice.css(".lw-status-text")).to_contain_text("retrying in")
        await alice.shot("widget-reconnecting.png")
        await alice.say("typed while the hub was down")  # kept, sent after the reconnect
        await expect(alice.css(".lw-ghost")).to_have_count(1)

        # messages the page cannot see: posted through another hub process on another port
        other = await HubProcess(tmp_path, free_port()).start()
        procs.append(other)
        for i in range(3):
            await post(other.base, "bob", f"missed {i}")
        other.kill()

        again = await HubProcess(tmp_path, port).start()
        procs.append(again)
        await expect(alice.panel).to_have_attribute("data-state", "online", timeout=30_000)
        await expect(alice.messages).to_have_count(6)
        await expect(alice.css(".lw-ghost")).to_have_count(0)
        assert await alice.offsets() == [1, 2, 3, 4, 5, 6]
        texts = await alice.texts()
        assert texts[:5] == [
            "before the restart",
            "bob before the restart",
            "missed 0",
            "missed 1",
            "missed 2",
        ]
        assert texts[5] == "typed while the hub was down"
        stats = await alice.stats()
        assert stats["lastSince"] == 2 and stats["replayed"] >= 3, stats
        # nothing arrives twice later on either
        await post(again.base, "bob", "after")
        await expect(alice.messages).to_have_count(7)
        assert await alice.offsets() == list(range(1, 8))
        assert alice.errors == []
    finally:
        for proc in procs:
            proc.kill()


# ------------------------------------------------------------------ embedded on another site


class HostSite:
    """A third-party site on another loopback origin: a page embedding the widget with one
    tag, and its own token endpoint (as a real site would mint tokens for its users)."""

    def __init__(self, room: str = "lobby") -> None:
        self.hub_url = ""
        self.token = ""
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tag = (
                    f'<script src="{site.hub_url}/widget.js" data-room="{room}" '
                    'data-token-url="/token" data-title="Partner support"></script>'
                )
                page = f"<!doctype html><title>Partner</title><h1>Partner site</h1>{tag}"
                self._send("text/html", page.encode())

            def do_POST(self) -> None:
                self._send("application/json", json.dumps({"token": site.token}).encode())

            def _send(self, ctype: str, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_widget_embedded_on_another_origin_chats_and_uploads_with_cors(make_server, browser):
    site = HostSite()
    try:
        for cors in ("", site.origin):
            async with make_server(cors_origins=cors) as server:
                with contextlib.suppress(AssertionError):
                    await server.create_room("lobby")
                site.hub_url = server.http_url
                site.token = server.token("dave", name="Dave")
                page = await browser.new_page(viewport=DESKTOP)
                dave = WidgetPage(page)
                await page.goto(site.origin + "/")
                launcher = dave.css(".lw-launcher")
                await launcher.click()
                await expect(dave.panel).to_have_attribute("data-state", "online")
                await expect(dave.css(".lw-title")).to_have_text("Partner support")
                await dave.say(f"hello from a partner site (cors={bool(cors)})")
                await expect(dave.messages.last.locator(".lw-author")).to_have_text("Dave (you)")
                await dave.css(".lw-composer input[type=file]").set_input_files(
                    {"name": "runbook.pdf", "mimeType": "application/pdf", "buffer": PDF}
                )
                if not cors:  # the hub does not let other sites call its HTTP API by default
                    await expect(dave.css(".lw-chip-error")).to_have_count(1)
                    await page.close()
                    continue
                await expect(dave.css(".lw-chip-ready")).to_have_count(1)
                await dave.css(".lw-input").press("Enter")
                await expect(dave.messages.last.locator(".lw-file-name")).to_have_text(
                    "runbook.pdf"
                )
                assert dave.errors == []
                await page.close()
    finally:
        site.close()


async def test_room_owner_may_stop_anyones_answer(make_server, browser):
    site = HostSite(room="ops")
    try:
        async with make_server(cors_origins=site.origin) as server:
            await server.create_room("ops", owner="olga")
            site.hub_url = server.http_url
            site.token = server.token("olga", name="Olga")
            olga = WidgetPage(await browser.new_page(viewport=DESKTOP))
            await olga.page.goto(site.origin + "/")
            await olga.css(".lw-launcher").click()
            await expect(olga.panel).to_have_attribute("data-state", "online")
            feed = Feed()
            agent = UserRef(id="agent:helper", name="Helper")
            stream = await server.hub.streams.launch(
                "ops", agent, feed.pieces(), requested_by="somebody-else"
            )
            await feed.queue.put("A long answer ")
            await expect(olga.css(".lw-streaming .lw-text")).to_have_text("A long answer")
            await olga.css(".lw-stop").click()  # visible to her: she owns the room
            message = await asyncio.wait_for(stream.done, 10)
            assert message is not None and message.meta["cancelled"] is True
            await expect(olga.css(".lw-messages .lw-flag")).to_have_text("Stopped")
            assert olga.errors == []
    finally:
        site.close()
