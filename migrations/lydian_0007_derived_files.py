"""Derived files and withheld originals on attachment results (issue 15, derived files).

A handler may return files it derived from the one it read (an image embedded in a
document, a copy to show instead of the original) and may ask for the original to be
withheld. The hub keeps the files as uploads of the room; the result refers to them in
``files`` (JSON list) and keeps the reason to withhold in ``withhold`` (empty: served).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Varchar
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-12-02T10:00:07:130007"
VERSION = "1.38.0"
DESCRIPTION = "derived files and withheld originals on attachment results"
TABLE = "lydian_attachment_result"
COLUMNS = {"files": "JSON NOT NULL DEFAULT '[]'", "withhold": "TEXT NOT NULL DEFAULT ''"}


class _AttachmentResult(Table, tablename=TABLE):
    sha256 = Varchar(length=64)


async def _existing(engine) -> set[str]:  # type: ignore[no-untyped-def]
    _AttachmentResult._meta.db = engine
    if engine.engine_type == "sqlite":
        rows = await _AttachmentResult.raw(f"PRAGMA table_info({TABLE})")
        return {row["name"] for row in rows}
    rows = await _AttachmentResult.raw(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = {}",
        TABLE,
    )
    return {row["column_name"] for row in rows}


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="lydian", description=DESCRIPTION)

    async def add() -> None:
        engine = engine_finder()
        have = await _existing(engine)
        for name, ddl in COLUMNS.items():
            if name not in have:
                await engine.run_ddl(f"ALTER TABLE {TABLE} ADD COLUMN {name} {ddl}")

    async def drop() -> None:
        engine = engine_finder()
        have = await _existing(engine)
        for name in COLUMNS:
            if name in have:
                await engine.run_ddl(f"ALTER TABLE {TABLE} DROP COLUMN {name}")

    manager.add_raw(add)
    manager.add_raw_backwards(drop)
    return manager
