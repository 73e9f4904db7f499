"""Known users (DMs go only to users the hub has seen) and revoked token ids.

``lydian_user`` is filled from then on by authenticated sockets and REST calls; here it is
seeded from the members and message authors already stored (guests, agents and bridged
platform users excluded), so DMs between existing users keep working after the upgrade.
The schema is frozen here as it was when this migration was written.
"""

from datetime import UTC, datetime

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Timestamptz, Varchar
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-12-01T12:40:05:130005"
VERSION = "1.38.0"
DESCRIPTION = "known users (seeded from members and authors) and revoked token ids"


class _User(Table, tablename="lydian_user"):
    user_id = Varchar(length=200, unique=True)
    name = Varchar(length=200)
    kind = Varchar(length=16, default="user")
    first_seen = Timestamptz()
    last_seen = Timestamptz()


class _RevokedToken(Table, tablename="lydian_revoked_token"):
    jti = Varchar(length=64, unique=True)
    user_id = Varchar(length=200, null=True, default=None)
    expires_at = Timestamptz(null=True, default=None)
    revoked_by = Varchar(length=200)
    revoked_at = Timestamptz()


class _Member(Table, tablename="lydian_member"):
    user_id = Varchar(length=200)
    user_name = Varchar(length=200)


class _Message(Table, tablename="lydian_message"):
    author_id = Varchar(length=200)
    author_name = Varchar(length=200)
    kind = Varchar(length=16)


def _seedable(user_id: str) -> bool:
    """Not a guest, an agent or a bridged platform user (``slack:U1``): ids with ``:``."""
    return bool(user_id) and not user_id.startswith("guest-") and ":" not in user_id


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="lydian", description=DESCRIPTION)

    async def create() -> None:
        engine = engine_finder()
        for table in (_User, _RevokedToken, _Member, _Message):
            table._meta.db = engine
        await _User.create_table(if_not_exists=True).run()
        await _RevokedToken.create_table(if_not_exists=True).run()
        names: dict[str, str] = {}
        for row in await _Member.select(_Member.user_id, _Member.user_name).distinct():
            names.setdefault(row["user_id"], row["user_name"])
        authors = _Message.select(_Message.author_id, _Message.author_name).where(
            _Message.kind == "user"
        )
        for row in await authors.distinct():
            names.setdefault(row["author_id"], row["author_name"])
        known = {r["user_id"] for r in await _User.select(_User.user_id)}
        now = datetime.now(UTC)
        rows = [
            _User(user_id=uid, name=name, kind="user", first_seen=now, last_seen=now)
            for uid, name in sorted(names.items())
            if _seedable(uid) and uid not in known
        ]
        if rows:
            await _User.insert(*rows)
        # guests may not take a known user's name: looked up case-insensitively
        await engine.run_ddl("CREATE INDEX lydian_user_name ON lydian_user (lower(name))")

    async def drop() -> None:
        engine = engine_finder()
        for name in ("lydian_revoked_token", "lydian_user"):
            await engine.run_ddl(f"DROP TABLE IF EXISTS {name}")

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
