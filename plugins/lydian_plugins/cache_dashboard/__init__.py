"""Live cache dashboard: ``/dashboard/cache`` (HTML + canvas, no build step) fed by
``/dashboard/cache/ws``, which pushes ``hub.cache_stats()`` every second to admins."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import msgspec
from litestar import Response, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromQuery

from hub.sdk import DashboardPage, RouteHandler, hookimpl, hub_of

PAGE = (Path(__file__).parent / "page.html").read_text()
PUSH_INTERVAL = 1.0
POLICY_VIOLATION = 1008


@get("/dashboard/cache", exclude_from_auth=True, include_in_schema=False)
async def cache_page() -> Response[str]:
    """The page itself holds no data; it asks for an admin token and opens the socket."""
    return Response(
        PAGE,
        media_type="text/html",
        headers={
            "cache-control": "no-store",
            "content-security-policy": "default-src 'self' "
            "'unsafe-inline'; connect-src 'self' ws: wss:",
        },
    )


@websocket("/dashboard/cache/ws", exclude_from_auth=True)
async def cache_socket(socket: WebSocket[Any, Any, Any], token: FromQuery[str] = "") -> None:
    """Push the stats each second; admins only (``?token=``, browsers cannot set headers)."""
    hub = hub_of(socket)
    await socket.accept()
    identity = hub.authenticate(token)
    if identity is None or not identity.is_admin:
        await socket.close(code=POLICY_VIOLATION, reason="an admin token is required")
        return
    encoder = msgspec.json.Encoder()
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.send_data(encoder.encode(hub.cache_stats()).decode())
            await asyncio.sleep(PUSH_INTERVAL)


@hookimpl
def lydian_routes() -> list[RouteHandler]:
    return [cache_page, cache_socket]


@hookimpl
def lydian_dashboard_pages() -> list[DashboardPage]:
    return [
        DashboardPage(
            title="Cache",
            path="/dashboard/cache",
            handler=cache_page,
            description="hit rates, latency histograms, memory and top keys, live",
        )
    ]
