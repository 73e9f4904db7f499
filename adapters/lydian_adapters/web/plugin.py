"""The web widget adapter: serves ``/widget.js``, ``/widget.css`` and a demo site at ``/``.

Loaded through the ``lydian.plugins`` entry point like any plugin. The widget is plain
static files (``static/``): any site embeds it with one ``<script>`` tag. The demo page is
a sample site embedding the widget into room ``lobby`` with a guest token from
``POST /api/guest-token``; ``?name=``, ``?room=`` and ``?mode=launcher`` vary it. The
page creates ``lobby`` when missing (not startup: a hub never showing it gets no room).
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

from litestar import Request, get
from litestar.params import FromQuery
from litestar.response import Response

from hub.sdk import RoomExists, hookimpl

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DEMO_ROOM = "lobby"
ROOM_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")
_ASSET_HEADERS = {
    "Cache-Control": "public, max-age=300",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
}


def _asset(name: str, media_type: str) -> Response[bytes]:
    return Response(
        content=(STATIC / name).read_bytes(), media_type=media_type, headers=_ASSET_HEADERS
    )


@get("/widget.js", exclude_from_auth=True, include_in_schema=False)
async def widget_js() -> Response[bytes]:
    """The embeddable widget script."""
    return _asset("widget.js", "text/javascript; charset=utf-8")


@get("/widget.css", exclude_from_auth=True, include_in_schema=False)
async def widget_css() -> Response[bytes]:
    """The widget's styles (loaded by the script into its shadow root)."""
    return _asset("widget.css", "text/css; charset=utf-8")


def render_demo(room: str, name: str | None, launcher: bool) -> str:
    """The sample site, embedding the widget for ``room``; every value is HTML-escaped."""
    token_url = "/api/guest-token" + (f"?name={quote(name)}" if name else "")
    attrs = {"src": "/widget.js", "data-room": room, "data-token-url": token_url}
    if not launcher:
        attrs["data-target"] = "#chat"
    tag = "<script " + " ".join(f'{k}="{html.escape(v)}"' for k, v in attrs.items()) + "></script>"
    snippet = (
        f'<script src="https://your-hub.example/widget.js" data-room="{room}" '
        f'data-token-url="/your-token-endpoint"></script>'
    )
    aside = (
        '<p class="card">Use the chat button at the bottom right.</p>'
        if launcher
        else '<div id="chat"></div>'
    )
    page = Template((STATIC / "demo.html").read_text())
    return page.substitute(widget_tag=tag, snippet=html.escape(snippet), aside=aside)


@get("/", exclude_from_auth=True, include_in_schema=False)
async def demo_page(
    request: Request[Any, Any, Any],
    name: FromQuery[str | None] = None,
    room: FromQuery[str | None] = None,
    mode: FromQuery[str | None] = None,
) -> Response[str]:
    """A sample site with the widget embedded, so a new hub shows itself working at once."""
    room_id = room if room and ROOM_PATTERN.match(room) else DEMO_ROOM
    if room_id == DEMO_ROOM:
        await ensure_room(request.app.state.hub, DEMO_ROOM)
    clean = (name or "").strip()[:40] or None
    return Response(
        content=render_demo(room_id, clean, launcher=mode == "launcher"),
        media_type="text/html; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"},
    )


async def ensure_room(hub: Any, room_id: str) -> None:
    """Create the public demo room unless it exists."""
    if await hub.room(room_id) is not None:
        return
    try:
        await hub.create_room(
            room_id, name=room_id.title(), topic="Say hello!", created_by="lydian"
        )
        log.info("created demo room %r", room_id)
    except RoomExists:
        pass


@hookimpl
def lydian_routes() -> list[Any]:
    return [widget_js, widget_css, demo_page]
