"""The store: rooms, members, messages with gap-free per-room offsets, plugin enablement.

The database assigns offsets: appending a message increments ``Room.last_seq`` and inserts
the message in one transaction, so the room row's lock orders concurrent writers, also
across replicas sharing PostgreSQL. Nothing is broadcast before it is committed here.
Appending is the hot write, so it is one statement on PostgreSQL and one trip to the
writer thread on SQLite (``bench/store_bench.py``); everything else goes through piccolo.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import msgspec
from piccolo.apps.migrations.commands.forwards import ForwardsMigrationManager
from piccolo.apps.migrations.tables import Migration
from piccolo.columns import Column
from piccolo.custom_types import Combinable
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType
from piccolo.table import Table

from hub.base.protocol import Attachment, ChatMessage, UserRef
from hub.store.engines import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    EmbeddedSQLiteEngine,
    engine_for_url,
)
from hub.store.errors import StoreUnavailable, unavailable_as_store_error
from hub.store.tables import (
    TABLES,
    Member,
    Message,
    RevokedToken,
    Room,
    RoomPlugin,
    User,
)
from hub.store.tables import AttachmentResult as ResultRow

log = logging.getLogger(__name__)


_CLOSE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, StoreUnavailable)
_MIGRATION_ID = re.compile(r'^ID = "([^"]+)"', re.MULTILINE)
MIGRATION_LOCK_KEY = 0x4C5944494E  # "LYDIN": the advisory lock migrations hold on PostgreSQL


class RoomInfo(msgspec.Struct, omit_defaults=True):
    """A room as the API shows it."""

    id: str
    name: str
    topic: str
    kind: str
    epoch: str
    last_offset: int
    created_by: str
    created_at: datetime


class MemberInfo(msgspec.Struct):
    user_id: str
    user_name: str
    role: str


class DerivedAttachment(msgspec.Struct, omit_defaults=True):
    """A file a handler derived from the one it read, kept by the hub as an upload.

    ``role``: ``embedded`` (found inside it, e.g. an image of a PDF: the room's image
    handlers run on it) or ``replacement`` (a copy shown instead of the original, e.g. with
    faces blurred). ``url`` serves its bytes; ``sha256`` finds its own results."""

    id: str
    name: str
    media_type: str
    size: int
    sha256: str
    role: str
    url: str = ""
    priority: int = 0  # among replacements of several handlers, the highest is served
    meta: dict[str, Any] = {}  # what the handler said about it (e.g. ``page``)


class AttachmentResult(msgspec.Struct, omit_defaults=True):
    """What one attachment handler made of one file (the same bytes share one result).

    ``files``: what it derived (:class:`DerivedAttachment`); ``withhold``: why the original
    must not be served ("" when it may be)."""

    handler: str
    status: str  # done | failed
    sha256: str
    plugin: str = ""
    media_type: str = ""
    attachment_id: str = ""  # the upload it was first made from
    summary: str = ""
    markdown: str = ""
    data: dict[str, Any] = {}
    warnings: list[str] = []
    error: str = ""
    seconds: float = 0.0
    created_at: float = 0.0
    files: list[DerivedAttachment] = []
    withhold: str = ""


class RoomExists(Exception):
    """A room with that id exists already."""


class UnknownRoom(LookupError):
    """No room with that id."""


class ReservedRoomId(ValueError):
    """The id is in a reserved space (``dm:``): only the DM path creates such rooms."""


class DmRoomUnavailable(Exception):
    """The room at a pair's DM id is not a genuine DM room of exactly those two users
    (a squatted room from before the ``dm:`` reservation; ``lydian migrate`` repairs it)."""


DM_PREFIX = "dm:"
RESERVED_ROOM_PREFIXES = (DM_PREFIX,)
"""Room ids no user can create: ``dm:<a>:<b>`` belongs to the DM path only."""

_DM_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,48}$")  # protocol.UserId


def bind(engine: Engine) -> None:
    """Point every hub table, Piccolo's migration table and ``PICCOLO_CONF`` at ``engine``."""
    import hub.store.piccolo_conf as conf  # on demand: it reads the settings when imported

    conf.DB = engine
    tables: list[type[Table]] = [*TABLES, Migration]
    for table in tables:
        table._meta.db = engine


def dm_room_id(a: str, b: str) -> str:
    """The id of the direct-message room between two users (order-independent)."""
    first, second = sorted((a, b))
    return f"{DM_PREFIX}{first}:{second}"


def is_reserved_room_id(room_id: str) -> bool:
    return room_id.startswith(RESERVED_ROOM_PREFIXES)


def dm_pair(room_id: str) -> tuple[str, str] | None:
    """The two users of a DM room id as :func:`dm_room_id` makes it, or None if it is not one."""
    if not room_id.startswith(DM_PREFIX):
        return None
    parts = room_id[len(DM_PREFIX) :].split(":")
    if len(parts) != 2 or not all(_DM_USER.match(p) for p in parts):
        return None
    first, second = parts
    return (first, second) if first < second else None


class Store:
    """Async access to the hub's tables on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_lock = asyncio.Lock()  # SQLite has one writer; queue in-process, not on locks
        self._change_listeners: list[Callable[[str, str], Awaitable[None]]] = []
        self._genuine_dm: set[str] = set()  # DM rooms checked to be the pair's own

    def on_change(self, listener: Callable[[str, str], Awaitable[None]]) -> None:
        """Call ``listener(kind, room_id)`` after each committed write, before the writer
        returns; ``kind`` is ``room``, ``member`` or ``message`` (used by the query cache)."""
        self._change_listeners.append(listener)

    async def _changed(self, kind: str, room_id: str) -> None:
        for listener in self._change_listeners:
            try:
                await listener(kind, room_id)
            except Exception:
                log.exception("store change listener failed for %s %s", kind, room_id)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        server_settings: dict[str, str] | None = None,
        migrate: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> Store:
        """Connect to ``url`` (``sqlite:///…`` or ``postgresql://…``) and run pending migrations.

        A database that does not answer within the timeouts raises
        :class:`~hub.store.errors.StoreUnavailable` from any store call."""
        engine = engine_for_url(
            url,
            server_settings=server_settings,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            acquire_timeout=acquire_timeout,
        )
        bind(engine)
        if isinstance(engine, EmbeddedSQLiteEngine):
            engine.hold_open()  # also creates the file in WAL mode
        store = cls(engine)
        if migrate:
            await store.migrate()
        if isinstance(engine, PostgresEngine):
            await engine.start_connection_pool(min_size=pool_min, max_size=pool_max)
        return store

    async def migrate(self) -> None:
        """Apply every migration in ``migrations/`` not yet applied (idempotent).

        Replicas starting together take turns: a PostgreSQL advisory lock (a file lock for
        SQLite) lets one process migrate while the others wait and then find nothing to do.
        """
        async with self._migration_lock():
            await self._migrate()

    @contextlib.asynccontextmanager
    async def _migration_lock(self) -> AsyncIterator[None]:
        if isinstance(self.engine, PostgresEngine):
            # no statement timeout here: another replica may take a while to migrate
            config = {k: v for k, v in self.engine.config.items() if k != "command_timeout"}
            conn = await asyncpg.connect(**config)
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
                yield
            finally:
                await conn.close()  # closing the session releases the lock
            return
        if not isinstance(self.engine, SQLiteEngine):
            raise TypeError(f"unsupported engine {type(self.engine).__name__}")
        fd = await asyncio.to_thread(_lock_file, f"{self.engine.path}.migrate.lock")
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    async def _migrate(self) -> None:
        bind(self.engine)
        # Piccolo's own existence check sees a ``migration`` table in *any* schema; create ours
        # in the connection's schema first so non-default schemas migrate correctly.
        await Migration.create_table(if_not_exists=True)
        with contextlib.redirect_stdout(None):
            result = await ForwardsMigrationManager(app_name="lydian").run()
        if not result.success:
            raise RuntimeError(f"migrations failed: {result.message}")

    async def ping(self) -> None:
        """One trivial statement: raises :class:`StoreUnavailable` if the database does not
        answer (within the store's timeouts; callers may wait less)."""
        await Room.raw("SELECT 1")

    async def pending_migrations(self) -> list[str]:
        """Ids of the migrations in ``migrations/`` not yet applied to this database."""
        from hub.store.piccolo_app import migrations_folder

        known = set()
        for path in migrations_folder().glob("*.py"):
            found = _MIGRATION_ID.search(path.read_text())
            if found:
                known.add(found[1])
        ran = set(await Migration.get_migrations_which_ran(app_name="lydian"))
        return sorted(known - ran)

    async def close(self) -> None:
        if isinstance(self.engine, PostgresEngine):
            pool = self.engine.pool
            timeout = getattr(self.engine, "acquire_timeout", DEFAULT_ACQUIRE_TIMEOUT)
            try:  # a graceful close waits on every connection: not forever on a dead network
                await asyncio.wait_for(self.engine.close_connection_pool(), timeout)
            except (TimeoutError, *_CLOSE_ERRORS) as exc:
                log.warning("closing the database pool: %r; terminating its connections", exc)
                if pool is not None:
                    pool.terminate()
                self.engine.pool = None
        elif isinstance(self.engine, EmbeddedSQLiteEngine):
            await self.engine.aclose()

    @property
    def kind(self) -> str:
        return self.engine.engine_type

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """A write transaction: immediate and serialized on SQLite, plain on PostgreSQL."""
        with unavailable_as_store_error():
            if isinstance(self.engine, SQLiteEngine):
                async with self._write_lock:
                    async with self.engine.transaction(transaction_type=TransactionType.immediate):
                        yield
            else:
                async with self.engine.transaction():
                    yield

    # ------------------------------------------------------------------ rooms

    async def create_room(
        self,
        room_id: str,
        *,
        name: str | None = None,
        topic: str = "",
        kind: str = "public",
        created_by: str,
    ) -> RoomInfo:
        """Create a room; raise :class:`RoomExists` if the id is taken.

        Ids in the reserved ``dm:`` space are refused (:class:`ReservedRoomId`) except for
        the DM path's own rooms (kind ``dm`` at the id of a valid pair)."""
        if is_reserved_room_id(room_id) or kind == "dm":
            pair = dm_pair(room_id)
            if kind != "dm" or pair is None or created_by not in pair:
                raise ReservedRoomId(room_id)
        row = Room(
            slug=room_id,
            name=name or room_id,
            topic=topic,
            kind=kind,
            epoch=secrets.token_hex(8),
            last_seq=0,
            created_by=created_by,
            created_at=datetime.now(UTC),
        )
        try:
            async with self._write():
                if await Room.exists().where(Room.slug == room_id):
                    raise RoomExists(room_id)
                await Room.insert(row)
        except RoomExists:
            raise
        except Exception as exc:  # a concurrent create won the unique index
            if await self.get_room(room_id) is not None:
                raise RoomExists(room_id) from exc
            raise
        await self._changed("room", room_id)
        return _room_info(row.to_dict())

    async def get_room(self, room_id: str) -> RoomInfo | None:
        row = await Room.select().where(Room.slug == room_id).first()
        return _room_info(row) if row else None

    async def list_rooms(self, user_id: str | None = None, limit: int = 200) -> list[RoomInfo]:
        """Public rooms, plus private and DM rooms the user is a member of."""
        visible: Combinable = Room.kind == "public"
        if user_id is not None:
            mine = [
                r["room"] for r in await Member.select(Member.room).where(Member.user_id == user_id)
            ]
            if mine:
                visible = visible | Room.slug.is_in(mine)
        rows = await Room.select().where(visible).order_by(Room.slug).limit(limit)
        return [_room_info(r) for r in rows]

    async def ensure_dm_room(self, a: UserRef, b: UserRef) -> RoomInfo:
        """The DM room of two users, created with both as its owners on first use.

        A room already at that id is used only if it is a genuine DM room of exactly these
        two users (kind ``dm``, created by one of them, no other member); otherwise
        :class:`DmRoomUnavailable` is raised and nothing is posted into it.
        """
        room_id = dm_room_id(a.id, b.id)
        room = await self.get_room(room_id)
        if room is None:
            with contextlib.suppress(RoomExists):
                await self.create_room(
                    room_id, name=f"{a.name} & {b.name}", kind="dm", created_by=a.id
                )
            room = await self.get_room(room_id)
        assert room is not None
        if room_id in self._genuine_dm:
            return room
        pair = {a.id, b.id}
        if room.kind != "dm" or room.created_by not in pair:
            raise DmRoomUnavailable(room_id)
        members = {m.user_id for m in await self.members(room_id)}
        if members - pair:
            raise DmRoomUnavailable(room_id)
        for user in (a, b):
            if user.id not in members:
                await self.add_member(room_id, user.id, user.name, role="owner")
        self._genuine_dm.add(room_id)
        return room

    # ------------------------------------------------------------------ members

    async def add_member(
        self, room_id: str, user_id: str, user_name: str, role: str = "member"
    ) -> bool:
        """Add a member; return False if already one. A DM room takes only its pair
        (:class:`ReservedRoomId` for anyone else)."""
        if is_reserved_room_id(room_id) and user_id not in (dm_pair(room_id) or ()):
            raise ReservedRoomId(room_id)
        if await self.is_member(room_id, user_id):
            return False
        try:
            async with self._write():
                await Member.insert(
                    Member(
                        room=room_id,
                        user_id=user_id,
                        user_name=user_name,
                        role=role,
                        joined_at=datetime.now(UTC),
                    )
                )
        except Exception:
            if await self.is_member(room_id, user_id):
                return False
            raise
        await self._changed("member", room_id)
        return True

    async def remove_member(self, room_id: str, user_id: str) -> None:
        async with self._write():
            await Member.delete().where((Member.room == room_id) & (Member.user_id == user_id))
        await self._changed("member", room_id)

    async def is_member(self, room_id: str, user_id: str) -> bool:
        return await Member.exists().where((Member.room == room_id) & (Member.user_id == user_id))

    async def members(self, room_id: str) -> list[MemberInfo]:
        rows = (
            await Member.select(Member.user_id, Member.user_name, Member.role)
            .where(Member.room == room_id)
            .order_by(Member.user_id)
        )
        return [MemberInfo(**r) for r in rows]

    # ------------------------------------------------------------------ messages

    async def append_message(
        self,
        room_id: str,
        author: UserRef,
        text: str,
        *,
        kind: str = "user",
        client_id: str | None = None,
        reply_to: str | None = None,
        attachments: list[Attachment] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> tuple[ChatMessage, bool]:
        """Persist a message with the room's next offset.

        Returns ``(message, duplicate)``: a resend with the same ``client_id`` by the same
        author returns the stored message and ``True`` instead of storing it twice.
        """
        meta_out = dict(meta or {})
        if attachments:
            meta_out["attachments"] = msgspec.to_builtins(attachments)
        if author.avatar:
            meta_out["avatar"] = author.avatar
        if author.guest:
            meta_out["guest"] = True
        now = datetime.now(UTC)
        msg_id = str(uuid.uuid4())
        row = {
            "room": room_id,
            "msg_id": msg_id,
            "client_id": client_id,
            "author_id": author.id,
            "author_name": author.name,
            "kind": kind,
            "text": text,
            "reply_to": reply_to,
            "meta": msgspec.json.encode(meta_out).decode(),
            "created_at": now,
        }
        try:
            if isinstance(self.engine, EmbeddedSQLiteEngine):
                async with self._write_lock:
                    seq = await self.engine.run_on_writer(partial(_append_sqlite, row))
            else:
                seq = await _append_postgres(row)
        except (UnknownRoom, StoreUnavailable):
            raise  # unavailable: maybe stored after all; the client's resend will tell
        except Exception:
            # A resend: the unique index on (room, author, client id) refused the row and the
            # transaction rolled back, offset included. Return the stored message. (No lookup
            # before the write: resends are rare, and every message would pay for it.)
            if client_id is not None:
                existing = await self._by_client_id(room_id, author.id, client_id)
                if existing is not None:
                    return existing, True
            raise
        await self._changed("message", room_id)
        message = ChatMessage(
            room=room_id,
            offset=seq,
            id=msg_id,
            user=author,
            text=text,
            ts=now.timestamp(),
            kind=kind,
            client_id=client_id,
            reply_to=reply_to,
            attachments=list(attachments or []),
            meta=_public_meta(meta_out),
        )
        return message, False

    async def _by_client_id(
        self, room_id: str, author_id: str, client_id: str
    ) -> ChatMessage | None:
        row = (
            await Message.select()
            .where(
                (Message.room == room_id)
                & (Message.author_id == author_id)
                & (Message.client_id == client_id)
            )
            .first()
        )
        return _message(row) if row else None

    async def messages_after(self, room_id: str, after: int, limit: int) -> list[ChatMessage]:
        """Messages with offset > ``after``, oldest first."""
        rows = (
            await Message.select()
            .where((Message.room == room_id) & (Message.seq > after))
            .order_by(Message.seq)
            .limit(limit)
        )
        return [_message(r) for r in rows]

    async def messages_before(
        self, room_id: str, before: int | None, limit: int
    ) -> list[ChatMessage]:
        """Up to ``limit`` messages with offset < ``before`` (the newest if None), oldest first."""
        where: Combinable = Message.room == room_id
        if before is not None:
            where = where & (Message.seq < before)
        rows = (
            await Message.select().where(where).order_by(Message.seq, ascending=False).limit(limit)
        )
        return [_message(r) for r in reversed(rows)]

    async def latest_offset(self, room_id: str) -> int:
        row = await Room.select(Room.last_seq).where(Room.slug == room_id).first()
        if row is None:
            raise UnknownRoom(room_id)
        return row["last_seq"]

    # ------------------------------------------------------------------ per-room plugins

    async def set_room_plugin(self, room_id: str, plugin: str, enabled: bool, by: str) -> None:
        now = datetime.now(UTC)
        async with self._write():
            updated = (
                await RoomPlugin.update(
                    {
                        RoomPlugin.enabled: enabled,
                        RoomPlugin.updated_by: by,
                        RoomPlugin.updated_at: now,
                    }
                )
                .where((RoomPlugin.room == room_id) & (RoomPlugin.plugin == plugin))
                .returning(RoomPlugin.id)
            )
            if not updated:
                await RoomPlugin.insert(
                    RoomPlugin(
                        room=room_id, plugin=plugin, enabled=enabled, updated_by=by, updated_at=now
                    )
                )

    async def room_plugins(self, room_id: str | None = None) -> dict[str, dict[str, bool]]:
        """``{room: {plugin: enabled}}`` for one room or all."""
        query = RoomPlugin.select(RoomPlugin.room, RoomPlugin.plugin, RoomPlugin.enabled)
        if room_id is not None:
            query = query.where(RoomPlugin.room == room_id)
        out: dict[str, dict[str, bool]] = {}
        for row in await query:
            out.setdefault(row["room"], {})[row["plugin"]] = bool(row["enabled"])
        return out

    # ------------------------------------------------------------------ users

    async def touch_user(self, user_id: str, name: str, kind: str = "user") -> None:
        """Record that an authenticated (non-guest) user was seen: insert or refresh."""
        now = datetime.now(UTC)
        values: dict[Column | str, Any] = {User.name: name, User.kind: kind, User.last_seen: now}
        try:
            async with self._write():
                updated = (
                    await User.update(values).where(User.user_id == user_id).returning(User.id)
                )
                if not updated:
                    await User.insert(
                        User(user_id=user_id, name=name, kind=kind, first_seen=now, last_seen=now)
                    )
        except Exception:  # a concurrent insert (another replica) won the unique index
            if not await User.exists().where(User.user_id == user_id):
                raise

    async def user_kind(self, user_id: str) -> str | None:
        """``user``/``admin``/``agent`` for a known user; ``member`` for one only known as a
        room member (added by an owner before ever connecting); None if never seen."""
        row = await User.select(User.kind).where(User.user_id == user_id).first()
        if row is not None:
            return row["kind"]
        if await Member.exists().where(Member.user_id == user_id):
            return "member"
        return None

    async def user_name_taken(self, name: str) -> bool:
        """Whether a known user has this display name (ignoring ASCII case)."""
        rows = await User.raw(_USER_NAME_SQL, name)
        return bool(rows)

    # ------------------------------------------------------------------ revoked tokens

    async def revoke_token(
        self, jti: str, *, user_id: str | None, expires_at: datetime | None, by: str
    ) -> bool:
        """Record a revoked token id; False if it was revoked already."""
        if await RevokedToken.exists().where(RevokedToken.jti == jti):
            return False
        row = RevokedToken(
            jti=jti,
            user_id=user_id,
            expires_at=expires_at,
            revoked_by=by,
            revoked_at=datetime.now(UTC),
        )
        try:
            async with self._write():
                await RevokedToken.insert(row)
        except Exception:
            if await RevokedToken.exists().where(RevokedToken.jti == jti):
                return False
            raise
        return True

    async def revoked_tokens(self) -> set[str]:
        """Ids of revoked tokens not yet expired (expired rows are deleted on the way)."""
        now = datetime.now(UTC)
        async with self._write():
            await RevokedToken.delete().where(RevokedToken.expires_at < now)
        return {r["jti"] for r in await RevokedToken.select(RevokedToken.jti)}

    # ------------------------------------------------------------------ attachment results

    async def save_attachment_result(self, result: AttachmentResult) -> None:
        """Keep (or replace) the result of ``result.handler`` on the bytes ``result.sha256``."""
        row = ResultRow(
            sha256=result.sha256,
            handler=result.handler,
            plugin=result.plugin,
            status=result.status,
            attachment_id=result.attachment_id,
            media_type=result.media_type,
            summary=result.summary,
            markdown=result.markdown,
            data=msgspec.json.encode(result.data).decode(),
            warnings=msgspec.json.encode(result.warnings).decode(),
            error=result.error,
            seconds=result.seconds,
            created_at=datetime.now(UTC),
            files=msgspec.json.encode(result.files).decode(),
            withhold=result.withhold,
        )
        async with self._write():
            await ResultRow.delete().where(
                (ResultRow.sha256 == result.sha256) & (ResultRow.handler == result.handler)
            )
            await ResultRow.insert(row)

    async def attachment_results(
        self, sha256: str, handler: str | None = None
    ) -> list[AttachmentResult]:
        """Stored results for the bytes ``sha256`` (of one handler, or all), by handler."""
        query = ResultRow.select().where(ResultRow.sha256 == sha256)
        if handler is not None:
            query = query.where(ResultRow.handler == handler)
        out = []
        for row in await query.order_by(ResultRow.handler):
            data, warnings, files = row["data"], row["warnings"], row["files"]
            out.append(
                AttachmentResult(
                    handler=row["handler"],
                    status=row["status"],
                    sha256=row["sha256"],
                    plugin=row["plugin"],
                    media_type=row["media_type"],
                    attachment_id=row["attachment_id"],
                    summary=row["summary"],
                    markdown=row["markdown"],
                    data=msgspec.json.decode(data) if isinstance(data, str | bytes) else data,
                    warnings=(
                        msgspec.json.decode(warnings)
                        if isinstance(warnings, str | bytes)
                        else warnings
                    ),
                    error=row["error"],
                    seconds=row["seconds"],
                    created_at=row["created_at"].timestamp() if row["created_at"] else 0.0,
                    files=msgspec.convert(
                        msgspec.json.decode(files) if isinstance(files, str | bytes) else files,
                        list[DerivedAttachment],
                    ),
                    withhold=row["withhold"] or "",
                )
            )
        return out


_USER_NAME_SQL = f"SELECT 1 FROM {User._meta.tablename} WHERE lower(name) = lower({{}}) LIMIT 1"

_MESSAGE_COLUMNS = (  # the order of ``_APPEND_SQL``'s and ``_APPEND_POSTGRES_SQL``'s values
    "room, seq, msg_id, client_id, author_id, author_name, kind, text, reply_to, meta, created_at"
)
_APPEND_SQL = (
    f"INSERT INTO {Message._meta.tablename} ({_MESSAGE_COLUMNS}) VALUES (:room, :seq, :msg_id, "
    ":client_id, :author_id, :author_name, :kind, :text, :reply_to, :meta, :created_at)"
)
_NEXT_SEQ_SQL = f"UPDATE {Room._meta.tablename} SET last_seq = last_seq + 1 WHERE slug = ?"
_LAST_SEQ_SQL = f"SELECT last_seq FROM {Room._meta.tablename} WHERE slug = ?"


def _append_sqlite(row: dict[str, Any], connection: sqlite3.Connection) -> int:
    """The room's next offset and the message row, one transaction on the writer thread."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if connection.execute(_NEXT_SEQ_SQL, (row["room"],)).rowcount == 0:
            raise UnknownRoom(row["room"])
        (seq,) = connection.execute(_LAST_SEQ_SQL, (row["room"],)).fetchone()
        connection.execute(_APPEND_SQL, {**row, "seq": seq})
    except BaseException:
        if connection.in_transaction:  # some errors end the transaction themselves
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return seq


_APPEND_POSTGRES_SQL = (
    f"WITH next AS (UPDATE {Room._meta.tablename} SET last_seq = last_seq + 1 WHERE slug = {{}} "
    f"RETURNING last_seq) INSERT INTO {Message._meta.tablename} ({_MESSAGE_COLUMNS}) "
    "SELECT {}, last_seq, {}, {}, {}, {}, {}, {}, {}, {}::json, {}::timestamptz FROM next "
    "RETURNING seq"
)
_POSTGRES_VALUES = [c for c in _MESSAGE_COLUMNS.split(", ") if c != "seq"]


async def _append_postgres(row: dict[str, Any]) -> int:
    """The room's next offset and the message row in one statement: one round trip, and the
    room row stays locked for that statement only (not across a transaction's four)."""
    room = row["room"]
    rows = await Message.raw(_APPEND_POSTGRES_SQL, room, *(row[c] for c in _POSTGRES_VALUES))
    if not rows:
        raise UnknownRoom(room)
    return rows[0]["seq"]


def _lock_file(path: str) -> int:
    """Open ``path`` and wait for an exclusive lock on it; return the descriptor."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


# ---------------------------------------------------------------------- row conversion

_HIDDEN_META = ("attachments", "avatar", "guest")


def _public_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in _HIDDEN_META}


def _room_info(row: dict[str, Any]) -> RoomInfo:
    return RoomInfo(
        id=row["slug"],
        name=row["name"],
        topic=row["topic"],
        kind=row["kind"],
        epoch=row["epoch"],
        last_offset=row["last_seq"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def _message(row: dict[str, Any]) -> ChatMessage:
    raw = row["meta"]
    meta = msgspec.json.decode(raw) if isinstance(raw, (str, bytes)) else dict(raw or {})
    attachments = msgspec.convert(meta.get("attachments", []), list[Attachment])
    return ChatMessage(
        room=row["room"],
        offset=row["seq"],
        id=row["msg_id"],
        user=UserRef(
            id=row["author_id"],
            name=row["author_name"],
            avatar=meta.get("avatar"),
            guest=bool(meta.get("guest", False)),
        ),
        text=row["text"],
        ts=row["created_at"].timestamp(),
        kind=row["kind"],
        client_id=row["client_id"],
        reply_to=row["reply_to"],
        attachments=attachments,
        meta=_public_meta(meta),
    )
