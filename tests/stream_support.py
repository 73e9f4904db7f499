"""Helpers for the streaming tests: a room with the assistant on, and stream collection."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fakes.openai_server import FakeOpenAI
from tests.support import Client, HubServer

STREAM_TYPES = ("stream_start", "stream_delta", "stream_end", "stream_error")


def upstream(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    """``plugin_config`` pointing the OpenAI-compatible provider at ``fake``."""
    return {"openai_provider": {"base_url": fake.base_url, "model": "fake-model", **extra}}


async def assistant_room(server: HubServer, room: str = "lobby") -> Client:
    """Create ``room`` (owned by ``owner``), enable the assistant there; return an admin client."""
    await server.create_room(room)
    admin = await server.client("root", admin=True)
    await admin.join(room)
    await admin.send(
        {"type": "command", "room": room, "text": "/plugins enable assistant", "id": "on"}
    )
    reply = await admin.expect(
        lambda f: f.get("id") == "on", skip=("ping", "presence", "event", "typing")
    )
    assert reply["type"] == "command_result", reply
    return admin


async def collect(client: Client, timeout: float = 10.0) -> dict[str, Any]:
    """Read one whole stream: ``{"start", "deltas", "end"}`` (end is stream_end or stream_error)."""
    out: dict[str, Any] = {"start": None, "deltas": []}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"stream did not end within {timeout}s: {client.seen[-3:]}")
        frame = await client.recv(left)
        kind = frame["type"]
        if kind == "stream_start":
            out["start"] = frame
        elif kind == "stream_delta":
            out["deltas"].append(frame)
        elif kind in ("stream_end", "stream_error"):
            out["end"] = frame
            return out


async def deltas_seen(client: Client, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Read until ``count`` deltas have arrived; return every stream frame read."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(f["type"] == "stream_delta" for f in frames) < count:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"fewer than {count} deltas within {timeout}s: {frames[-3:]}")
        frame = await client.recv(left)
        if frame["type"] in STREAM_TYPES:
            frames.append(frame)
    return frames


def text_of(stream: dict[str, Any]) -> str:
    return "".join(d["text"] for d in stream["deltas"])
