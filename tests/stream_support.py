"""Helpers for the streaming tests: a room with the assistant on, and stream collection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.openai_server import FakeOpenAI, Script
from tests.procs import HubProcess, cluster, token
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


@asynccontextmanager
async def assistant_cluster(
    tmp_path: Path, script: Script, replicas: int = 2, **env: str
) -> AsyncIterator[tuple[FakeOpenAI, list[HubProcess]]]:
    """A fake model playing ``script`` and ``replicas`` hub processes on PostgreSQL and
    Redis, their provider pointed at it, with room ``ops`` created and the assistant on."""
    async with FakeOpenAI(script) as fake:
        provider = {
            "LYDIAN_PLUGIN_OPENAI_PROVIDER_BASE_URL": fake.base_url,
            "LYDIAN_PLUGIN_OPENAI_PROVIDER_MODEL": "fake-model",
        }
        async with cluster(tmp_path, replicas, **provider, **env) as procs:
            headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
            async with httpx.AsyncClient(base_url=procs[0].http_url, headers=headers) as http:
                assert (await http.post("/api/rooms", json={"id": "ops"})).status_code == 201
                resp = await http.put("/api/rooms/ops/plugins/assistant", json={"enabled": True})
                assert resp.status_code == 200, resp.text
            yield fake, procs


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
