"""Issue 13, item 9: on shutdown (SIGTERM to ``lydian serve``) every socket gets a
``reconnect`` frame and then close 1001, before uvicorn would close it with 1012; also
with ``--workers 2``."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
import websockets

from tests.procs import HubProcess, cluster_env, pg_schema, token
from tests.support import TEST_SECRET
from tests.test_cli import CLEAN_ENV


async def _said_goodbye(ws: websockets.ClientConnection) -> tuple[list[dict], int | None]:
    """Frames up to the close, and the close code."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


async def _connect(hub: HubProcess, user: str) -> websockets.ClientConnection:
    ws = await websockets.connect(hub.ws_url, ping_interval=None)
    await ws.send(json.dumps({"type": "hello", "token": token(user)}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome"
    ws.node = welcome["session"].rsplit("-", 1)[0]  # type: ignore[attr-defined]  # process id
    return ws


async def _sigterm_and_check(hub: HubProcess, sockets: list) -> None:
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGTERM)
    results = await asyncio.gather(*(_said_goodbye(ws) for ws in sockets))
    await asyncio.to_thread(hub.proc.wait, 30)
    for frames, code in results:
        reconnects = [f for f in frames if f["type"] == "reconnect"]
        assert code == 1001, (code, frames[-3:])
        assert len(reconnects) == 1 and reconnects[0]["reason"] == "shutdown", frames[-3:]
        assert reconnects[0]["retry_after"] == 0.5
        assert frames[-1]["type"] == "reconnect"  # the last frame before the close


async def test_sigterm_sends_reconnect_then_1001(tmp_path):
    env = {**CLEAN_ENV, "LYDIAN_SECRET": TEST_SECRET, "LYDIAN_SHUTDOWN_RETRY_AFTER": "0.5"}
    hub = await HubProcess(env, tmp_path).start()
    try:
        sockets = [await _connect(hub, f"user{i}") for i in range(3)]
        await _sigterm_and_check(hub, sockets)
    finally:
        hub.kill()


@pytest.mark.timeout(120)
async def test_sigterm_with_two_workers(tmp_path):
    async with pg_schema() as db:
        env = cluster_env(db, LYDIAN_WORKERS="2", LYDIAN_SHUTDOWN_RETRY_AFTER="0.5")
        hub = await HubProcess(env, tmp_path).start()
        try:
            sockets = []
            while len({ws.node for ws in sockets}) < 2:  # sockets on both workers
                assert len(sockets) < 100, "every socket landed on the same worker"
                sockets.append(await _connect(hub, f"user{len(sockets)}"))
            await _sigterm_and_check(hub, sockets)
        finally:
            hub.kill()
