"""Issue 13, item 11a: docs/protocol.md and the server agree on omitted fields. The doc's
table lists exactly the fields the protocol structs may omit; real server output leaves out
every default it may omit and sends every other field; chat messages are always complete."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec

from hub.base import protocol as p
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.stream_support import assistant_room, collect, upstream

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
NESTED = {
    p.UserRef: "user objects (`user`, `agent`)",
    p.PresenceEntry: "`joined` `presence` entries",
    p.StreamSnapshot: "`joined` `streams` entries",
}


def _defaults(struct: type) -> dict[str, Any]:
    out = {}
    for field in msgspec.structs.fields(struct):
        if field.default is not msgspec.NODEFAULT:
            out[field.name] = field.default
        elif field.default_factory is not msgspec.NODEFAULT:
            out[field.name] = field.default_factory()
    return out


def _norm(value: Any) -> str:
    """A default as comparable text: ``0.0`` and ``0`` are the same JSON number."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


def _omittable() -> set[tuple[str, str, str]]:
    rows = set()
    for struct in [*p.ServerFrame.__args__, *NESTED]:
        assert struct.__struct_config__.omit_defaults, struct
        where = NESTED.get(struct) or f"`{struct.__struct_config__.tag}`"
        for name, default in _defaults(struct).items():
            rows.add((where, name, _norm(json.loads(msgspec.json.encode(default)))))
    return rows


def _doc_table() -> set[tuple[str, str, str]]:
    section = DOC.read_text().split("### Omitted fields\n", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`") and cells[0] not in ("Where",):
            default = _norm(json.loads(cells[2].strip("`")))
            rows.add((cells[0], cells[1].strip("`"), default))
    return rows


def test_the_doc_lists_exactly_the_omittable_fields():
    assert _doc_table() == _omittable()


def test_chat_messages_are_always_complete():
    assert not p.ChatMessage.__struct_config__.omit_defaults
    doc = DOC.read_text()
    assert re.search(r"chat message object[^.]*always complete", doc.replace("\n", " "))


def _check(frame: dict[str, Any], struct: type, path: str) -> list[str]:
    """Problems: a default sent where it may be omitted, or a field missing that may not."""
    problems = []
    where = NESTED.get(struct) or f"`{struct.__struct_config__.tag}`"
    omittable = {name: json.loads(d) for w, name, d in DOC_ROWS if w == where}  # per the doc
    for field in msgspec.structs.fields(struct):
        name = field.name
        if name not in frame:
            if name not in omittable:
                problems.append(f"{path}.{name} missing")
            continue
        value = frame[name]
        if name in omittable and value == omittable[name]:
            problems.append(f"{path}.{name} sent with its default {value!r}")
        problems += _nested(value, field.type, f"{path}.{name}")
    return problems


def _nested(value: Any, annotation: Any, path: str) -> list[str]:
    structs = [
        t
        for t in (*getattr(annotation, "__args__", ()), annotation)
        if isinstance(t, type) and issubclass(t, msgspec.Struct)
    ]
    inner = [a for a in getattr(annotation, "__args__", ()) if getattr(a, "__args__", None)]
    if isinstance(value, dict) and structs:
        return _check(value, structs[0], path)
    if isinstance(value, list):
        for arg in getattr(annotation, "__args__", ()):
            for t in (arg, *getattr(arg, "__args__", ())):
                if isinstance(t, type) and issubclass(t, msgspec.Struct):
                    return [x for i, v in enumerate(value) for x in _check(v, t, f"{path}[{i}]")]
    for a in inner:
        found = _nested(value, a, path)
        if found:
            return found
    return []


TYPES = {s.__struct_config__.tag: s for s in p.ServerFrame.__args__}
DOC_ROWS = _doc_table()


async def test_real_server_output_agrees_with_the_doc(make_server):
    async with FakeOpenAI(Script(tokens=["a ", "b"])) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            admin = await assistant_room(server)
            alice, bob = await server.client("alice"), await server.client("bob")
            await alice.join("lobby")
            await bob.join("lobby", since=0)
            await alice.send({"type": "typing", "room": "lobby"})
            await alice.say("lobby", "hi", "m1")
            await alice.say("lobby", "hi", "m1")  # duplicate: true
            await alice.say("lobby", "@assistant answer", "q1")
            await collect(bob)
            for frame in (
                {"type": "history", "room": "lobby", "id": "h"},
                {"type": "history", "room": "lobby"},
                {"type": "command", "room": "lobby", "text": "/help", "id": "c"},
                {"type": "direct", "to": "bob", "text": "psst", "id": "d"},
                {"type": "join", "room": "nope", "id": "x"},
                {"type": "join", "room": "nope"},
                {"type": "leave", "room": "lobby", "id": "l"},
                {"type": "leave", "room": "lobby"},
            ):
                await alice.send(frame)
            await alice.send({"type": "send", "room": "lobby", "text": "last", "id": "end"})
            await alice.expect(lambda f: f.get("id") == "end", timeout=10, skip=tuple(TYPES))
            await bob.silent_for(0.3)
            seen = admin.seen + alice.seen + bob.seen
    kinds = {f["type"] for f in seen}
    assert {"welcome", "joined", "message", "ack", "history", "command_result", "error"} <= kinds
    assert {"left", "stream_start", "stream_delta", "stream_end", "presence"} <= kinds
    problems = [x for f in seen for x in _check(f, TYPES[f["type"]], f["type"])]
    assert not problems, problems
