"""Helpers for the plugin tests: run commands, wait for room events, add plugins at runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support import Client, HubServer

REPLY_TYPES = ("command_result", "error")


async def frame_where(
    client: Client, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """The first frame (already received or arriving within ``timeout``) matching ``pred``."""
    for frame in client.seen:
        if pred(frame):
            return frame
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            frame = await client.recv(left)
        except TimeoutError:
            break
        if pred(frame):
            return frame
    raise AssertionError(f"no matching frame within {timeout}s; last: {client.seen[-5:]}")


async def command(client: Client, room: str, text: str, ref: str) -> dict[str, Any]:
    """Send a ``command`` frame and return its reply (``command_result`` or ``error``)."""
    await client.send({"type": "command", "room": room, "text": text, "id": ref})
    return await frame_where(client, lambda f: f["type"] in REPLY_TYPES and f.get("id") == ref)


def room_event(room: str, event: str, plugin: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: (
        f["type"] == "event"
        and f["room"] == room
        and f["event"] == event
        and f["data"].get("plugin") == plugin
    )


async def add_plugin(server: HubServer, plugin: Any, name: str) -> None:
    """Register a plugin object into the running hub and start it, as a rescan would."""
    host = server.hub.plugins
    host.register(plugin, name)
    await host.reload()
