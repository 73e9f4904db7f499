"""Issue 13, items 6, 7 and 11b: integers out of range, deep nesting, and error frames that
name the room (and id) of the frame they refuse. The socket survives all of them."""

from __future__ import annotations

import json
import logging

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support import Client

INT64_OVER = 2**63  # 9223372036854775808
DEEP = "[" * 1000 + "]" * 1000


async def _error(client: Client, frame) -> dict:
    await client.send(frame if isinstance(frame, str) else json.dumps(frame))
    return await client.expect("error")


async def _still_works(client: Client, room: str, ref: str) -> None:
    ack = await client.say(room, "still here", ref)
    assert ack["type"] == "ack" and ack["offset"] >= 1


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "history", "room": "lobby", "before": INT64_OVER, "id": "h1"},
        {"type": "history", "room": "lobby", "before": 10**40, "id": "h1"},
        {"type": "history", "room": "lobby", "limit": INT64_OVER, "id": "h1"},
        {"type": "history", "room": "lobby", "before": -1, "id": "h1"},
        {"type": "join", "room": "lobby", "since": INT64_OVER, "id": "h1"},
        {"type": "join", "room": "lobby", "since": -1, "id": "h1"},
    ],
)
async def test_socket_integers_out_of_range_are_bad_request(server, frame, caplog):
    """Item 6: no ``internal`` error, no traceback; a typed ``bad_request`` naming room and id."""
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    with caplog.at_level(logging.ERROR):
        error = await _error(alice, frame)
    assert error["code"] == "bad_request", error
    assert (error["room"], error["id"]) == ("lobby", "h1")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await _still_works(alice, "lobby", "after")


async def test_socket_history_at_the_int64_limit_works(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    await alice.say("lobby", "one", "m1")
    await alice.send({"type": "history", "room": "lobby", "before": 2**63 - 1, "id": "h"})
    page = await alice.expect("history", skip=("ping", "presence", "message"))
    assert [m["text"] for m in page["messages"]] == ["one"]


@pytest.mark.parametrize(
    "query",
    [
        {"before": INT64_OVER},
        {"after": INT64_OVER},
        {"before": 10**40},
        {"limit": INT64_OVER},
        {"before": -1},
    ],
)
async def test_rest_history_integers_out_of_range_are_400(server, query):
    await server.create_room("lobby")
    async with server.http("alice") as http:
        resp = await http.get("/api/rooms/lobby/messages", params=query)
        assert resp.status_code == 400, resp.text
        ok = await http.get("/api/rooms/lobby/messages", params={"before": 2**63 - 1})
        assert ok.status_code == 200, ok.text


async def test_sse_offsets_out_of_range(server):
    """``since`` is range-checked; a huge ``Last-Event-ID`` header is bounded, not a 500."""
    await server.create_room("lobby")
    async with server.http("alice") as http:
        resp = await http.get("/api/rooms/lobby/events", params={"since": INT64_OVER})
        assert resp.status_code == 400, resp.text
        async with http.stream(
            "GET", "/api/rooms/lobby/events", headers={"Last-Event-ID": "9" * 40}
        ) as resp:
            assert resp.status_code == 200


async def test_socket_deep_nesting_gets_bad_request_and_the_socket_survives(server, caplog):
    """Item 7: ~1,000 levels used to close the socket with 1000 (and log a double close)."""
    await server.create_room("lobby")
    alice = await server.client("alice")
    await alice.join("lobby")
    with caplog.at_level(logging.ERROR):
        error = await _error(alice, DEEP)
        assert error["code"] == "bad_request" and "nested" in error["detail"]
        frame = '{"type": "send", "room": "lobby", "text": "x", "id": "d", "x": ' + DEEP + "}"
        error = await _error(alice, frame)
        assert error["code"] == "bad_request"
        await _still_works(alice, "lobby", "after-deep")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/rooms", '{"id": "deep", "name": ' + DEEP + "}"),
        ("/api/rooms", DEEP),
        ("/api/rooms/lobby/messages", '{"text": "x", "extra": ' + DEEP + "}"),
        ("/v1/chat/completions", '{"model": "assistant", "messages": ' + DEEP + "}"),
    ],
    ids=["room-name", "bare-array", "message-extra-field", "openai-messages"],
)
async def test_rest_deep_nesting_is_400_not_500(server, path, body):
    await server.create_room("lobby")
    async with server.http("alice") as http:
        resp = await http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400, resp.text
        assert "nested" in resp.text
        ok = await http.post(
            "/api/rooms/lobby/messages", json={"text": "fine", "meta": [[[["shallow"]]]]}
        )
        assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "send", "room": "lobby", "text": "   ", "id": "r"}, "invalid_frame"),
        ({"type": "send", "room": "lobby", "id": "r"}, "invalid_frame"),
        ({"type": "send", "room": "lobby", "text": 5, "id": "r"}, "invalid_frame"),
        ({"type": "send", "room": "lobby", "text": "x" * 20, "id": "r"}, "invalid_frame"),
        (
            {"type": "send", "room": "lobby", "text": "x", "attachments": ["a"] * 11, "id": "r"},
            "invalid_frame",
        ),
        (
            {"type": "send", "room": "lobby", "text": "x", "attachments": ["nope"], "id": "r"},
            "invalid_frame",
        ),
        ({"type": "command", "room": "lobby", "text": " ", "id": "r"}, "invalid_frame"),
        ({"type": "typing", "room": "lobby", "active": "yes", "id": "r"}, "invalid_frame"),
        ({"type": "history", "room": "lobby", "limit": 0, "id": "r"}, "bad_request"),
        ({"type": "cancel", "room": "lobby", "id": "r"}, "invalid_frame"),
        ({"type": "bogus", "room": "lobby", "id": "r"}, "unknown_type"),
    ],
)
async def test_every_error_for_a_frame_names_its_room_and_id(make_server, frame, code):
    """Item 11b: a frame the hub could read gets an error with the room (and id) it named."""
    async with make_server(max_text_chars=10) as server:
        await server.create_room("lobby")
        alice = await server.client("alice")
        await alice.join("lobby")
        error = await _error(alice, frame)
        assert error["code"] == code, error
        assert error.get("room") == "lobby" and error.get("id") == "r", error
        await _still_works(alice, "lobby", "after")


async def test_frames_before_hello_name_their_room(server):
    alice = await Client.connect(server.ws_url)
    error = await _error(alice, {"type": "join", "room": "lobby", "id": "j"})
    assert (error["code"], error.get("room"), error.get("id")) == (
        "not_authenticated",
        "lobby",
        "j",
    )


def test_integer_command_arguments_are_range_checked():
    """Integers typed in a command line are client integers too: beyond int64, a usage error."""
    from hub.plugin_host.commands import Arg, CommandSpec, UsageError

    spec = CommandSpec(name="scale", help="", handler=lambda c, a: None, args=[Arg("n", type=int)])
    assert spec.parse(str(2**63 - 1)) == {"n": 2**63 - 1}
    assert spec.parse(str(-(2**63))) == {"n": -(2**63)}
    for text in (str(2**63), str(-(2**63) - 1), "9" * 400):
        with pytest.raises(UsageError) as info:
            spec.parse(text)
        assert "N must be int" in info.value.detail


async def test_a_failure_escaping_the_frame_handler_closes_the_socket_once(server, monkeypatch):
    """Whatever escapes frame handling is logged once and the socket closed once: no second
    close from Litestar's handler (the old double-close ``RuntimeError``)."""
    from hub.web.gateway import Session

    original = Session.handle_raw

    async def explode(self, data):
        if "explode" in (data if isinstance(data, str) else data.decode()):
            raise RuntimeError("escaped on purpose")
        await original(self, data)

    monkeypatch.setattr(Session, "handle_raw", explode)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(n) for n in ("litestar", "uvicorn.error", "hub.web.gateway")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        alice = await server.client("alice")
        await alice.send({"type": "pong", "x": "explode"})
        with pytest.raises(ConnectionClosed):
            while True:
                await alice.recv(timeout=5)
        bob = await server.client("bob")  # the hub is fine
        await bob.send({"type": "pong"})
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    messages = [r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in records]
    assert len(records) == 1 and "escaped on purpose" in messages[0], messages
    assert not any("websocket.close" in m for m in messages), messages
