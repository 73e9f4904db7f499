"""Issue 13, item 8: refused requests (401, 403, 4xx) are logged once, short, without a
traceback, and a flood of them adds a small, bounded amount of log; real failures keep theirs."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess

import httpx

from hub.web import refusals
from tests.support import free_port
from tests.test_cli import CLEAN_ENV, _wait_up


async def test_300_refused_requests_add_little_log(tmp_path):
    """A real ``lydian serve`` at the default level (info, uvicorn's access log included)."""
    # rate limits off: the 300 refusals must be 401 and 403, not the limiter's 429
    env = {**CLEAN_ENV, "LYDIAN_SECRET": "s" * 40, "LYDIAN_LIMITS": "false"}
    port = free_port()
    log_path = tmp_path / "hub.log"
    with log_path.open("wb") as out:  # a file, not a pipe: a flood must not block the hub
        proc = subprocess.Popen(
            ["lydian", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_up(url, proc)
        bad = {"Authorization": "Bearer not-a-token"}
        async with httpx.AsyncClient(base_url=url) as http:
            guest = (await http.post("/api/guest-token")).json()["token"]
            as_guest = {"Authorization": f"Bearer {guest}"}
            for i in range(300):
                if i % 3 == 2:  # a guest may not create rooms: 403
                    resp = await http.post("/api/rooms", json={"id": f"r{i}"}, headers=as_guest)
                    assert resp.status_code == 403
                else:
                    resp = await http.get("/api/rooms", headers=bad)
                    assert resp.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 15)
    output = log_path.read_text()
    assert proc.returncode == 0
    assert "Traceback" not in output, output[:3000]
    lines = output.splitlines()
    refusal_lines = [line for line in lines if " from 127.0.0.1: " in line]
    access_lines = [line for line in lines if '" 40' in line and "HTTP/1.1" in line]
    assert len(access_lines) == 300  # uvicorn's one access line per request at info
    assert 2 <= len(refusal_lines) <= 10, refusal_lines  # the hub's own: first of each kind
    # what the requests added: from the first refused request's line to the last (start-up
    # and shutdown lines depend on how many plugins are installed, not on the refusals)
    is_refused = [i for i, line in enumerate(lines) if line in access_lines]
    during = lines[is_refused[0] : is_refused[-1] + 1]
    assert len(during) < 300 + 10, len(during)
    assert len("\n".join(during).encode()) < 50 * 1024, len("\n".join(during).encode())


def test_repeats_are_summed_up_after_the_window(caplog):
    refusals._seen.clear()
    scope = {"type": "http", "method": "GET", "path": "/api/rooms", "client": ("10.0.0.9", 1)}
    with caplog.at_level(logging.INFO, logger="hub.http"):
        assert refusals.log_refusal(401, scope, "bad token", now=1000.0)
        assert not any(refusals.log_refusal(401, scope, "bad token", now=1001.0) for _ in range(50))
        assert refusals.log_refusal(404, scope, "no room", now=1001.0)  # another kind: logged
        assert refusals.log_refusal(401, scope, "bad token", now=1000.0 + refusals.WINDOW)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("401 GET /api/rooms from 10.0.0.9: bad token")
    assert "+50 like it" in messages[-1]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_real_failure_keeps_its_traceback(server):
    """A 500 (here: a route that fails) is still logged at ERROR with the traceback."""
    hub = server.hub

    async def broken(*_a, **_k):
        raise RuntimeError("database on fire")

    hub.queries.list_rooms = broken  # the route's own dependency fails, not the hub's logging
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("litestar").addHandler(handler)  # Litestar's logger does not propagate
    try:
        async with server.http("alice") as http:
            resp = await http.get("/api/rooms")
    finally:
        logging.getLogger("litestar").removeHandler(handler)
    assert resp.status_code == 500
    [record] = records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and "database on fire" in str(record.exc_info[1])
