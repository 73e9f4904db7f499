"""Composite indexes Piccolo's column options cannot express."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-24T15:18:08:000000"
VERSION = "1.38.0"
DESCRIPTION = "composite indexes: history by (room, offset), idempotent sends, members, plugins"

INDEXES = [
    # history pages and replay by room in offset order; also makes offsets unique per room
    "CREATE UNIQUE INDEX lydian_message_room_seq ON lydian_message (room, seq)",
    # idempotent sends: one message per (room, author, client id)
    "CREATE UNIQUE INDEX lydian_message_client ON lydian_message (room, author_id, client_id)",
    "CREATE UNIQUE INDEX lydian_member_room_user ON lydian_member (room, user_id)",
    "CREATE INDEX lydian_member_user ON lydian_member (user_id)",
    "CREATE UNIQUE INDEX lydian_room_plugin_room_plugin ON lydian_room_plugin (room, plugin)",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="lydian", description=DESCRIPTION)

    async def create_indexes() -> None:
        engine = engine_finder()
        for ddl in INDEXES:
            await engine.run_ddl(ddl)

    async def drop_indexes() -> None:
        engine = engine_finder()
        for ddl in INDEXES:
            name = ddl.split(" INDEX ", 1)[1].split()[0]
            await engine.run_ddl(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(create_indexes)
    manager.add_raw_backwards(drop_indexes)
    return manager
