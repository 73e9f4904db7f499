"""Repair squatted DM rooms: rooms at a ``dm:`` id that are not the pair's own DM room.

Before ``dm:`` ids were reserved, any user could create ``dm:alice:bob`` and the DM path
would post alice and bob's messages into it. A room at a ``dm:`` id is genuine when its id
is one the DM path makes (``dm:<a>:<b>``, two valid user ids in order), its kind is ``dm``,
it was created by one of the pair and it has no member but them. Each other room is
repaired (docs/security.md, "Direct messages"):

* kind ``dm``, created by one of the pair, but with other members: the others are removed
  (the messages are the pair's own DMs; nobody else may read them any longer);
* anything else (a public or private room someone made, or a ``dm`` room made by a third
  user): the room is **renamed** with everything in it (messages, members, plugin settings,
  bridge links) to ``squatted-<rest of the id>``, kind ``dm`` becoming ``private``. Its
  creator keeps what they made; the pair, if they posted in it, stay members so they keep
  their own messages. The pair's next DM creates a clean DM room at the ``dm:`` id.

The schema is frozen here as it was when this migration was written. Idempotent.
"""

import logging
import re
from datetime import UTC, datetime

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Timestamptz, Varchar
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-12-01T12:40:04:130004"
VERSION = "1.38.0"
DESCRIPTION = "repair squatted dm: rooms (rename them away, or drop members not of the pair)"

log = logging.getLogger("lydian.migrations")

_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,48}$")
_ROOM_ID_MAX = 100
# tables whose ``room`` column names a room; renamed rooms take their rows with them
_ROOM_COLUMNS = [
    "lydian_message",
    "lydian_member",
    "lydian_room_plugin",
    "lydian_bridge",
    "lydian_bridge_message",
]


class _Room(Table, tablename="lydian_room"):
    slug = Varchar(length=100, unique=True)
    kind = Varchar(length=16)
    created_by = Varchar(length=200)


class _Member(Table, tablename="lydian_member"):
    room = Varchar(length=100)
    user_id = Varchar(length=200)
    user_name = Varchar(length=200)
    role = Varchar(length=16)
    joined_at = Timestamptz()


class _Message(Table, tablename="lydian_message"):
    room = Varchar(length=100)
    author_id = Varchar(length=200)
    author_name = Varchar(length=200)


def pair_of(room_id: str) -> tuple[str, str] | None:
    """The pair of a DM room id as the DM path makes it (``dm:<a>:<b>``, a < b)."""
    parts = room_id[3:].split(":") if room_id.startswith("dm:") else []
    if len(parts) != 2 or not all(_USER.match(p) for p in parts) or parts[0] >= parts[1]:
        return None
    return parts[0], parts[1]


async def _free_id(room_id: str) -> str:
    base = ("squatted-" + room_id[3:].replace(":", "-"))[: _ROOM_ID_MAX - 4]
    candidate, n = base, 1
    while await _Room.exists().where(_Room.slug == candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


async def repair_dm_rooms() -> list[tuple[str, str]]:
    """Repair every squatted ``dm:`` room; returns ``(room id, what was done)`` pairs."""
    engine = engine_finder()
    for table in (_Room, _Member, _Message):
        table._meta.db = engine
    done: list[tuple[str, str]] = []
    rooms = await _Room.select().where(_Room.slug.like("dm:%"))
    for room in rooms:
        room_id = room["slug"]
        pair = pair_of(room_id)
        members = {
            r["user_id"]
            for r in await _Member.select(_Member.user_id).where(_Member.room == room_id)
        }
        if pair is not None and room["kind"] == "dm" and room["created_by"] in pair:
            strangers = members - set(pair)
            if strangers:
                await _Member.delete().where(
                    (_Member.room == room_id) & _Member.user_id.is_in(sorted(strangers))
                )
                done.append((room_id, f"removed members not of the pair: {sorted(strangers)}"))
            continue
        new_id = await _free_id(room_id)
        for table in _ROOM_COLUMNS:
            await engine.run_ddl(
                f"UPDATE {table} SET room = '{_quote(new_id)}' WHERE room = '{_quote(room_id)}'"
            )
        kind = "private" if room["kind"] == "dm" else room["kind"]
        await _Room.update({_Room.slug: new_id, _Room.kind: kind}).where(_Room.slug == room_id)
        for user_id in pair or ():  # the pair keep their own messages posted there
            if user_id in members:
                continue
            authored = (
                await _Message.select(_Message.author_name)
                .where((_Message.room == new_id) & (_Message.author_id == user_id))
                .first()
            )
            if authored is not None:
                await _Member.insert(
                    _Member(
                        room=new_id,
                        user_id=user_id,
                        user_name=authored["author_name"],
                        role="member",
                        joined_at=datetime.now(UTC),
                    )
                )
        done.append((room_id, f"renamed to {new_id!r} (kind {room['kind']!r})"))
    for room_id, what in done:
        log.warning("squatted DM room %r repaired: %s", room_id, what)
    return done


def _quote(value: str) -> str:
    return value.replace("'", "''")


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="lydian", description=DESCRIPTION)

    async def repair() -> None:
        await repair_dm_rooms()

    manager.add_raw(repair)
    return manager
