"""Tables of the bridge: room ↔ platform channel, platform user ↔ hub identity, and
platform message ↔ hub message (for edits, deletions and echo suppression).

They live in the hub's database (created by ``migrations/lydian_0003_bridges.py``) and are
generic: nothing here is specific to one platform.
"""

from __future__ import annotations

from piccolo.columns import Boolean, Text, Timestamptz, Varchar
from piccolo.engine.base import Engine
from piccolo.table import Table


class BridgeLink(Table, tablename="lydian_bridge"):
    """A room bridged to one channel of one platform (``slack``/``discord``)."""

    room = Varchar(length=100)
    platform = Varchar(length=32)
    channel = Varchar(length=200)
    created_by = Varchar(length=200)
    created_at = Timestamptz()


class BridgeUser(Table, tablename="lydian_bridge_user"):
    """A platform user as last seen, optionally linked to a hub identity."""

    platform = Varchar(length=32)
    platform_user = Varchar(length=200)
    hub_user = Varchar(length=200, null=True, default=None)
    name = Varchar(length=200)
    avatar = Text(null=True, default=None)
    updated_at = Timestamptz()


class BridgeMessage(Table, tablename="lydian_bridge_message"):
    """One copy of a hub message on a platform; ``origin`` marks where it was written."""

    platform = Varchar(length=32)
    channel = Varchar(length=200)
    platform_msg = Varchar(length=200)
    hub_msg = Varchar(length=64)
    room = Varchar(length=100)
    origin = Boolean(default=False)
    created_at = Timestamptz()


TABLES: list[type[Table]] = [BridgeLink, BridgeUser, BridgeMessage]


def bind(engine: Engine) -> None:
    """Use the hub's engine for the bridge tables."""
    for table in TABLES:
        table._meta.db = engine
