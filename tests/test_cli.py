"""`lydian serve` with no configuration on a clean directory; `lydian token`, `migrate`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.fakes.openai_server import FakeOpenAI, Script
from tests.procs import STARTUP_TIMEOUT, clean_env
from tests.support import free_port

CLEAN_ENV = clean_env()


def _lydian(*args: str, cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        cwd=cwd,
        env=env or CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


async def _wait_up(url: str, proc: subprocess.Popen, seconds: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise AssertionError("hub did not come up")


async def _serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """``lydian serve`` on a free port, output captured; returns once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        ["lydian", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await _wait_up(f"http://127.0.0.1:{port}", proc)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, port


async def test_serve_with_no_configuration_serves_schema_and_websocket(tmp_path):
    proc, port = await _serve(tmp_path, CLEAN_ENV)
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            schema = await http.get(f"{url}/schema/openapi.json")
            assert schema.status_code == 200 and schema.json()["info"]["title"] == "Lydian hub"
            health = (await http.get(f"{url}/healthz")).json()
            assert health["store"] == "sqlite"
        # embedded defaults: an SQLite file and a generated secret under the working directory
        assert (tmp_path / ".lydian" / "lydian.sqlite3").is_file()
        token = _lydian("token", "alice", "--admin", cwd=tmp_path).stdout.strip()
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "hello", "token": token}))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert welcome["type"] == "welcome" and welcome["roles"] == ["admin"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    assert proc.returncode == 0


@pytest.mark.parametrize("level", ["info", "warning"])
async def test_serve_logs_at_the_configured_level(tmp_path, level):
    """``LYDIAN_LOG_LEVEL`` decides what the hub writes: a finished stream is an info line;
    the HTTP client's own line per upstream request is left out at every level."""
    async with FakeOpenAI(Script(tokens=["a ", "b"])) as fake:
        env = {
            **CLEAN_ENV,
            "LYDIAN_LOG_LEVEL": level,
            "LYDIAN_SECRET": "s" * 40,
            "LYDIAN_PLUGIN_OPENAI_PROVIDER_BASE_URL": fake.base_url,
        }
        proc, port = await _serve(tmp_path, env)
        try:
            url = f"http://127.0.0.1:{port}"
            token = _lydian("token", "alice", cwd=tmp_path, env=env).stdout.strip()
            body = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                answer = await http.post(f"{url}/v1/chat/completions", json=body)
            assert answer.json()["choices"][0]["message"]["content"] == "a b"
            assert len(fake.chat_requests()) == 1
        finally:
            proc.send_signal(signal.SIGINT)
            output = await asyncio.to_thread(lambda: proc.communicate(timeout=15)[0])
    stream_lines = [line for line in output.splitlines() if "stream chatcmpl-" in line]
    assert len(stream_lines) == (1 if level == "info" else 0), output
    assert "HTTP Request:" not in output, output


def test_migrate_creates_the_schema_and_is_repeatable(tmp_path):
    first = _lydian("migrate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / ".lydian" / "lydian.sqlite3").is_file()
    assert _lydian("migrate", cwd=tmp_path).returncode == 0


def test_token_is_signed_with_the_hubs_secret(tmp_path):
    env = {**CLEAN_ENV, "LYDIAN_SECRET": "s" * 40}
    out = _lydian("token", "bob", "--name", "Bob B", cwd=tmp_path, env=env)
    from hub.base.auth import verify_token

    identity = verify_token(out.stdout.strip(), "s" * 40)
    assert (identity.id, identity.name, identity.roles) == ("bob", "Bob B", ())


def test_several_workers_need_redis(tmp_path):
    out = _lydian("serve", "--workers", "2", cwd=tmp_path)
    assert out.returncode == 2 and "REDIS_URL" in out.stderr
