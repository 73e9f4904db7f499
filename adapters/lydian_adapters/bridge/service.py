"""The bridge between hub rooms and platform channels (one service per hub process).

Inbound, an adapter calls :meth:`BridgeService.ingest` with a platform message; it is
posted into every room bridged to that channel through ``hub.post_message`` with
``meta={"source": platform, "channel": ..., "platform_id": ...}`` and a client id derived
from the platform message, so a platform's retried delivery is stored once.

Outbound, the service follows every bridged room (``hub.subscribe``: its frames in order,
gaps filled) and copies each message to every bridged channel except the one it came
from; streamed answers become one platform message edited as tokens arrive, throttled per
platform. Copies are recorded
(platform message ↔ hub message), which serves edits, deletions and echo suppression: a
platform message the bridge posted itself is never ingested again.

Adapters must run in one hub process (they hold the platform connections).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from hub.sdk import (
    Attachment,
    AttachmentEvent,
    CancelRefused,
    ChatMessage,
    CommandResult,
    Identity,
    MessageFrame,
    MessageRefused,
    Refusal,
    RoomEvent,
    ServerFrame,
    StreamDelta,
    StreamEnd,
    StreamError,
    StreamStart,
    UserRef,
)
from lydian_adapters.bridge.connector import Connector, FileTooLarge, PlatformFile, StreamState
from lydian_adapters.bridge.outbox import Outbox, RateLimited
from lydian_adapters.bridge.store import BridgeStore, Link, MessageCopy, PlatformUser
from lydian_adapters.bridge.tables import TABLES

if TYPE_CHECKING:
    from hub.sdk import HubAPI

log = logging.getLogger(__name__)

LINKS_CHANNEL = "bridge:links"
"""Shared channel (``hub.shared``) announcing link changes to every replica."""

CATCH_UP_SECONDS = 120.0
"""A new leader copies the messages of the last two minutes that were not copied yet."""
_CATCH_UP = b"catch-up"
_RELOAD = b"reload"

LEADER_LEASE = "bridge:leader"
"""The shared lease (``hub.shared``) held by the replica that copies messages out."""

LEADER_TTL = 6.0
"""Seconds a replica's lease on the bridge lasts without renewal."""

REPLY_EXCERPT = 1500
"""Characters of a handler's extracted text quoted in the platform's threaded reply; a
longer text is sent whole as a file in the thread instead (cut to this when that fails)."""

UPLOAD_TIMEOUT = 30.0
"""Seconds an upload of the extracted text may take before the reply falls back to the cut
text (the outbox's own job timeout is longer)."""


@dataclass(frozen=True)
class ResultReply:
    """What an attachment handler's result becomes on a platform: ``head`` (a line naming
    the file, handler and summary, or the error) and the extracted text ``full``."""

    head: str
    full: str = ""
    filename: str = ""
    where: str = ""  # the hub route with every result of the file

    @property
    def long(self) -> bool:
        return len(self.full) > REPLY_EXCERPT

    @property
    def text(self) -> str:
        """The reply when the text is short enough to quote (or there is none)."""
        return f"{self.head}\n\n{self.full}" if self.full else self.head

    @property
    def file_note(self) -> str:
        """The message that goes with the file: what the file is."""
        return (
            f"{self.head}\nThe extracted text ({len(self.full):,} characters) is in the "
            f"attached file {self.filename}."
        )

    def cut(self, failure: str | None) -> str:
        """The reply with the text cut at :data:`REPLY_EXCERPT` characters and a note saying
        so, why there is no file (``failure``), and where the whole text is."""
        excerpt = self.full[:REPLY_EXCERPT].rstrip()
        why = f"; it could not be sent as a file ({failure[:200]})" if failure else ""
        note = (
            f"… (cut at {len(excerpt):,} of {len(self.full):,} characters{why}; "
            f"the whole text is in the hub: GET {self.where})"
        )
        return f"{self.head}\n\n{excerpt}\n{note}"


StopHandler = Callable[[str, str, Identity], Awaitable[bool]]


class BridgeService:
    """Links, inbound posting, outbound fan-out and streamed answers for one hub."""

    def __init__(self, hub: HubAPI) -> None:
        self.hub = hub
        self.store = BridgeStore()
        self.outbox = Outbox()
        self.connectors: dict[str, Connector] = {}
        self._links: dict[str, list[Link]] = {}
        self._subs: dict[str, Callable[[], Awaitable[None]]] = {}
        self._events: asyncio.Queue[tuple[str, bytes | ServerFrame]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._streams: dict[str, list[tuple[str, str, StreamState]]] = {}
        self._forwarded: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._started = False
        self._lock = asyncio.Lock()
        self._ingesting: dict[tuple[str, str, str], asyncio.Event] = {}
        self._origins: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._changes: dict[tuple[str, str, str], tuple[str | None, UserRef | None]] = {}
        self._uploads: OrderedDict[str, str] = OrderedDict()  # hub upload id -> message id
        self._replied: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()
        self.leader = asyncio.Event()
        """Set while this process copies messages out (always, without Redis)."""
        self._election: asyncio.Task[None] | None = None
        self._links_unsub: Callable[[], Awaitable[None]] | None = None
        self._token = uuid.uuid4().hex
        self._renewed = 0.0  # monotonic time the leader lease was last taken or renewed

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the links, then lead (or wait to lead) the bridge (idempotent)."""
        async with self._lock:
            if self._started:
                return
            self.hub.bind_tables(TABLES)
            for link in await self.store.links():
                self._links.setdefault(link.room, []).append(link)
            self._worker = asyncio.create_task(self._work(), name="bridge:fan-out")
            self._started = True
            self._links_unsub = await self.hub.shared.subscribe(
                LINKS_CHANNEL, lambda data: self._events.put_nowait(("", _RELOAD))
            )
            if await self._try_lead():  # at once when free (always on one process)
                await self._lead()
            self._election = asyncio.create_task(self._elect(), name="bridge:election")

    async def stop(self) -> None:
        async with self._lock:
            if not self._started:
                return
            self._started = False
            if self._election is not None:
                self._election.cancel()
                await asyncio.gather(self._election, return_exceptions=True)
                await self._release()
            await self._step_down()
            if self._links_unsub is not None:
                await self._links_unsub()
                self._links_unsub = None
            await self.outbox.drain(timeout=2.0)
            await self.outbox.close()
            if self._worker is not None:
                self._worker.cancel()
                await asyncio.gather(self._worker, return_exceptions=True)

    # ------------------------------------------------------------ leadership

    async def _lead(self) -> None:
        """Copy messages out of the bridged rooms from this process.

        First catch up: messages posted while no replica led (the previous leader died)
        and not copied yet are copied now, before the live ones that follow.
        """
        self.leader.set()
        self._events.put_nowait(("", _CATCH_UP))
        for room in list(self._links):
            await self._follow(room)

    async def _catch_up(self) -> None:
        since = time.time() - CATCH_UP_SECONDS
        for room, links in list(self._links.items()):
            page = await self.hub.history(room, limit=200)
            for message in page:
                if message.ts < since:
                    continue
                copied = {(c.platform, c.channel) for c in await self.store.copies(message.id)}
                for link in links:
                    if (link.platform, link.channel) in copied or message.ts < link.created_at:
                        self._remember_forwarded(message.id, link.platform, link.channel)
                await self._forward(message)

    async def _step_down(self) -> None:
        self.leader.clear()
        for unsubscribe in self._subs.values():
            try:
                await unsubscribe()
            except Exception:
                log.debug("unsubscribe failed", exc_info=True)
        self._subs.clear()

    async def _try_lead(self) -> bool | None:
        """Take (or renew) the leader lease: True if this replica holds it now, False if
        another one does, None if the shared state could not be asked."""
        try:
            taken = await self.hub.shared.acquire_lease(LEADER_LEASE, self._token, LEADER_TTL)
        except Exception as exc:
            log.warning("bridge election: %s", exc)
            return None
        if taken:
            self._renewed = time.monotonic()
        return taken

    async def _elect(self) -> None:
        """With several replicas sharing state (Redis), one of them copies messages out.

        Every replica ingests what reaches it (the store keeps one copy of each platform
        message); only the leader follows the rooms and posts to the platforms, so nothing
        is posted twice. The lease (``hub.shared``) is renewed every third of
        ``LEADER_TTL``; when the leader dies, another replica takes over within
        ``LEADER_TTL``.
        """
        while True:
            await asyncio.sleep(LEADER_TTL / 3)
            leading = self.leader.is_set()
            taken = await self._try_lead()
            if taken and not leading:
                log.info("this replica leads the bridge")
                await self._lead()
            elif taken is False and leading:
                log.warning("bridge leadership lost; this replica stops copying out")
                await self._step_down()
            elif taken is None and leading and time.monotonic() - self._renewed > LEADER_TTL:
                log.warning("bridge lease not renewed in time; stepping down")
                await self._step_down()

    async def _release(self) -> None:
        if self.leader.is_set():
            try:
                await self.hub.shared.release_lease(LEADER_LEASE, self._token)
            except Exception:
                log.debug("could not release the bridge lease", exc_info=True)

    def register(self, connector: Connector) -> None:
        self.connectors[connector.platform] = connector

    def unregister(self, platform: str) -> None:
        self.connectors.pop(platform, None)

    # ------------------------------------------------------------ links

    def links(self, room: str | None = None) -> list[Link]:
        if room is not None:
            return list(self._links.get(room, []))
        return [link for links in self._links.values() for link in links]

    def rooms_for(self, platform: str, channel: str) -> list[str]:
        return [
            room
            for room, links in self._links.items()
            if any(lk.platform == platform and lk.channel == channel for lk in links)
        ]

    async def bridge(self, room: str, platform: str, channel: str, by: str) -> bool:
        """Bridge ``room`` to a platform channel; False if it was bridged already."""
        link = Link(room, platform, channel, by)
        added = await self.store.add_link(link)
        if added:
            self._links.setdefault(room, []).append(link)
            if self.leader.is_set():
                await self._follow(room)
            await self._announce(room)
        return added

    async def _announce(self, room: str) -> None:
        """Tell the other replicas that the room's links changed."""
        try:
            await self.hub.shared.publish(LINKS_CHANNEL, msgspec.json.encode({"room": room}))
        except Exception:
            log.warning("could not announce the bridge change of %s", room, exc_info=True)

    async def _reload(self) -> None:
        """Re-read the links (another replica changed them); follow what is new."""
        links: dict[str, list[Link]] = {}
        for link in await self.store.links():
            links.setdefault(link.room, []).append(link)
        self._links = links
        for room in list(self._subs):
            if room not in links:
                await self._subs.pop(room)()
        if self.leader.is_set():
            for room in links:
                await self._follow(room)

    async def unbridge(self, room: str, platform: str, channel: str | None = None) -> int:
        removed = await self.store.remove_links(room, platform, channel)
        kept = [
            lk
            for lk in self._links.get(room, [])
            if not (lk.platform == platform and (channel is None or lk.channel == channel))
        ]
        if kept:
            self._links[room] = kept
        else:
            self._links.pop(room, None)
            unsubscribe = self._subs.pop(room, None)
            if unsubscribe is not None:
                await unsubscribe()
        if removed:
            await self._announce(room)
        return removed

    async def _follow(self, room: str) -> None:
        if room not in self._subs:

            async def queue(offset: int, frame: ServerFrame, room: str = room) -> None:
                self._events.put_nowait((room, frame))

            self._subs[room] = await self.hub.subscribe(room, queue)

    # ------------------------------------------------------------ identities and commands

    async def identity_for(self, user: PlatformUser, admin: bool = False) -> Identity:
        """The hub identity a platform user acts as (linked hub user, else ``platform:id``)."""
        known = await self.store.user(user.platform, user.id)
        hub_user = known.hub_user if known else None
        return Identity(
            id=hub_user or f"{user.platform}:{user.id}",
            name=user.name,
            roles=("admin",) if admin else (),
        )

    async def run_command(
        self, platform: str, channel: str, identity: Identity, text: str
    ) -> tuple[bool, str]:
        """Run a hub chat-ops command from a platform channel; ``(ok, reply text)``."""
        rooms = self.rooms_for(platform, channel)
        if not rooms:
            return False, (
                f"this {platform} channel is not bridged to a hub room; an admin runs "
                f"/bridge {platform} {channel} in the room"
            )
        text = text.strip()
        if not text.startswith("/"):
            text = "/" + text
        reply = await self.hub.run_command(identity, rooms[0], text)
        if isinstance(reply, CommandResult):
            return reply.ok, reply.text
        return False, str(getattr(reply, "detail", reply))

    # ------------------------------------------------------------ inbound

    async def ingest(
        self,
        platform: str,
        channel: str,
        platform_msg: str,
        user: PlatformUser,
        text: str,
        attachments: list[Attachment] | None = None,
        files: list[PlatformFile] | None = None,
    ) -> list[ChatMessage]:
        """Post a platform message into every room bridged to its channel, once.

        ``files`` shared with it are fetched (with the platform's auth, within the hub's
        ``max_upload_bytes``) and stored as hub uploads of each room, so the attachment
        pipeline processes them; a file that cannot be brought in stays a link (its
        ``PlatformFile.link``) and its author gets a notice, the message is posted anyway.

        The hub's one rule for messages applies (``hub.post_message``): a message it refuses
        (too long, too many attachments, ...) is not posted anywhere, not cut; it is logged
        in one line and its author gets a notice on the platform (:meth:`Connector.notice`;
        not for a blank message, which has nothing to lose)."""
        rooms = self.rooms_for(platform, channel)
        key = (platform, channel, platform_msg)
        if not rooms or key in self._ingesting:
            return []
        if _secret_command(text):  # typed as a message: never copied anywhere
            connector = self.connectors.get(platform)
            if connector is not None:
                notice = (
                    "⚠ Not relayed: it looks like a password. Delete your message and use the "
                    "slash command instead (Slack /lydian password ID PASSWORD, Discord "
                    "/lydian command:password ID PASSWORD): only you see it."
                )
                self.outbox.put(
                    (platform, channel),
                    _bind(connector.notice, channel, platform_msg, user.id, notice),
                    f"notice {platform_msg}",
                )
            return []
        done = self._ingesting[key] = asyncio.Event()
        try:
            return await self._ingest(
                rooms, platform, channel, platform_msg, user, text, attachments, files
            )
        except MessageRefused as exc:
            self._refused(platform, channel, platform_msg, user, exc)
            return []
        finally:
            done.set()
            del self._ingesting[key]

    def _refused(
        self,
        platform: str,
        channel: str,
        platform_msg: str,
        user: PlatformUser,
        exc: MessageRefused,
    ) -> None:
        log.info(
            "bridge: %s message %s in %s by %s not posted to the hub (%s, %s): %s",
            platform,
            platform_msg,
            channel,
            user.id,
            exc.code,
            exc.reason,
            exc.detail,
        )
        connector = self.connectors.get(platform)
        if connector is None or exc.reason == Refusal.BLANK:
            return
        notice = f"⚠ Your message was not posted to the hub: {exc.detail}."
        self.outbox.put(
            (platform, channel),
            _bind(connector.notice, channel, platform_msg, user.id, notice),
            f"notice {platform_msg}",
        )

    async def _ingest(
        self,
        rooms: list[str],
        platform: str,
        channel: str,
        platform_msg: str,
        user: PlatformUser,
        text: str,
        attachments: list[Attachment] | None,
        files: list[PlatformFile] | None = None,
    ) -> list[ChatMessage]:
        if await self.store.copy_of(platform, channel, platform_msg) is not None:
            return []  # our own copy coming back, or a platform retry of one already posted
        count = len(attachments or ()) + len(files or ())
        self.hub.check_message(text, attachments=count)  # before any room
        user = await self.store.remember_user(user)
        author = UserRef(id=user.hub_user or f"{platform}:{user.id}", name=user.name)
        if user.avatar:
            author.avatar = user.avatar
        fetched = await self._fetch(platform, channel, platform_msg, user, files or [])
        posted = []
        refused: MessageRefused | None = None
        for room in rooms:
            items = list(attachments or [])
            for file, data in fetched:
                items.append(await self._store_file(room, file, data, author.id))
            try:
                message, duplicate = await self.hub.post_message(
                    room,
                    author,
                    text,
                    client_id=f"{platform}:{channel}:{platform_msg}"[:100],
                    attachments=items,
                    meta={"source": platform, "channel": channel, "platform_id": platform_msg},
                )
            except MessageRefused as exc:  # a rule that depends on the room (its uploads)
                log.info(
                    "bridge: %s message %s refused in %s: %s", platform, platform_msg, room, exc
                )
                refused = refused or exc
                continue
            if duplicate:
                continue
            self._remember_forwarded(message.id, platform, channel)
            await self.store.add_copy(
                MessageCopy(platform, channel, platform_msg, message.id, room, origin=True)
            )
            posted.append(message)
        if refused is not None and not posted:
            raise refused
        return posted

    async def _fetch(
        self,
        platform: str,
        channel: str,
        platform_msg: str,
        user: PlatformUser,
        files: list[PlatformFile],
    ) -> list[tuple[PlatformFile, bytes | None]]:
        """Each file's bytes (None when it stays a link; its author is told why)."""
        limit = self.hub.settings.max_upload_bytes
        out: list[tuple[PlatformFile, bytes | None]] = []
        for file in files:
            why = ""
            data: bytes | None = None
            if file.size > limit:
                why = f"it has {file.size:,} bytes; the hub takes files up to {limit:,}"
            else:
                try:
                    data = await file.fetch(limit)
                except FileTooLarge:
                    why = f"it is larger than the hub's limit of {limit:,} bytes"
                except Exception as exc:
                    log.warning(
                        "bridge: could not fetch %s file %r of %s: %s",
                        platform,
                        file.name,
                        platform_msg,
                        exc,
                    )
                    why = f"it could not be fetched from {platform.title()} ({exc})"[:300]
                else:
                    if not data:
                        why, data = "it is empty", None
            if why:
                self._notice(platform, channel, platform_msg, user, file.name, why)
            out.append((file, data))
        return out

    async def _store_file(
        self, room: str, file: PlatformFile, data: bytes | None, uploaded_by: str
    ) -> Attachment:
        """The hub upload of a fetched file in ``room`` (its link if it was not fetched or
        the hub does not keep it)."""
        if data is None:
            return file.link
        try:
            return await self.hub.store_attachment(
                room, file.name, file.media_type, data, uploaded_by
            )
        except ValueError as exc:
            log.info("bridge: %r not kept in %s: %s", file.name, room, exc)
            return file.link

    def _notice(
        self,
        platform: str,
        channel: str,
        platform_msg: str,
        user: PlatformUser,
        name: str,
        why: str,
    ) -> None:
        connector = self.connectors.get(platform)
        if connector is None:
            return
        text = f"⚠ {name} was not brought into the hub ({why}); your message was, with a link."
        self.outbox.put(
            (platform, channel),
            _bind(connector.notice, channel, platform_msg, user.id, text),
            f"notice {platform_msg}",
        )

    async def ingest_edit(
        self,
        platform: str,
        channel: str,
        platform_msg: str,
        text: str,
        author: PlatformUser | None = None,
    ) -> int:
        """A platform message was edited: edit its copies elsewhere and tell the rooms."""
        ref = UserRef(id=f"{platform}:{author.id}", name=author.name) if author else None
        return await self._propagate(platform, channel, platform_msg, text, ref)

    async def ingest_delete(self, platform: str, channel: str, platform_msg: str) -> int:
        return await self._propagate(platform, channel, platform_msg, None)

    async def _propagate(
        self,
        platform: str,
        channel: str,
        platform_msg: str,
        text: str | None,
        author: UserRef | None = None,
    ) -> int:
        ingesting = self._ingesting.get((platform, channel, platform_msg))
        if ingesting is not None:  # the message itself is still being posted
            await ingesting.wait()
        source = await self.store.copy_of(platform, channel, platform_msg)
        if source is None or not source.origin:
            return 0  # unknown, or an edit of our own copy (echo)
        if text is not None and author is None:
            author = UserRef(id=f"{platform}:?", name=platform.title())
        count = 0
        for link, connector in self._targets(source.room):
            if (link.platform, link.channel) == (platform, channel):
                continue
            self.outbox.put(
                (link.platform, link.channel),
                _bind(self._apply_change, connector, link, source.hub_msg, text, author),
                "delete" if text is None else "edit",
            )
            count += 1
        event = "message_deleted" if text is None else "message_edited"
        data: dict[str, Any] = {"id": source.hub_msg, "source": platform}
        if text is not None:
            data["text"] = text
        detail = f"a message was {event.split('_')[1]} on {platform}"
        await self.hub.publish_event(
            source.room, RoomEvent(room=source.room, event=event, detail=detail, data=data)
        )
        return count

    async def _apply_change(
        self,
        connector: Connector,
        link: Link,
        hub_msg: str,
        text: str | None,
        author: UserRef | None,
    ) -> None:
        """Edit (or delete, ``text`` None) the copy of ``hub_msg`` in one channel.

        Runs in the channel's queue, after its post; if the post is not even queued yet,
        the change waits for it (:meth:`_post_job` applies it right after posting).
        """
        where = (link.platform, link.channel)
        copies = [c for c in await self.store.copies(hub_msg) if (c.platform, c.channel) == where]
        if not copies and (hub_msg, *where) not in self._forwarded:
            self._changes[(hub_msg, *where)] = (text, author)
            return
        for copy in copies:
            if text is None:
                await connector.delete(copy.channel, copy.platform_msg)
            else:
                assert author is not None
                await connector.edit(copy.channel, copy.platform_msg, author, text)

    # ------------------------------------------------------------ outbound

    async def _work(self) -> None:
        while True:
            room, item = await self._events.get()
            try:
                if isinstance(item, bytes):
                    await (self._catch_up() if item is _CATCH_UP else self._reload())
                    continue
                await self._handle(item)
            except Exception:
                log.exception("bridge: failed to handle an event of room %s", room)

    async def _handle(self, frame: ServerFrame) -> None:
        match frame:
            case MessageFrame():
                await self._forward(frame.message)
            case AttachmentEvent(status="done" | "failed"):
                await self._attachment_result(frame)
            case StreamStart():
                await self._stream_start(frame)
            case StreamDelta():
                self._stream_delta(frame)
            case StreamEnd():
                self._stream_end(
                    frame.stream_id, frame.message.text, frame.message, frame.cancelled
                )
            case StreamError():
                text = frame.message.text if frame.message else None
                self._stream_end(frame.stream_id, text, frame.message, False, frame.detail)

    def _targets(self, room: str) -> list[tuple[Link, Connector]]:
        out = []
        for link in self._links.get(room, []):
            connector = self.connectors.get(link.platform)
            if connector is not None:
                out.append((link, connector))
        return out

    def _remember_forwarded(self, hub_msg: str, platform: str, channel: str) -> bool:
        """Mark a (message, channel) pair as handled; False if it was already."""
        key = (hub_msg, platform, channel)
        if key in self._forwarded:
            return False
        self._forwarded[key] = None
        while len(self._forwarded) > 50_000:
            self._forwarded.popitem(last=False)
        return True

    async def _forward(self, message: ChatMessage) -> None:
        if message.meta.get("stream_id") in self._streams:
            return  # a streamed answer's final message: its stream's close delivers it
        for item in message.attachments:
            if ":" not in item.id:  # a hub upload: its handlers' results answer this message
                self._uploads[item.id] = message.id
                while len(self._uploads) > 10_000:
                    self._uploads.popitem(last=False)
        source = (message.meta.get("source"), message.meta.get("channel"))
        if source[0] and message.meta.get("platform_id"):
            self._origins[message.id] = (*source, str(message.meta["platform_id"]))
            while len(self._origins) > 10_000:
                self._origins.popitem(last=False)
        for link, connector in self._targets(message.room):
            if (link.platform, link.channel) == source:
                continue
            if not self._remember_forwarded(message.id, link.platform, link.channel):
                continue
            self.outbox.put(
                (link.platform, link.channel),
                self._post_job(connector, link, message),
                f"post {message.id}",
            )

    def _post_job(
        self, connector: Connector, link: Link, message: ChatMessage
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            platform_msg = await connector.post(
                link.channel, message.user, message.text, list(message.attachments)
            )
            await self.store.add_copy(
                MessageCopy(
                    link.platform, link.channel, platform_msg, message.id, link.room, origin=False
                )
            )
            change = self._changes.pop((message.id, link.platform, link.channel), None)
            if change is not None:  # edited or deleted at the source before we got here
                text, author = change
                if text is None:
                    await connector.delete(link.channel, platform_msg)
                else:
                    await connector.edit(link.channel, platform_msg, author or message.user, text)

        return job

    # ------------------------------------------------------------ attachment results

    async def _attachment_result(self, frame: AttachmentEvent) -> None:
        """A handler finished with a file of a bridged message: answer that message in its
        thread on every bridged channel (the original there, the copy elsewhere)."""
        hub_msg = self._uploads.get(frame.attachment)
        if hub_msg is None:
            return
        reply = await self._result_text(frame)
        origin = self._origins.get(hub_msg)
        for link, connector in self._targets(frame.room):
            key = (frame.attachment, frame.handler, link.platform, link.channel)
            if key in self._replied:
                continue
            self._replied[key] = None
            while len(self._replied) > 10_000:
                self._replied.popitem(last=False)
            thread = None
            if origin is not None and origin[:2] == (link.platform, link.channel):
                thread = origin[2]
            self.outbox.put(
                (link.platform, link.channel),
                _bind(self._reply, connector, link, hub_msg, thread, reply),
                f"reply {frame.attachment}:{frame.handler}",
            )

    async def _reply(
        self, connector: Connector, link: Link, hub_msg: str, thread: str | None, reply: ResultReply
    ) -> None:
        if thread is None:  # the message's copy in this channel (posted before, same queue)
            where = (link.platform, link.channel)
            copies = [
                c for c in await self.store.copies(hub_msg) if (c.platform, c.channel) == where
            ]
            if not copies:
                return
            thread = copies[0].platform_msg
        text = reply.text
        if reply.long:  # the whole text as a file; if that fails, cut, saying where it is
            try:
                async with asyncio.timeout(UPLOAD_TIMEOUT):
                    await connector.reply_file(
                        link.channel, thread, reply.file_note, reply.filename, reply.full.encode()
                    )
                return
            except RateLimited:
                raise  # the outbox waits as the platform asks, then tries the file again
            except NotImplementedError:
                text = reply.cut(None)
            except Exception as exc:
                log.warning(
                    "bridge: %s:%s could not upload %s (%s); replying with the text cut",
                    link.platform,
                    link.channel,
                    reply.filename,
                    exc,
                )
                text = reply.cut(str(exc) or type(exc).__name__)
        await connector.reply(link.channel, thread, text)

    async def _result_text(self, frame: AttachmentEvent) -> ResultReply:
        name = frame.filename or "the file"
        if frame.status == "failed":
            return ResultReply(f"⚠ {name} ({frame.handler}): {frame.error}")
        head = f"📄 {name} ({frame.handler}): {frame.summary}".rstrip(": ")
        try:
            results = await self.hub.attachment_results(frame.attachment)
        except LookupError:
            results = []
        markdown = next((r.markdown for r in results if r.handler == frame.handler), "")
        return ResultReply(
            head,
            full=markdown.strip(),
            filename=f"{name}.{frame.handler}.md",
            where=f"/api/rooms/{frame.room}/attachments/{frame.attachment}/results",
        )

    # ------------------------------------------------------------ streams

    def streams(self, stream_id: str) -> list[tuple[str, str, StreamState]]:
        return list(self._streams.get(stream_id, []))

    async def stop_stream(
        self, platform: str, channel: str, platform_msg: str, identity: Identity
    ) -> str | None:
        """A Stop on a platform copy of a streamed answer: cancel it everywhere.

        Returns None when ``platform_msg`` is not a running answer, else a short result.
        """
        for stream_id, entries in list(self._streams.items()):
            for p, c, state in entries:
                if (p, c, state.platform_msg) == (platform, channel, platform_msg):
                    try:
                        await self.hub.cancel_stream(state.room, stream_id, identity)
                    except CancelRefused as exc:
                        return exc.detail
                    return "stopped"
        return None

    async def _stream_start(self, frame: StreamStart) -> None:
        if frame.stream_id in self._streams:
            return
        entries = []
        for link, connector in self._targets(frame.room):
            state = StreamState(room=frame.room, stream_id=frame.stream_id, agent=frame.agent)
            if frame.reply_to:
                origin = self._origins.get(frame.reply_to)
                if origin is not None and origin[:2] == (link.platform, link.channel):
                    state.thread = origin[2]
                for copy in await self.store.copies(frame.reply_to):
                    if (copy.platform, copy.channel) == (link.platform, link.channel):
                        state.thread = copy.platform_msg
            entries.append((link.platform, link.channel, state))
            self.outbox.put(
                (link.platform, link.channel),
                _bind(self._open, connector, link.channel, state),
                f"stream {frame.stream_id} open",
            )
        self._streams[frame.stream_id] = entries

    async def _open(self, connector: Connector, channel: str, state: StreamState) -> None:
        if state.platform_msg is None:
            state.platform_msg = await connector.stream_open(channel, state)
            state.last_edit = time.monotonic()

    def _stream_delta(self, frame: StreamDelta) -> None:
        for platform, channel, state in self._streams.get(frame.stream_id, []):
            state.text += frame.text
            if state.edit_queued or state.finished:
                continue
            state.edit_queued = True
            connector = self.connectors.get(platform)
            if connector is not None:
                self.outbox.put(
                    (platform, channel),
                    _bind(self._update, connector, channel, state),
                    f"stream {frame.stream_id} edit",
                )

    async def _update(self, connector: Connector, channel: str, state: StreamState) -> None:
        wait = state.last_edit + connector.edit_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        state.edit_queued = False
        if state.finished or state.platform_msg is None:
            return
        text = state.text
        await connector.stream_update(channel, state, text)
        state.last_edit = time.monotonic()

    def _stream_end(
        self,
        stream_id: str,
        text: str | None,
        message: ChatMessage | None,
        cancelled: bool,
        error: str | None = None,
    ) -> None:
        entries = self._streams.pop(stream_id, [])
        for platform, channel, state in entries:
            state.finished = True
            connector = self.connectors.get(platform)
            if connector is None:
                continue
            final = text if text is not None else state.text
            if error and text is None:
                final = f"{final}\n⚠ {error}".strip()
            if message is not None:
                self._remember_forwarded(message.id, platform, channel)
            self.outbox.put(
                (platform, channel),
                _bind(self._close, connector, channel, state, final, cancelled, message),
                f"stream {stream_id} close",
            )

    async def _close(
        self,
        connector: Connector,
        channel: str,
        state: StreamState,
        text: str,
        cancelled: bool,
        message: ChatMessage | None,
    ) -> None:
        if state.platform_msg is None:
            state.platform_msg = await connector.stream_open(channel, state)
            state.last_edit = time.monotonic()
        wait = state.last_edit + connector.edit_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await connector.stream_close(channel, state, text, cancelled)
        state.last_edit = time.monotonic()
        if message is not None:
            await self.store.add_copy(
                MessageCopy(
                    connector.platform, channel, state.platform_msg, message.id, state.room, False
                )
            )


def _secret_command(text: str) -> bool:
    """A message that is really a ``/password`` command (or ``/lydian password``)."""
    words = text.strip().lower().split(maxsplit=2)
    if words[:1] == ["/lydian"]:
        words = words[1:]
    return bool(words) and words[0].lstrip("/") == "password" and text.strip()[:1] == "/"


def _bind(fn: Callable[..., Awaitable[Any]], *args: Any) -> Callable[[], Awaitable[Any]]:
    async def job() -> Any:
        return await fn(*args)

    return job


_services: weakref.WeakKeyDictionary[Any, BridgeService] = weakref.WeakKeyDictionary()


def bridge_for(hub: HubAPI) -> BridgeService:
    """The hub's bridge service (created on first use; started by :meth:`start`)."""
    service = _services.get(hub)
    if service is None:
        service = _services[hub] = BridgeService(hub)
    return service
