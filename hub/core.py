"""The :class:`Hub`: one object per process that wires the services together.

It builds each service with the collaborators it needs (no service holds the hub) and
implements what the doors and plugins call (``HubAPI``): above all :meth:`Hub.post_message`,
the one way in for every message, so every door follows the same path: validate, persist,
publish, then the plugins' observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec
from litestar.exceptions import NotAuthorizedException
from piccolo.table import Table

from hub.access.identity import KnownUsers, Revocations
from hub.access.limits import Limits
from hub.ai.agents import Agent, Agents
from hub.ai.llm import ChatTurn
from hub.ai.streams import StreamMetrics, StreamRegistry
from hub.base.auth import Identity, issue_token, verify_token
from hub.base.config import Settings
from hub.base.errors import MessageRefused, Refusal, RoomNotVisible
from hub.base.protocol import (
    Attachment,
    AttachmentEvent,
    ChatMessage,
    CommandResult,
    Error,
    ErrorCode,
    MessageFrame,
    RoomEvent,
    ServerFrame,
    UserRef,
    decode_server,
    encode,
)
from hub.cache.http import HttpCache
from hub.cache.queries import QueryCache
from hub.cache.setup import build_cache, start_cache
from hub.media.attachments import (
    AttachmentStore,
    UnknownAttachment,
    UploadRejected,
    sweep_orphans_forever,
)
from hub.media.pipeline import AttachmentHandler, AttachmentPipeline
from hub.plugin_host.api import RoomCommand
from hub.plugin_host.commands import CORE
from hub.plugin_host.host import PluginHost
from hub.realtime.broker import Broker
from hub.realtime.connection import Connection
from hub.realtime.presence import MemoryPresence, Presence
from hub.realtime.presence_redis import RedisPresence
from hub.realtime.rooms import MISSED, RoomRegistry
from hub.realtime.shared import MemorySharedState, RedisSharedState, SharedState
from hub.realtime.sockets import Sockets
from hub.store.store import AttachmentResult, RoomInfo, Store

log = logging.getLogger(__name__)


FrameConsumer = Callable[[int, ServerFrame], Awaitable[None]]
"""An in-process follower of a room (:meth:`Hub.subscribe`): ``(offset, frame)``."""

MACHINE_KINDS = frozenset({"agent", "system"})
"""Message kinds the hub's own code writes (answers, notices): not held to the blank and
``max_text_chars`` rules, so an answer longer than a person may type is never lost. Every
other kind (``user``, and any kind a plugin invents) is user-authored."""


class Hub:
    """Services of one hub process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        broker: Broker,
        presence: Presence | None = None,
        plugins: PluginHost | None = None,
    ) -> None:
        self.settings = settings
        self.plugins = plugins or PluginHost(settings)
        self.store = store
        self.broker = broker
        self.presence = presence or MemoryPresence()
        self.secret = settings.resolved_secret()
        self.limits = Limits(settings, redis=broker.redis)  # abuse limits, shared via Redis
        self.cache = build_cache(settings)  # L1, plus Redis L2 when REDIS_URL is set
        self.queries = QueryCache(store, self.cache)  # cached hot reads, dropped on writes
        self.http_cache = HttpCache(self.cache)  # rules of the HTTP response cache
        self.rooms = RoomRegistry(
            store,
            broker,
            self.presence,
            max_replay=settings.max_replay,
            typing_ttl=settings.typing_ttl,
        )
        self.shared: SharedState = (  # keys, leases and channels for plugins
            RedisSharedState(broker.redis, settings.redis_prefix, broker)
            if broker.redis is not None
            else MemorySharedState(broker)
        )
        self.sockets = Sockets(  # this process's sockets: DMs on user channels, heartbeats
            broker,
            self.rooms,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            retry_after=settings.shutdown_retry_after,
        )
        self.connections: dict[str, Connection] = self.sockets.connections
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        # streamed answers, cancellable from any replica; stored through the one way in
        self.streams = StreamRegistry(
            settings,
            store=store,
            broker=broker,
            rooms=self.rooms,
            spawn=self.spawn,
            post=self.post_message,
        )
        # agents and LLM providers from plugins; providers are handed this hub (HubAPI)
        self.agents = Agents(
            store=store,
            limits=self.limits,
            streams=self.streams,
            items=self.plugins.items,
            api=self,
        )
        self.users = KnownUsers(store, self.spawn)  # who exists (DMs go only to known users)
        self.attachment_pipeline = AttachmentPipeline(  # handlers' jobs on uploads (issue 15)
            store,
            AttachmentStore.for_settings(settings),
            self._attachment_handlers,
            self._publish_attachment,
            self.spawn,
            max_jobs=settings.attachment_max_jobs,
            start_method=settings.attachment_start_method,
            settings_for=self._attachment_settings,
            api=self,  # what in-hub (``run_async``) handlers are given
            max_async_jobs=settings.attachment_max_async_jobs,
            max_derived_files=settings.attachment_max_derived_files,
            max_derived_bytes=settings.attachment_max_derived_bytes,
        )
        self.revocations = Revocations(  # revoked token ids, the same on every replica
            store,
            broker,
            self.spawn,
            connections=self.connections,
            reload_interval=settings.revocation_reload_interval,
        )

    @classmethod
    async def create(cls, settings: Settings, plugins: PluginHost | None = None) -> Hub:
        """Open the store (migrating if configured) and start the broker."""
        store = await Store.open(
            settings.resolved_database_url(),
            pool_min=settings.db_pool_min,
            pool_max=settings.db_pool_max,
            migrate=settings.auto_migrate,
            connect_timeout=settings.db_connect_timeout,
            statement_timeout=settings.db_statement_timeout,
            acquire_timeout=settings.db_acquire_timeout,
        )
        if settings.redis_url:
            broker = Broker.from_redis_url(settings.redis_url, settings.redis_prefix)
            assert broker.redis is not None  # a broker made from a Redis URL holds its client
            presence: Presence = RedisPresence(
                broker.redis, settings.redis_prefix, settings.presence_ttl
            )
        else:
            broker, presence = Broker(), MemoryPresence()
        hub = cls(settings, store, broker, presence=presence, plugins=plugins)
        await hub.start()
        return hub

    async def start(self) -> None:
        await self.broker.start()
        self.broker.on_reconnect(self.rooms.resync)
        await self.revocations.setup()
        self._heartbeat = asyncio.create_task(self.sockets.sweep(), name="heartbeat")
        if isinstance(self.presence, RedisPresence):
            offline = functools.partial(self.rooms.publish_presence, status="offline")
            self.spawn(self.presence.keep(offline), name="presence")  # dead replicas' users
        if self.settings.upload_sweep_interval > 0:
            self.spawn(sweep_orphans_forever(self.settings), name="upload-sweep")
        if self.limits.redis is not None:
            self.spawn(self.limits.keep_socket_counts(), name="socket-counts")
        await self.streams.setup()
        await self.plugins.start(
            self, store=self.store, broker=self.broker, rooms=self.rooms, spawn=self.spawn
        )
        # strategies from plugins, warming before ready
        await start_cache(
            self.cache, self.settings, lambda: self.plugins.items("lydian_cache_strategies")
        )

    async def goodbye(self, grace: float = 0.0) -> int:
        """Tell every socket to reconnect elsewhere (``reconnect``, then close 1001) and wait
        up to ``grace`` seconds for the frames to flush; return how many sockets were told.
        Runs before the server tears the sockets down (``hub.cli``'s uvicorn server)."""
        return await self.sockets.goodbye(grace)

    async def stop(self) -> None:
        self.attachment_pipeline.stop()
        await self.streams.stop()
        await self.plugins.stop()
        await self.goodbye()
        tasks = [t for t in (self._heartbeat, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.revocations.stop()
        await self.broker.stop()
        await self.cache.stop()
        await self.store.close()

    def spawn(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run a background task owned by the hub (cancelled on shutdown, errors logged)."""
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------ identities and tokens

    def token_for(self, identity: Identity, ttl_seconds: int | None = None) -> str:
        return issue_token(identity, self.secret, ttl_seconds or self.settings.token_ttl_seconds)

    def authenticate(self, token: str) -> Identity | None:
        """The identity of a valid, unexpired, unrevoked hub token; else None."""
        try:
            identity = verify_token(token, self.secret)
        except NotAuthorizedException:  # bad signature, expired (TokenExpired), malformed
            return None
        return None if self.revocations.is_revoked(identity.jti) else identity

    # ------------------------------------------------------------ rooms and messages

    async def room(self, room_id: str) -> RoomInfo | None:
        return await self.queries.get_room(room_id)

    async def can_access(self, room: RoomInfo, identity: Identity) -> bool:
        """Public rooms are open to all; private and DM rooms to members (and admins)."""
        if room.kind == "public" or identity.is_admin:
            return True
        return await self.store.is_member(room.id, identity.id)

    async def visible_room(self, room_id: str, identity: Identity) -> RoomInfo:
        """The room, if it exists and ``identity`` may see it; else :class:`RoomNotVisible`.

        The one check every door (socket, REST, uploads, plugin and bridge routes) uses."""
        room = await self.room(room_id)
        if room is None:
            raise RoomNotVisible(ErrorCode.UNKNOWN_ROOM, room_id, f"no room {room_id!r}")
        if not await self.can_access(room, identity):
            raise RoomNotVisible(ErrorCode.FORBIDDEN, room_id, f"room {room_id!r} is private")
        return room

    def check_message(self, text: str, *, kind: str = "user", attachments: int = 0) -> None:
        """The rules on a message's text and attachment count; :class:`MessageRefused` if
        broken. User-authored kinds: not blank (unless it carries attachments), at most
        ``max_text_chars``; every kind: at most ``max_attachments_per_message``."""
        limit = self.settings.max_attachments_per_message
        if attachments > limit:
            raise MessageRefused(
                Refusal.TOO_MANY_ATTACHMENTS,
                f"at most {limit} attachments per message ({attachments} given)",
            )
        if kind in MACHINE_KINDS:
            return
        if not attachments and not text.strip():
            raise MessageRefused(Refusal.BLANK, "message text is empty")
        if len(text) > self.settings.max_text_chars:
            raise MessageRefused(
                Refusal.TOO_LONG,
                f"message text exceeds {self.settings.max_text_chars} characters "
                f"({len(text)} given)",
            )

    async def _resolve(self, room_id: str, items: Sequence[str | Attachment]) -> list[Attachment]:
        """Hub uploads (every id given as a string, and every :class:`Attachment` whose id
        has no ``platform:`` prefix) must exist in this room: their stored description
        replaces what was given. External attachments (an :class:`Attachment` with an id
        like ``slack:F01``, from a bridge) are links elsewhere and kept as given."""
        uploads = [
            i if isinstance(i, str) else i.id
            for i in items
            if isinstance(i, str) or ":" not in i.id
        ]
        if not uploads:
            return [i for i in items if not isinstance(i, str)]
        store = AttachmentStore.for_settings(self.settings)
        try:
            resolved = await asyncio.to_thread(store.resolve, uploads, room_id)
        except UnknownAttachment as exc:
            raise MessageRefused(
                Refusal.UNKNOWN_ATTACHMENT,
                f"unknown attachment {exc.args[0]!r} in {room_id!r}; upload it first",
            ) from None
        by_id = {a.id: a for a in resolved}
        return [by_id[i] if isinstance(i, str) else by_id.get(i.id, i) for i in items]

    async def post_message(
        self,
        room_id: str,
        author: UserRef,
        text: str,
        *,
        kind: str = "user",
        client_id: str | None = None,
        reply_to: str | None = None,
        attachments: Sequence[str | Attachment] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> tuple[ChatMessage, bool]:
        """Validate, persist then publish a room message. Returns ``(message, duplicate)``.

        Every door comes through here, so the rules are checked here, once
        (:meth:`check_message`, and every hub upload in ``attachments``, given as an id or
        an :class:`Attachment`, must exist in this room): a message breaking one raises
        :class:`MessageRefused` and nothing is stored. Rate limits stay at the doors.

        Plugins enabled in the room first transform the text, then observe the message in
        the background; both isolated, so a failing plugin never loses or blocks it. A
        streamed agent answer (``kind="agent"`` with ``meta["stream_id"]``) is stored as
        it was streamed: everybody watched that text, so it is not transformed again.
        """
        items = list(attachments or ())
        self.check_message(text, kind=kind, attachments=len(items))
        resolved = await self._resolve(room_id, items) if items else []
        streamed = kind == "agent" and bool((meta or {}).get("stream_id"))
        if not streamed:
            text = await self.plugins.transform(text, room_id, author, self)
        message, duplicate = await self.store.append_message(
            room_id,
            author,
            text,
            kind=kind,
            client_id=client_id,
            reply_to=reply_to,
            attachments=resolved,
            meta=meta,
        )
        if not duplicate:
            await self.rooms.publish_message(message)
            if self.plugins.observes(room_id):
                self.spawn(self.plugins.observe(message, self), name=f"plugins:{room_id}")
            uploads = [a.id for a in resolved if ":" not in a.id]
            if uploads:  # handlers' jobs, in the background: the message never waits
                self.spawn(  # awaited from now on by wait_attachment_results (agents)
                    self.attachment_pipeline.submit_soon(room_id, uploads),
                    name=f"attach:{room_id}",
                )
        return message, duplicate

    async def post_direct(
        self, sender: UserRef, recipient: UserRef, text: str, client_id: str | None = None
    ) -> tuple[ChatMessage, bool]:
        """Persist a DM in the pair's room and deliver it to both users' connections."""
        self.check_message(text)  # refused before the pair's room is made
        room = await self.store.ensure_dm_room(sender, recipient)
        message, duplicate = await self.post_message(room.id, sender, text, client_id=client_id)
        if not duplicate:  # also to their sockets that have not joined the DM room
            frame = encode(MessageFrame(message))
            await self.sockets.publish_direct(room.id, frame, {sender.id, recipient.id})
        return message, duplicate

    # ------------------------------------------------------------ the rest of HubAPI
    # (hub.plugin_host.api.HubAPI: what plugins may call; each delegates to a service)

    def plugin_settings(self, name: str, room: str | None = None) -> Any:
        """Plugin ``name``'s settings struct for ``room`` (None if it declares none)."""
        return self.plugins.settings_for(name, room)

    async def create_room(
        self,
        room_id: str,
        *,
        name: str | None = None,
        topic: str = "",
        kind: str = "public",
        created_by: str,
    ) -> RoomInfo:
        """Create a room; :class:`hub.store.store.RoomExists` if the id is taken."""
        return await self.store.create_room(
            room_id, name=name, topic=topic, kind=kind, created_by=created_by
        )

    async def history(
        self, room_id: str, before: int | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """Up to ``limit`` messages below offset ``before`` (the newest if None), oldest first."""
        return await self.store.messages_before(room_id, before, limit)

    async def publish_event(self, room_id: str, event: RoomEvent) -> None:
        """Send an ``event`` frame to the room's sockets on every replica."""
        await self.rooms.publish_event(room_id, encode(event))

    async def subscribe(
        self, room_id: str, on_frame: FrameConsumer
    ) -> Callable[[], Awaitable[None]]:
        """Follow the room's server frames from now on, for in-process consumers (bridges).

        ``on_frame(offset, frame)`` gets what a socket in the room gets, in the same order:
        messages in offset order, each once, gaps filled from the store (``offset`` is 0
        for events: presence, typing, streams). Frames queue for the consumer, so a slow
        one never holds up the room's sockets; an exception it raises is logged and the
        next frame still comes. The queue holds ``subscriber_queue_frames`` frames: a
        consumer that falls that far behind has it dropped, then gets
        ``(N, Error(code=slow_consumer))``, N being the offset of the last message it got,
        then every stored message after N (nothing persisted is lost; the events it missed
        are). No access check: the caller decides who may follow a room.
        Returns the coroutine function that ends the subscription.
        """
        follower = await self.rooms.follow(room_id, self.settings.subscriber_queue_frames)

        async def deliver() -> None:
            async for offset, text in follower.frames():
                if text is MISSED:
                    frame: ServerFrame = Error(
                        code=ErrorCode.SLOW_CONSUMER,
                        room=room_id,
                        detail=f"fell {follower.limit} frames behind: events after offset "
                        f"{offset} were dropped; the messages after it follow from the store",
                    )
                else:
                    frame = decode_server(text)
                try:
                    await on_frame(offset, frame)
                except Exception:
                    log.exception("room subscriber of %s failed on offset %d", room_id, offset)

        task = self.spawn(deliver(), name=f"subscriber:{room_id}")

        async def unsubscribe() -> None:
            task.cancel()
            await follower.stop()

        return unsubscribe

    def bind_tables(self, tables: Iterable[type[Table]]) -> None:
        """Put a plugin's own Piccolo tables on the hub's database (its engine, pool and
        transactions), so the plugin queries them with Piccolo and never holds the engine.
        The plugin's migrations create the tables (``lydian migrate``)."""
        for table in tables:
            if not (isinstance(table, type) and issubclass(table, Table)):
                raise TypeError(f"{table!r} is not a Piccolo Table class")
            table._meta.db = self.store.engine

    async def run_command(
        self, identity: Identity, room: str, text: str, ref: str | None = None
    ) -> CommandResult | Error:
        """Run a ``/command`` in ``room`` as ``identity``; the reply frame."""
        reply = await self.plugins.run_command(self, identity, room, text, ref)
        assert isinstance(reply, CommandResult | Error)
        return reply

    def room_commands(self, room: str) -> list[RoomCommand]:
        """The commands that answer in ``room`` now (built-ins, enabled plugins'), by name."""
        return [
            spec
            for spec, owner in self.plugins.all_commands()
            if owner == CORE or self.plugins.is_enabled(room, owner)
        ]

    def list_agents(self) -> dict[str, Agent]:
        return self.agents.agents()

    def agent(self, name: str) -> Agent | None:
        return self.agents.agent(name)

    def enabled_agents(self, room: str) -> list[Agent]:
        return [a for n, a in self.agents.agents().items() if self.plugins.is_enabled(room, n)]

    async def answer(
        self,
        agent: Agent | str,
        room: str,
        question: str,
        *,
        reply_to: ChatMessage | None = None,
        requested_by: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        limited: bool = True,
        context: Sequence[ChatTurn] = (),
    ) -> str:
        """Stream ``agent``'s answer into ``room``; the stream id, once started."""
        stream = await self.agents.answer(
            agent,
            room,
            question,
            reply_to=reply_to,
            requested_by=requested_by,
            provider=provider,
            model=model,
            limited=limited,
            context=context,
        )
        return stream.id

    def complete(
        self,
        agent: Agent,
        turns: list[ChatTurn],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        return self.agents.complete(agent, turns, max_tokens=max_tokens, temperature=temperature)

    def accepts_images(self, agent: Agent) -> bool:
        return self.agents.accepts_images(agent)

    async def check_model(self, role: str, user_id: str) -> None:
        await self.limits.check_model(role, user_id)

    async def charge_model_tokens(self, role: str, user_id: str, tokens: int) -> None:
        await self.limits.charge_model_tokens(role, user_id, tokens)

    def model_role(self, user_id: str) -> str:
        return self.limits.role_for(user_id)

    async def start_stream(
        self,
        room: str,
        author: UserRef,
        pieces: AsyncIterator[str],
        *,
        reply_to: str | None = None,
        requested_by: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Stream ``pieces`` into ``room`` in the background; the stream id, once started."""
        stream = await self.streams.launch(
            room, author, pieces, reply_to=reply_to, requested_by=requested_by, meta=meta
        )
        return stream.id

    async def cancel_stream(self, room: str, stream_id: str, identity: Identity) -> None:
        await self.streams.cancel(room, stream_id, identity)

    def record_stream(self, metrics: StreamMetrics) -> None:
        self.streams.record(metrics)

    def cache_stats(self) -> dict[str, Any]:
        return self.cache.stats()

    # ------------------------------------------------------------ attachment pipeline
    # (hub.media.pipeline: handlers from plugins enabled in the room, results, events)

    def _attachment_handlers(self, room: str) -> list[tuple[str, AttachmentHandler]]:
        return [
            (plugin, handler)
            for plugin, handler in self.plugins.items("lydian_attachment_handlers")
            if self.plugins.is_enabled(room, plugin)
        ]

    def _attachment_settings(self, plugin: str, room: str) -> dict[str, Any]:
        """A plugin's settings for a room as JSON types, for ``room_settings`` handlers;
        ``Secret`` fields masked (they would be stored with the result)."""
        settings = self.plugins.public_settings(plugin, room)
        if settings is None:
            return {}
        # through JSON: what the stored result keeps, compared when it could be reused
        found: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(settings))
        return found

    async def _publish_attachment(self, room: str, event: AttachmentEvent) -> None:
        await self.rooms.publish_event(room, encode(event))

    async def process_attachment(
        self,
        room: str,
        attachment_id: str,
        *,
        handlers: set[str] | None = None,
        password: str | None = None,
    ) -> list[str]:
        return await self.attachment_pipeline.submit(
            room, [attachment_id], force=True, only=handlers, password=password
        )

    async def store_attachment(
        self, room: str, filename: str, media_type: str, data: bytes, uploaded_by: str
    ) -> Attachment:
        store = AttachmentStore.for_settings(self.settings)
        try:
            meta = await store.save(room, uploaded_by, filename, data, media_type)
        except UploadRejected as exc:
            raise ValueError(exc.detail) from None
        return meta.public()

    async def attachment_results(self, attachment_id: str) -> list[AttachmentResult]:
        _, results = await self.attachment_pipeline.results(attachment_id)
        return results

    async def wait_attachment_results(
        self, attachment_id: str, timeout: float = 60.0
    ) -> list[AttachmentResult]:
        return await self.attachment_pipeline.wait_results(attachment_id, timeout)


@contextlib.asynccontextmanager
async def running_hub(settings: Settings, plugins: PluginHost | None = None):
    """Start a hub for the duration of a ``with`` block (used by the app's lifespan)."""
    hub = await Hub.create(settings, plugins)
    RUNNING.add(hub)
    try:
        yield hub
    finally:
        RUNNING.discard(hub)
        await hub.stop()


RUNNING: set[Hub] = set()
"""Hubs running in this process, for the server's shutdown to say goodbye first."""


async def goodbye_all() -> None:
    """Every running hub in this process: ``reconnect`` + close 1001 on its sockets, waiting
    up to its ``shutdown_grace`` for the frames to go out (see :meth:`Hub.goodbye`)."""
    await asyncio.gather(*(hub.goodbye(hub.settings.shutdown_grace) for hub in list(RUNNING)))
