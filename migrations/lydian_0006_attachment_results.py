"""What attachment handlers made of uploaded files (issue 15, the attachment pipeline).

One row per (content hash, handler): the same bytes uploaded again, in any room, are not
processed again. ``status`` is ``done`` (summary, markdown, data, warnings) or ``failed``
(error). The schema is frozen here as it was when this migration was written.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import JSON, Real, Text, Timestamptz, Varchar
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-12-01T16:20:06:130006"
VERSION = "1.38.0"
DESCRIPTION = "attachment handler results, keyed by content hash and handler"


class _AttachmentResult(Table, tablename="lydian_attachment_result"):
    sha256 = Varchar(length=64)
    handler = Varchar(length=100)
    plugin = Varchar(length=100)
    status = Varchar(length=16)
    attachment_id = Varchar(length=64)
    media_type = Varchar(length=200)
    summary = Text(default="")
    markdown = Text(default="")
    data = JSON(default="{}")
    warnings = JSON(default="[]")
    error = Text(default="")
    seconds = Real(default=0.0)
    created_at = Timestamptz()


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="lydian", description=DESCRIPTION)

    async def create() -> None:
        engine = engine_finder()
        _AttachmentResult._meta.db = engine
        await _AttachmentResult.create_table(if_not_exists=True).run()
        await engine.run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS lydian_attachment_result_key "
            "ON lydian_attachment_result (sha256, handler)"
        )

    async def drop() -> None:
        engine = engine_finder()
        await engine.run_ddl("DROP TABLE IF EXISTS lydian_attachment_result")

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
