"""Test support: run a real hub (uvicorn, loopback, random port) and talk to it over WebSockets."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
import websockets

from hub.base.auth import Identity
from hub.base.config import Settings, load_settings
from hub.core import Hub
from hub.web.app import create_app

TEST_SECRET = "test-secret-for-lydian-test-suite-only-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_settings(data_dir: str, **overrides: Any) -> Settings:
    """Settings isolated from the developer's environment."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "secret": TEST_SECRET,
        "log_level": "warning",
        "port": 0,
    }
    values.update(overrides)
    return load_settings(env={}, **values)


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``check`` (a function, sync or async) until it returns something truthy, and
    return that; fail after ``timeout`` seconds. The way tests wait for a condition: never a
    fixed sleep, which is too short on a busy machine and too long on an idle one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)


class HubServer:
    """A hub served by uvicorn inside the test's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def hub(self) -> Hub:
        return self.app.state.hub

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> HubServer:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.settings.port or 0,
            log_level="warning",
            lifespan="on",
            ws_max_size=16 * 1024 * 1024,
            ws_ping_interval=None,
            ws_per_message_deflate=self.settings.ws_compression,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=10)

    def token(self, user: str, *, name: str | None = None, admin: bool = False) -> str:
        roles = ("admin",) if admin else ()
        return self.hub.token_for(Identity(id=user, name=name or user.title(), roles=roles))

    def http(self, user: str | None = None, admin: bool = False) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token(user, admin=admin)}"} if user else {}
        return httpx.AsyncClient(base_url=self.http_url, headers=headers, timeout=10)

    async def create_room(self, room: str, owner: str = "owner", **fields: Any) -> dict[str, Any]:
        async with self.http(owner) as client:
            resp = await client.post("/api/rooms", json={"id": room, **fields})
            assert resp.status_code == 201, resp.text
            return resp.json()

    async def client(
        self,
        user: str | None,
        *,
        name: str | None = None,
        admin: bool = False,
        token: str | None = None,
    ) -> Client:
        """A connected, authenticated client (guest when ``user`` is None and no token)."""
        client = await Client.connect(self.ws_url)
        if token is None and user is not None:
            token = self.token(user, name=name, admin=admin)
        await client.send({"type": "hello", "token": token} if token else {"type": "hello"})
        client.welcome = await client.expect("welcome")
        return client


@asynccontextmanager
async def running(settings: Settings):
    server = await HubServer(settings).start()
    try:
        yield server
    finally:
        await server.stop()


class Client:
    """A real WebSocket client (the ``websockets`` library) speaking the hub's protocol."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []
        self._held: list[dict[str, Any]] = []  # frames read ahead by ``say``, served first

    @classmethod
    async def connect(cls, url: str) -> Client:
        return cls(await websockets.connect(url, max_size=None, ping_interval=None))

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self._held:
            return self._held.pop(0)
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(frame)
        return frame

    async def expect(
        self,
        kind: str | Callable[[dict[str, Any]], bool],
        timeout: float = 5.0,
        skip: tuple[str, ...] = ("ping", "presence", "typing"),
    ) -> dict[str, Any]:
        """Next frame matching ``kind`` (type or predicate), passing over types in ``skip``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no {kind!r} frame within {timeout}s; last: {self.seen[-3:]}")
            frame = await self.recv(left)
            if (frame["type"] == kind) if isinstance(kind, str) else kind(frame):
                return frame
            if frame["type"] not in skip:
                raise AssertionError(f"expected {kind!r}, got {frame}")

    async def silent_for(self, seconds: float, skip: tuple[str, ...] = ("ping",)) -> list[dict]:
        """Frames (other than ``skip``) received during ``seconds``; usually asserted empty."""
        got = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                frame = await self.recv(left)
            except TimeoutError:
                break
            if frame["type"] not in skip:
                got.append(frame)
        return got

    async def join(self, room: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "join", "room": room, **fields})
        return await self.expect("joined")

    async def say(self, room: str, text: str, ref: str) -> dict[str, Any]:
        """Send and wait for the ack; frames that arrive first stay queued for later reads."""
        await self.send({"type": "send", "room": room, "text": text, "id": ref})
        ahead = []
        while (frame := await self.recv()).get("type") != "ack":
            ahead.append(frame)
        self._held[:0] = ahead
        return frame

    async def close(self) -> None:
        await self.ws.close()
