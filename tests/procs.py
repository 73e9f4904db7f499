"""Real hub processes (``lydian serve``) sharing PostgreSQL and Redis, for scale-out tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
from redis.asyncio import Redis

from hub.base.auth import Identity, issue_token
from hub.store.store import Store
from tests.support import TEST_SECRET, Client, free_port

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
STARTUP_TIMEOUT = 90.0
"""Bound on a ``lydian serve`` coming up: seconds when idle, much more on a loaded machine."""


class HubProcess:
    """One replica: a ``lydian serve`` subprocess on its own loopback port."""

    def __init__(self, env: dict[str, str], data_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**env, "LYDIAN_PORT": str(self.port), "LYDIAN_DATA_DIR": str(data_dir)}
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / f"hub-{self.port}.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> HubProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            ["lydian", "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"hub exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    resp = await http.get(f"{self.http_url}/healthz")
                    if resp.status_code == 200 and self._is_ours(resp.json()["pid"]):
                        return self
                await asyncio.sleep(0.1)
        raise AssertionError(f"hub on {self.port} did not start: {self.log.read_text()[-2000:]}")

    def _is_ours(self, pid: int) -> bool:
        """The answer came from this process or one of its workers, not a port squatter."""
        assert self.proc is not None
        if pid == self.proc.pid:
            return True
        with contextlib.suppress(OSError):
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == (
                self.proc.pid
            )
        return False

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no goodbye frames."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    async def client(self, user: str, admin: bool = False) -> Client:
        client = await Client.connect(self.ws_url)
        await client.send({"type": "hello", "token": token(user, admin)})
        client.welcome = await client.expect("welcome")
        return client


def token(user: str, admin: bool = False) -> str:
    identity = Identity(id=user, name=user.title(), roles=("admin",) if admin else ())
    return issue_token(identity, TEST_SECRET, 3600)


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """A private PostgreSQL schema, dropped afterwards; yields a DATABASE_URL using it."""
    schema = f"scale_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_URL)
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@contextlib.asynccontextmanager
async def opened_store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated store: SQLite in ``tmp_path`` (``kind`` "sqlite") or a private PostgreSQL
    schema ("postgres"), closed (and the schema dropped) afterwards."""
    if kind == "sqlite":
        store = await Store.open(f"sqlite:///{tmp_path}/store.sqlite3")
        try:
            yield store
        finally:
            await store.close()
        return
    async with pg_schema() as url:
        store = await Store.open(url, pool_max=4)
        try:
            yield store
        finally:
            await store.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any hub setting (``LYDIAN_*``, ``DATABASE_URL``,
    ``REDIS_URL``), plus ``extra``: what a test's ``lydian`` subprocess starts from."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LYDIAN_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(extra)
    return env


def cluster_env(database_url: str, redis_url: str = REDIS_URL, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "LYDIAN_SECRET": TEST_SECRET,
            "LYDIAN_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
            "LYDIAN_LOG_LEVEL": "warning",
        }
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, n: int, redis_url: str = REDIS_URL, **extra: str
) -> AsyncIterator[list[HubProcess]]:
    """``n`` replicas sharing one PostgreSQL schema and one Redis key prefix."""
    async with pg_schema() as db:
        env = cluster_env(db, redis_url, **extra)
        procs = [HubProcess(env, tmp_path / f"replica{i}") for i in range(n)]
        try:
            # start the first alone so it runs the migrations, then the rest together
            await procs[0].start()
            await asyncio.gather(*(p.start() for p in procs[1:]))
            yield procs
        finally:
            for p in procs:
                p.stop()


class PrivateRedis:
    """A redis-server on a free port that a test may stop and restart (``extra`` arguments
    e.g. make it durable: ``["--appendonly", "yes", "--dir", path]``)."""

    def __init__(self, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.extra = list(extra or [])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        try:
            for _ in range(200):  # PING, not just connect: it answers LOADING while it loads
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise AssertionError("private redis-server did not start")

    def stop(self) -> None:
        """kill -9 (a crash, as far as the hub can tell)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
