"""The widget shows attachment processing (issue 15): the processing state, then the
summary, a preview of the extracted text, counts and "copy text"; a failure's error; the
same for messages loaded from history. Headless Chromium against a real hub running the
``documents`` plugin (enabled in the room over REST by an admin)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from hub.sdk import AttachmentHandler, AttachmentInfo, DerivedFile, HandlerResult, hookimpl
from tests.support import HubServer, eventually
from tests.test_widget_browser import DESKTOP, WidgetPage, gradient_png, open_widget
from tests.test_widget_browser import browser as browser  # the fixture

pytest.importorskip("pypdfium2")
pytest.importorskip("pdfplumber")

# Every status a processing box showed, in order (a job may run faster than a poll).
RECORD_STATUSES = """() => {
    const root = document.querySelector('.lydian-widget-host').shadowRoot;
    window.__statuses = [];
    const seen = () => root.querySelectorAll('.lw-proc-item').forEach(el => {
        const key = el.dataset.handler + ':' + el.dataset.status;
        if (window.__statuses[window.__statuses.length - 1] !== key) window.__statuses.push(key);
    });
    new MutationObserver(seen).observe(root, {subtree: true, childList: true});
}"""

HOSTILE = (
    "Notes\n\n"
    '<img src=x onerror="window.__pwned=1">\n\n'
    "<script>window.__pwned=2</script> and [click](javascript:window.__pwned=3)\n\n"
    "<iframe src=javascript:window.__pwned=4></iframe>\n\n"
    "| <img src=x onerror=window.__pwned=5> | `<b>` |\n| --- | --- |\n| <svg onload=x> | ok |\n"
)


async def enable_documents(server: HubServer) -> None:
    """Turn the documents plugin on in the demo room, as an admin, over REST."""
    if "documents" not in server.hub.plugins.names():  # not installed as an entry point here
        import lydian_plugins.documents.plugin as documents
        from tests.plugin_support import add_plugin

        await add_plugin(server, documents, "documents")
    async with server.http("admin", admin=True) as http:
        resp = await http.put("/api/rooms/lobby/plugins/documents", json={"enabled": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["enabled"] is True


async def send_file(page: WidgetPage, name: str, media_type: str, data: bytes, text: str) -> Any:
    """Upload one file through the widget's attach button and send it; the new message."""
    before = await page.messages.count()
    await page.css(".lw-composer input[type=file]").set_input_files(
        {"name": name, "mimeType": media_type, "buffer": data}
    )
    await expect(page.css(".lw-chip-ready .lw-chip-name")).to_have_text(name)
    await page.css(".lw-input").press_sequentially(text)
    await page.css(".lw-input").press("Enter")
    await expect(page.messages).to_have_count(before + 1)
    message = page.messages.nth(before)
    await expect(message.locator(".lw-file-name")).to_have_text(name)
    return message


async def granted_page(browser: Browser, base: str, name: str) -> WidgetPage:
    """A widget page whose context may read and write the clipboard."""
    context = await browser.new_context(viewport=DESKTOP)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = await context.new_page()
    widget = WidgetPage(page)
    await page.goto(f"{base}/?name={name}")
    await expect(widget.panel).to_have_attribute("data-state", "online")
    return widget


async def test_pdf_shows_processing_then_summary_preview_and_copy_text(server, browser):
    from tests.test_documents_extract import report_pdf

    alice = await granted_page(browser, server.http_url, "Alice")
    await enable_documents(server)
    await alice.page.evaluate(RECORD_STATUSES)
    message = await send_file(alice, "report.pdf", "application/pdf", report_pdf(), "Q3 report")

    job = message.locator('.lw-proc-item[data-handler="documents"]')
    await expect(job).to_have_attribute("data-status", "done", timeout=60_000)
    statuses = await alice.page.evaluate("() => window.__statuses")
    assert statuses[0] in ("documents:queued", "documents:running"), statuses
    assert statuses[-1] == "documents:done" and "documents:running" in statuses, statuses

    await expect(job.locator(".lw-proc-summary")).to_contain_text("PDF, 3 pages, 1 table")
    await expect(job.locator(".lw-proc-badge")).to_have_text(["3 pages", "1 table"])
    preview = job.locator("details.lw-proc-preview")
    await expect(preview).to_be_visible()  # after the results route answered
    body = preview.locator(".lw-proc-text")
    await expect(body).to_be_hidden()
    await preview.locator("summary").click()
    await expect(body).to_be_visible()
    await expect(body).to_contain_text("Quarterly Report")
    await expect(body).to_contain_text("Next quarter we expect similar figures.")
    # page marks, headings and the table come out as such (built from text nodes)
    await expect(body.locator(".lw-proc-page").first).to_have_text("Page 1")
    await expect(body.locator(".lw-proc-h").first).to_have_text("Quarterly Report")
    table = body.locator("table.lw-proc-table")
    await expect(table.locator("th")).to_have_text(["Item", "Qty", "Price"])
    await expect(table.locator("tr")).to_have_count(4)
    await expect(table.locator("tr").nth(3).locator("td")).to_have_text(["plum", "12", "4.50"])
    await table.scroll_into_view_if_needed()
    await alice.shot("widget-attachment-preview.png")

    # copy text: the whole extracted markdown goes to the clipboard
    await job.locator(".lw-proc-copy").click()
    await expect(job.locator(".lw-proc-copy")).to_have_text("Copied")
    copied = await alice.page.evaluate("() => navigator.clipboard.readText()")
    assert "Quarterly Report" in copied and "Next quarter we expect similar figures." in copied
    assert "| " in copied  # the table, as a markdown table

    # without the async clipboard API the fallback (a hidden textarea + execCommand) copies
    await alice.page.evaluate("() => navigator.clipboard.writeText('something else')")
    await alice.page.evaluate(
        "() => { navigator.clipboard.writeText = () => Promise.reject(new Error('denied')) }"
    )
    await expect(job.locator(".lw-proc-copy")).to_have_text("Copy text")
    await job.locator(".lw-proc-copy").click()
    await expect(job.locator(".lw-proc-copy")).to_have_text("Copied")
    copied = await alice.page.evaluate("() => navigator.clipboard.readText()")
    assert "Quarterly Report" in copied

    # a page opened later gets the message from history: the result is read lazily
    bob = await open_widget(browser, server.http_url, "Bob")
    old = bob.messages.nth(0).locator('.lw-proc-item[data-handler="documents"]')
    await expect(old).to_have_attribute("data-status", "done")
    await expect(old.locator(".lw-proc-summary")).to_contain_text("PDF, 3 pages, 1 table")
    await old.locator("details.lw-proc-preview summary").click()
    await expect(old.locator(".lw-proc-text")).to_contain_text("Quarterly Report")
    assert alice.errors == [] and bob.errors == []


async def test_corrupt_pdf_shows_the_error_and_the_message_stays(server, browser):
    alice = await open_widget(browser, server.http_url, "Alice")
    await enable_documents(server)
    corrupt = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nthis is not a pdf at all"
    message = await send_file(alice, "broken.pdf", "application/pdf", corrupt, "is this ok?")
    job = message.locator('.lw-proc-item[data-handler="documents"]')
    await expect(job).to_have_attribute("data-status", "failed", timeout=60_000)
    await expect(job.locator(".lw-proc-error")).to_contain_text("corrupt")
    await expect(job.locator(".lw-proc-copy")).to_have_count(0)
    await expect(message.locator(".lw-text")).to_have_text("is this ok?")
    await alice.shot("widget-attachment-failed.png")
    # the error is also what a page opened later reads from the results route
    bob = await open_widget(browser, server.http_url, "Bob")
    old = bob.messages.nth(0).locator('.lw-proc-item[data-handler="documents"]')
    await expect(old).to_have_attribute("data-status", "failed")
    await expect(old.locator(".lw-proc-error")).to_contain_text("corrupt")
    assert alice.errors == [] and bob.errors == []


async def test_hostile_extracted_text_renders_as_text_and_runs_nothing(server, browser):
    alice = await open_widget(browser, server.http_url, "Alice")
    await enable_documents(server)
    message = await send_file(alice, "notes.txt", "text/plain", HOSTILE.encode(), "notes")
    job = message.locator('.lw-proc-item[data-handler="documents"]')
    await expect(job).to_have_attribute("data-status", "done", timeout=60_000)
    await job.locator("details.lw-proc-preview summary").click()
    text = job.locator(".lw-proc-text")
    await expect(text).to_contain_text('<img src=x onerror="window.__pwned=1">')
    await expect(text).to_contain_text("<script>window.__pwned=2</script>")
    await expect(text).to_contain_text("<iframe src=javascript:window.__pwned=4></iframe>")
    cells = text.locator("table.lw-proc-table").locator("th, td")
    await expect(cells).to_have_text(
        ["<img src=x onerror=window.__pwned=5>", "<b>", "<svg onload=x>", "ok"]
    )

    # the page has no CSP: an injected handler *would* run (a canary proves it) ...
    await alice.page.evaluate(
        "() => { const i = document.createElement('img'); i.src = 'x?canary';"
        " i.onerror = () => { window.__canary = 1 }; document.body.appendChild(i) }"
    )
    await alice.page.wait_for_function("() => window.__canary === 1")
    # ... but the preview made no element from the text: nothing there could run
    proc = alice.css(".lw-proc")
    for tag in ("img", "script", "iframe", "svg", "b", "a[href^='javascript']"):
        assert await proc.locator(tag).count() == 0, tag
    assert await text.locator("a").count() == 0  # [click](javascript:...) stays text
    assert await alice.page.evaluate("() => window.__pwned") is None
    assert alice.errors == []


async def test_a_job_ending_while_the_page_is_offline_shows_after_the_reconnect(server, browser):
    """``attachment`` frames are live only: the widget reads the result after it rejoins."""
    from tests.attachment_handlers import ProbePlugin
    from tests.plugin_support import add_plugin

    await add_plugin(server, ProbePlugin(), "probe")
    alice = await open_widget(browser, server.http_url, "Alice")  # the page makes the room
    async with server.http("admin", admin=True) as http:
        resp = await http.put("/api/rooms/lobby/plugins/probe", json={"enabled": True})
    assert resp.status_code == 200, resp.text
    received: list[dict[str, Any]] = []
    alice.page.on(
        "websocket", lambda ws: ws.on("framereceived", lambda p: received.append(json.loads(p)))
    )
    await alice.page.reload()
    await expect(alice.panel).to_have_attribute("data-state", "online")

    # the probe handler hangs until its timeout (2 s) cuts it off
    message = await send_file(alice, "hang.txt", "text/plain", b"hang please", "slow one")
    job = message.locator('.lw-proc-item[data-handler="probe"]')
    await expect(job).to_have_attribute("data-status", "running")
    await expect(job.locator(".lw-proc-state")).to_have_text("Processing…")
    # the hub becomes unreachable: the socket drops and reconnecting fails for now
    await alice.page.evaluate(
        "() => { const w = window.LydianWidget.instances[0];"
        " w.realWsUrl = w.wsUrl; w.wsUrl = 'ws://127.0.0.1:9/ws'; w.ws.close(); }"
    )
    await expect(alice.panel).to_have_attribute("data-state", "reconnecting")
    att = await message.locator(".lw-proc").get_attribute("data-attachment")

    async def stored() -> bool:
        async with server.http("admin", admin=True) as http:
            resp = await http.get(f"/api/rooms/lobby/attachments/{att}/results")
        return [r["status"] for r in resp.json()["results"]] == ["failed"]

    await eventually(stored, timeout=30, what="the probe job's failure stored")
    await expect(job).to_have_attribute("data-status", "running")  # nothing told it yet
    await alice.page.evaluate(
        "() => { const w = window.LydianWidget.instances[0]; w.wsUrl = w.realWsUrl; }"
    )
    await expect(alice.panel).to_have_attribute("data-state", "online", timeout=30_000)
    await expect(job).to_have_attribute("data-status", "failed")
    await expect(job.locator(".lw-proc-error")).to_contain_text("timed out")
    # it came from the results route: the socket never delivered the failed frame
    statuses = [f["status"] for f in received if f.get("type") == "attachment"]
    assert statuses and statuses[-1] == "running" and "failed" not in statuses, statuses
    assert alice.errors == []


OCR_TEXT = "INVOICE 42\nTotal: 12.50 <img src=x onerror=window.__pwned=9>"


def faces_stub(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """What an image handler reports (a stand-in until the vision plugin exists): face
    counts, a blurred copy, OCR text; no markdown. Top level: the child process imports it."""
    return HandlerResult(
        summary="PNG, 1 face (blurred), text found",
        data={"faces": {"count": 1, "blurred": True}, "ocr_text": OCR_TEXT},
    )


class FacesStub:
    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [AttachmentHandler("facestub", ("image/png",), run=faces_stub, timeout=30)]


async def test_image_results_show_face_badges_and_ocr_text(server, browser):
    from tests.plugin_support import add_plugin

    await add_plugin(server, FacesStub(), "facestub")
    alice = await granted_page(browser, server.http_url, "Alice")
    async with server.http("admin", admin=True) as http:
        resp = await http.put("/api/rooms/lobby/plugins/facestub", json={"enabled": True})
    assert resp.status_code == 200, resp.text
    before = await alice.messages.count()
    await alice.css(".lw-composer input[type=file]").set_input_files(
        {"name": "scan.png", "mimeType": "image/png", "buffer": gradient_png()}
    )
    await expect(alice.css(".lw-chip-ready .lw-chip-name")).to_have_text("scan.png")
    await alice.css(".lw-input").press("Enter")
    await expect(alice.messages).to_have_count(before + 1)
    job = alice.messages.nth(before).locator('.lw-proc-item[data-handler="facestub"]')
    await expect(job).to_have_attribute("data-status", "done", timeout=60_000)
    await expect(job.locator(".lw-proc-badge")).to_have_text(["1 face", "faces blurred"])
    await expect(job.locator(".lw-proc-blurred")).to_have_count(1)
    preview = job.locator("details.lw-proc-preview")
    await expect(preview.locator("summary")).to_have_text("OCR text")
    await preview.locator("summary").click()
    ocr = preview.locator("pre.lw-proc-ocr")
    await expect(ocr).to_have_text(OCR_TEXT)  # as text: the markup in it made no element
    assert await alice.css(".lw-proc img").count() == 0
    await job.locator(".lw-proc-copy").click()
    await expect(job.locator(".lw-proc-copy")).to_have_text("Copied")
    assert await alice.page.evaluate("() => navigator.clipboard.readText()") == OCR_TEXT
    assert alice.errors == []


def held_stub(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """A reviewer's verdict by file name: ``secret`` withheld, ``blur`` replaced by a smaller
    copy (a 60 x 30 gradient), anything else passed. Top level: the child imports it."""
    from tests.test_widget_browser import gradient_png as png

    if info.filename.startswith("secret"):
        return HandlerResult(summary="refused", withhold="refused by the test's policy")
    if info.filename.startswith("blur"):
        copy = DerivedFile(
            name="copy.png", media_type="image/png", data=png(60, 30), role="replacement"
        )
        return HandlerResult(summary="replaced", files=[copy])
    return HandlerResult(summary="passed")


class HeldStub:
    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [
            AttachmentHandler("heldstub", ("image/png",), run=held_stub, timeout=30, review=True)
        ]


async def test_withheld_and_replaced_images_say_so(server, browser):
    from tests.plugin_support import add_plugin

    await add_plugin(server, HeldStub(), "heldstub")
    alice = await granted_page(browser, server.http_url, "Alice")
    async with server.http("admin", admin=True) as http:
        resp = await http.put("/api/rooms/lobby/plugins/heldstub", json={"enabled": True})
    assert resp.status_code == 200, resp.text

    async def send_image(name: str, width: int) -> Any:
        before = await alice.messages.count()
        await alice.css(".lw-composer input[type=file]").set_input_files(
            {"name": name, "mimeType": "image/png", "buffer": gradient_png(width)}
        )
        await expect(alice.css(".lw-chip-ready .lw-chip-name")).to_have_text(name)
        await alice.css(".lw-input").press("Enter")
        await expect(alice.messages).to_have_count(before + 1)
        message = alice.messages.nth(before)
        job = message.locator('.lw-proc-item[data-handler="heldstub"]')
        await expect(job).to_have_attribute("data-status", "done", timeout=60_000)
        return message, job

    message, job = await send_image("secret.png", 200)
    await expect(job.locator(".lw-proc-withheld")).to_have_text("withheld")
    await expect(job.locator(".lw-proc-withheld")).to_have_attribute(
        "title", "refused by the test's policy"
    )
    link = message.locator("a.lw-att-image")
    await expect(link).to_have_class(re.compile(r"\blw-att-held\b"))
    await expect(link.locator(".lw-att-note")).to_have_text(
        "Withheld: refused by the test's policy"
    )
    await expect(link.locator("img")).to_be_hidden()

    message, job = await send_image("blur.png", 240)
    await expect(job.locator(".lw-proc-replaced")).to_have_text("copy shown")
    img = message.locator("a.lw-att-image img")
    await expect(img).to_be_visible()
    # the copy (60 px wide), not the 240 px original, once the review is done (different
    # bytes from the first image: the same bytes would get its stored verdict)
    await expect(img).to_have_js_property("naturalWidth", 60, timeout=30_000)
    await expect(message.locator(".lw-att-note")).to_have_count(0)
    assert alice.errors == []
