"""docs/protocol.md stays true to hub/base/protocol.py; ``decode_client`` reports the right codes.

Every ```json block in the document is marked ``client`` or ``server`` and must decode as a
frame of that direction, use only fields the frame defines, and together the blocks must show
every frame type. The error and close code tables must list every code. Pure decoding: fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hub.base.protocol import (
    ClientFrame,
    CloseCode,
    Command,
    Direct,
    ErrorCode,
    FrameError,
    Hello,
    HistoryRequest,
    Join,
    Pong,
    Send,
    ServerFrame,
    decode_client,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
FENCE = re.compile(r"^```json([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_server_decoder = msgspec.json.Decoder(ServerFrame)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def json_blocks() -> list[tuple[str, str]]:
    """``(direction, body)`` of every ```json block, direction from the info string."""
    return [(info.strip(), body) for info, body in FENCE.findall(doc_text())]


def decode_block(direction: str, body: str) -> msgspec.Struct:
    if direction == "client":
        return decode_client(body)
    if direction == "server":
        return _server_decoder.decode(body)
    raise AssertionError(f"json block without 'client' or 'server' marker: {body[:80]}")


def unknown_fields(value: Any, raw: Any, path: str = "$") -> list[str]:
    """Keys in ``raw`` that the decoded struct does not define (frames ignore unknown fields,
    so a misspelt field in an example would otherwise pass unnoticed)."""
    found: list[str] = []
    if isinstance(value, msgspec.Struct):
        fields = set(value.__struct_fields__)
        tag_field = value.__struct_config__.tag_field
        for key, item in raw.items():
            if key == tag_field:
                continue
            if key not in fields:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(getattr(value, key), item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, (item, raw_item) in enumerate(zip(value, raw, strict=True)):
            found += unknown_fields(item, raw_item, f"{path}[{index}]")
    return found


# ------------------------------------------------------------------ the document


def test_document_has_marked_json_blocks() -> None:
    blocks = json_blocks()
    assert len(blocks) >= len(ClientFrame.__args__) + len(ServerFrame.__args__)
    unmarked = [body[:60] for direction, body in blocks if direction not in {"client", "server"}]
    assert not unmarked, f"json blocks must be marked 'json client' or 'json server': {unmarked}"


@pytest.mark.parametrize(("direction", "body"), json_blocks())
def test_every_example_decodes_with_known_fields_only(direction: str, body: str) -> None:
    frame = decode_block(direction, body)
    assert not unknown_fields(frame, msgspec.json.decode(body))


def test_every_frame_type_has_an_example() -> None:
    shown = {(direction, type(decode_block(direction, body))) for direction, body in json_blocks()}
    missing = [
        f"{direction} {cls.__struct_config__.tag}"
        for direction, union in (("client", ClientFrame), ("server", ServerFrame))
        for cls in union.__args__
        if (direction, cls) not in shown
    ]
    assert not missing, f"docs/protocol.md has no example of: {missing}"


def table_codes(heading: str) -> set[str]:
    """The backticked first cells of the table under ``## heading``."""
    section = doc_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)`", section, re.MULTILINE))


def test_error_table_lists_every_error_code() -> None:
    assert table_codes("Errors") == {code.value for code in ErrorCode}


def test_close_table_lists_every_close_code() -> None:
    codes = {str(v) for k, v in vars(CloseCode).items() if k.isupper() and isinstance(v, int)}
    assert table_codes("Close codes") == codes


# ------------------------------------------------------------------ decode_client


def code_of(data: str | bytes) -> ErrorCode:
    with pytest.raises(FrameError) as info:
        decode_client(data)
    assert info.value.detail
    return info.value.code


@pytest.mark.parametrize(
    "data",
    [
        "",
        "{",
        '{"type": "join", "room": "general"',
        "{'type': 'pong'}",
        '{"type": "pong"} trailing',
        b"\xff\xfe{}",
        "not json at all",
    ],
)
def test_malformed_json_is_bad_json(data: str | bytes) -> None:
    assert code_of(data) == ErrorCode.BAD_JSON


@pytest.mark.parametrize("kind", ["nope", "welcome", "joined", "ping", "message", "HELLO", ""])
def test_type_not_sent_by_clients_is_unknown_type(kind: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_client(msgspec.json.encode({"type": kind, "room": "general"}))
    assert info.value.code == ErrorCode.UNKNOWN_TYPE
    assert repr(kind) in info.value.detail


@pytest.mark.parametrize(
    "frame",
    [
        # no usable type tag
        {},
        {"room": "general"},
        {"type": 5},
        {"type": None},
        [1, 2],
        "hello",
        42,
        # missing required fields
        {"type": "join"},
        {"type": "send", "room": "general"},
        {"type": "direct", "text": "hi"},
        {"type": "cancel", "room": "general"},
        {"type": "command", "text": "/help"},
        # wrong field types
        {"type": "join", "room": 7},
        {"type": "join", "room": "general", "since": "41"},
        {"type": "join", "room": "general", "since": 4.5},
        {"type": "send", "room": "general", "text": ["hi"]},
        {"type": "send", "room": "general", "text": "hi", "attachments": "a"},
        {"type": "typing", "room": "general", "active": "yes"},
        {"type": "hello", "token": 123},
        {"type": "history", "room": "general", "limit": "10"},
        # constraint violations
        {"type": "join", "room": ""},
        {"type": "join", "room": "gen eral"},
        {"type": "join", "room": "général"},
        {"type": "join", "room": "r/1"},
        {"type": "join", "room": "x" * 101},
        {"type": "send", "room": "general", "text": "hi", "id": "i" * 101},
        {"type": "hello", "name": "n" * 81},
        {"type": "direct", "to": "", "text": "hi"},
        {"type": "direct", "to": "u" * 201, "text": "hi"},
    ],
)
def test_wrong_shape_is_invalid_frame(frame: Any) -> None:
    assert code_of(msgspec.json.encode(frame)) == ErrorCode.INVALID_FRAME


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "join", "room": "general", "since": -1},
        {"type": "join", "room": "general", "since": 2**63},
        {"type": "history", "room": "general", "limit": 0},
        {"type": "history", "room": "general", "limit": 1001},
        {"type": "history", "room": "general", "limit": 2**63},
        {"type": "history", "room": "general", "before": -5},
        {"type": "history", "room": "general", "before": 2**63},
        {"type": "history", "room": "general", "before": 10**30},
    ],
)
def test_integers_out_of_range_are_bad_request(frame: Any) -> None:
    """Every integer a client sends is range-checked (int64 at most) before it is used."""
    with pytest.raises(FrameError) as info:
        decode_client(msgspec.json.encode({**frame, "id": "r1"}))
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert (info.value.room, info.value.ref) == ("general", "r1")


def test_the_largest_int64_offset_is_accepted() -> None:
    frame = decode_client(f'{{"type": "history", "room": "r", "before": {2**63 - 1}}}')
    assert frame == HistoryRequest(room="r", before=2**63 - 1)


@pytest.mark.parametrize(
    "data",
    [
        "[" * 1000 + "]" * 1000,
        '{"type": "send", "room": "r", "text": "x", "x": ' + "[" * 65 + "]" * 65 + "}",
        b'{"type": "send", "room": "r", "text": "x", "x": '
        + b'{"a":' * 100_000
        + b"1"
        + b"}" * 100_000
        + b"}",
    ],
    ids=["1000-arrays", "65-inside-a-frame", "100000-objects-bytes"],
)
def test_deep_nesting_is_bad_request_before_decoding(data: str | bytes) -> None:
    with pytest.raises(FrameError) as info:
        decode_client(data)
    assert info.value.code == ErrorCode.BAD_REQUEST and "64" in info.value.detail


@pytest.mark.parametrize(
    "data",
    [
        '{"type": "send", "room": "r", "text": "' + "[" * 5000 + '"}',
        '{"type": "send", "room": "r", "text": "\\"' + "{" * 5000 + '"}',
        '{"type": "send", "room": "r", "text": "x", "x": ' + "[" * 63 + "]" * 63 + "}",
        '{"type": "send", "room": "r", "text": "x", "x": [' + "[[]]," * 3000 + "[]]}",
    ],
    ids=["brackets-in-text", "escaped-quote-then-brackets", "63-deep-inside-64", "wide"],
)
def test_brackets_in_strings_and_wide_json_are_not_deep(data: str) -> None:
    assert isinstance(decode_client(data), Send)


def test_a_frame_error_names_the_room_and_id_it_could_read() -> None:
    with pytest.raises(FrameError) as info:
        decode_client('{"type": "send", "room": "general", "id": "m1"}')
    assert (info.value.code, info.value.room, info.value.ref) == (
        ErrorCode.INVALID_FRAME,
        "general",
        "m1",
    )
    with pytest.raises(FrameError) as info:  # a room id that is not one is not echoed
        decode_client('{"type": "send", "room": "gen eral", "text": "x", "id": "m1"}')
    assert (info.value.room, info.value.ref) == (None, "m1")


def test_invalid_frame_detail_names_the_field() -> None:
    with pytest.raises(FrameError) as info:
        decode_client('{"type": "join", "room": "general", "since": "1"}')
    assert "'join'" in info.value.detail and "$.since" in info.value.detail


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"type": "pong"}', Pong()),
        ('{"type": "hello"}', Hello()),
        ('{"type": "join", "room": "a.b:c@d-e_1", "since": 0}', Join(room="a.b:c@d-e_1", since=0)),
        ('{"type": "join", "room": "' + "x" * 100 + '"}', Join(room="x" * 100)),
        (b'{"type": "send", "room": "r", "text": "hi", "id": "m1"}', Send("r", "hi", id="m1")),
        ('{"type": "direct", "to": "bob", "text": "hi"}', Direct(to="bob", text="hi")),
        ('{"type": "history", "room": "r", "limit": 1000}', HistoryRequest(room="r", limit=1000)),
        ('{"type": "command", "room": "r", "text": "/help", "extra": 1}', Command("r", "/help")),
    ],
)
def test_valid_frames_decode(data: str | bytes, expected: msgspec.Struct) -> None:
    """Limits are inclusive, bytes work like text, and unknown fields are ignored."""
    assert decode_client(data) == expected


def test_history_defaults_to_fifty() -> None:
    frame = decode_client('{"type": "history", "room": "general"}')
    assert isinstance(frame, HistoryRequest) and frame.limit == 50 and frame.before is None
