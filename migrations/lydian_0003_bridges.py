"""Bridge tables: rooms ↔ platform channels, platform users, platform message copies.

Generic (platform, channel, room) tables owned by ``adapters/bridge``; the schema is frozen
here as it was when this migration was written, independent of later table classes.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Boolean, Text, Timestamptz, Varchar
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-11-24T15:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "bridge tables: room to platform channel links, platform users, message copies"


class _Link(Table, tablename="lydian_bridge"):
    room = Varchar(length=100)
    platform = Varchar(length=32)
    channel = Varchar(length=200)
    created_by = Varchar(length=200)
    created_at = Timestamptz()


class _User(Table, tablename="lydian_bridge_user"):
    platform = Varchar(length=32)
    platform_user = Varchar(length=200)
    hub_user = Varchar(length=200, null=True, default=None)
    name = Varchar(length=200)
    avatar = Text(null=True, default=None)
    updated_at = Timestamptz()


class _Message(Table, tablename="lydian_bridge_message"):
    platform = Varchar(length=32)
    channel = Varchar(length=200)
    platform_msg = Varchar(length=200)
    hub_msg = Varchar(length=64)
    room = Varchar(length=100)
    origin = Boolean(default=False)
    created_at = Timestamptz()


INDEXES = [
    "CREATE UNIQUE INDEX lydian_bridge_room_channel ON lydian_bridge (room, platform, channel)",
    "CREATE INDEX lydian_bridge_channel ON lydian_bridge (platform, channel)",
    "CREATE UNIQUE INDEX lydian_bridge_user_key ON lydian_bridge_user (platform, platform_user)",
    "CREATE UNIQUE INDEX lydian_bridge_message_key"
    " ON lydian_bridge_message (platform, channel, platform_msg)",
    "CREATE INDEX lydian_bridge_message_hub ON lydian_bridge_message (hub_msg)",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="lydian", description=DESCRIPTION)

    async def create() -> None:
        engine = engine_finder()
        for table in (_Link, _User, _Message):
            table._meta.db = engine
            await table.create_table(if_not_exists=True).run()
        for ddl in INDEXES:
            await engine.run_ddl(ddl)

    async def drop() -> None:
        engine = engine_finder()
        for name in ("lydian_bridge_message", "lydian_bridge_user", "lydian_bridge"):
            await engine.run_ddl(f"DROP TABLE IF EXISTS {name}")

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
