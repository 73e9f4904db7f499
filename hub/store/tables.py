"""Piccolo tables. Offsets are ``Message.seq`` (``offset`` is an SQL keyword)."""

from __future__ import annotations

from piccolo.columns import JSON, BigInt, Boolean, Real, Serial, Text, Timestamptz, Varchar
from piccolo.table import Table


class Room(Table, tablename="lydian_room"):
    slug = Varchar(length=100, unique=True)
    name = Varchar(length=200)
    topic = Text(default="")
    kind = Varchar(length=16, default="public")  # public | private | dm
    epoch = Varchar(length=32)
    last_seq = BigInt(default=0)
    created_by = Varchar(length=200)
    created_at = Timestamptz()


class Message(Table, tablename="lydian_message"):
    room = Varchar(length=100)
    seq = BigInt()
    msg_id = Varchar(length=36, unique=True)
    client_id = Varchar(length=100, null=True, default=None)
    author_id = Varchar(length=200)
    author_name = Varchar(length=200)
    kind = Varchar(length=16, default="user")
    text = Text()
    reply_to = Varchar(length=100, null=True, default=None)
    meta = JSON(default="{}")
    created_at = Timestamptz()


class Member(Table, tablename="lydian_member"):
    room = Varchar(length=100)
    user_id = Varchar(length=200)
    user_name = Varchar(length=200)
    role = Varchar(length=16, default="member")
    joined_at = Timestamptz()


class RoomPlugin(Table, tablename="lydian_room_plugin"):
    """Per-room enablement of a plugin or agent."""

    id: Serial  # Piccolo's implicit primary key, declared for type checkers (no new column)
    room = Varchar(length=100)
    plugin = Varchar(length=100)
    enabled = Boolean(default=True)
    updated_by = Varchar(length=200)
    updated_at = Timestamptz()


class User(Table, tablename="lydian_user"):
    """A user the hub has seen (authenticated, not a guest): DMs go only to known users."""

    id: Serial  # Piccolo's implicit primary key, declared for type checkers (no new column)
    user_id = Varchar(length=200, unique=True)
    name = Varchar(length=200)
    kind = Varchar(length=16, default="user")  # user | admin | agent
    first_seen = Timestamptz()
    last_seen = Timestamptz()


class RevokedToken(Table, tablename="lydian_revoked_token"):
    """A withdrawn token id (``jti``); kept until the token would have expired anyway."""

    jti = Varchar(length=64, unique=True)
    user_id = Varchar(length=200, null=True, default=None)
    expires_at = Timestamptz(null=True, default=None)  # None: kept for good (expiry unknown)
    revoked_by = Varchar(length=200)
    revoked_at = Timestamptz()


class AttachmentResult(Table, tablename="lydian_attachment_result"):
    """What one attachment handler made of one file, keyed by content hash + handler name."""

    id: Serial  # Piccolo's implicit primary key, declared for type checkers (no new column)
    sha256 = Varchar(length=64)
    handler = Varchar(length=100)
    plugin = Varchar(length=100)
    status = Varchar(length=16)  # done | failed
    attachment_id = Varchar(length=64)  # the upload it was first made from
    media_type = Varchar(length=200)
    summary = Text(default="")
    markdown = Text(default="")
    data = JSON(default="{}")
    warnings = JSON(default="[]")
    error = Text(default="")
    seconds = Real(default=0.0)
    created_at = Timestamptz()
    files = JSON(default="[]")  # derived files kept as uploads (migration 0007)
    withhold = Text(default="")  # why the original must not be served; "" serves it


TABLES: list[type[Table]] = [
    Room,
    Message,
    Member,
    RoomPlugin,
    User,
    RevokedToken,
    AttachmentResult,
]
