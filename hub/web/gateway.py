"""The WebSocket gateway: read frames from one socket, validate them, act, reply.

Every bad frame gets an ``error`` frame with a stable code and the socket lives on;
only frames above the transport cap (close 1009), a missing hello (close 4401), a
silent client (close 4408) or a client too slow to read (close 4429) end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect

from hub.access.identity import dm_refusal, guest_name, unique_guest_name
from hub.access.limits import Bucket, Rate, role_of
from hub.ai.streams import CancelRefused
from hub.base.auth import Identity, TokenExpired, guest_identity, verify_token
from hub.base.errors import MessageRefused, RoomNotVisible
from hub.base.protocol import (
    Ack,
    Cancel,
    ClientFrame,
    CloseCode,
    Command,
    Direct,
    Error,
    ErrorCode,
    FrameError,
    Hello,
    History,
    HistoryRequest,
    Join,
    Leave,
    Left,
    Pong,
    Send,
    Typing,
    UserId,
    UserRef,
    Welcome,
    decode_client,
)
from hub.core import Hub
from hub.plugin_host.commands import redact
from hub.realtime.connection import Connection
from hub.store.errors import find_unavailable
from hub.store.store import DmRoomUnavailable, RoomInfo

log = logging.getLogger(__name__)


class Session:
    """Frame handling for one connection."""

    def __init__(self, hub: Hub, conn: Connection) -> None:
        self.hub = hub
        self.conn = conn
        self.settings = hub.settings
        self._expiry: asyncio.TimerHandle | None = None  # closes the socket at token expiry
        self._guest_base: str | None = None  # a guest's own name, before disambiguation
        self.limits = hub.limits
        self.role = "user"
        self.user_key = ""
        self._socket_rates: dict[str, Rate | None] = {}
        self._buckets: dict[str, Bucket] = {}
        self._strikes = 0  # refused frames since the last one that passed its retry window
        self._strike_until = 0.0
        self._socket_counted = False

    def error(
        self,
        code: ErrorCode,
        detail: str,
        ref: str | None = None,
        room: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.conn.send(Error(code=code, detail=detail, id=ref, room=room, retry_after=retry_after))

    async def run(self) -> None:
        """Read until the socket closes; the writer task sends in parallel.

        When the writer ends (the hub closed the socket, or gave up on a client that does
        not read), a read still waiting for the client is interrupted: the session ends
        without waiting for the client to send anything.
        """
        writer = asyncio.create_task(self.conn.write_loop(), name=f"writer:{self.conn.id}")
        auth_timer = asyncio.get_running_loop().call_later(
            self.settings.auth_timeout, self._auth_timeout
        )
        reader = asyncio.current_task()
        reading = False  # awaiting the client: the only place the writer may interrupt
        interrupted = False

        def writer_done(_: asyncio.Task[None]) -> None:
            nonlocal interrupted
            if reading and reader is not None:
                interrupted = True
                reader.cancel()

        writer.add_done_callback(writer_done)
        try:
            while not writer.done():
                reading = True
                try:
                    event = await self.conn.socket.receive()
                finally:
                    reading = False
                if event["type"] != "websocket.receive":  # disconnect (connect came before)
                    break
                data: str | bytes | None = event.get("text")
                if data is None:
                    data = event.get("bytes") or b""
                self.conn.last_seen = time.monotonic()
                await self.handle_raw(data)
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if not interrupted or (reader is not None and reader.uncancel() > 0):
                raise  # cancelled from outside (shutdown), not by the writer's end
        except Exception:  # never reaches Litestar, whose handler would close a second time
            log.exception("socket %s failed", self.conn.id)
        finally:
            writer.remove_done_callback(writer_done)
            auth_timer.cancel()
            if self._expiry is not None:
                self._expiry.cancel()
            await self.hub.sockets.unregister(self.conn)
            if self._socket_counted:
                await self.limits.close_socket(self.user_key, self.conn.id)
            if not writer.done():
                self.conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer, timeout=1)
            writer.cancel()

    def _auth_timeout(self) -> None:
        if self.conn.identity is None:
            self.conn.close(CloseCode.UNAUTHENTICATED)

    async def handle_raw(self, data: str | bytes) -> None:
        if self.conn.close_code is not None:  # closing (e.g. 1008): nothing more is processed
            return
        size = _byte_size(data, self.settings.max_frame_bytes)
        if size > self.settings.max_frame_bytes:
            self.error(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {size} bytes exceeds the limit of {self.settings.max_frame_bytes}",
            )
            return
        try:
            frame = decode_client(data)
        except FrameError as exc:
            self.error(exc.code, exc.detail, exc.ref, exc.room)
            return
        try:
            await self.dispatch(frame)
        except Exception as exc:
            if find_unavailable(exc) is not None:
                self._store_unavailable(frame, exc)
                return
            log.exception("failed to handle %s frame from %s", type(frame).__name__, self.conn.id)
            self.error(
                ErrorCode.INTERNAL,
                "internal error; the frame was not processed",
                getattr(frame, "id", None),
                getattr(frame, "room", None),
            )

    def _store_unavailable(self, frame: ClientFrame, exc: BaseException) -> None:
        """The database did not answer: a retryable error naming the frame (same ``id``)."""
        _warn_store_unavailable(exc)
        self.error(
            ErrorCode.STORE_UNAVAILABLE,
            "the database did not answer in time; nothing was stored: resend the same frame",
            getattr(frame, "id", None),
            getattr(frame, "room", None),
            retry_after=self.settings.store_retry_after,
        )

    async def dispatch(self, frame: ClientFrame) -> None:
        if isinstance(frame, Hello):
            await self.hello(frame)
            return
        if isinstance(frame, Pong):
            return
        if self.conn.identity is None:
            self.error(
                ErrorCode.NOT_AUTHENTICATED,
                "send 'hello' with a token first",
                getattr(frame, "id", None),
                getattr(frame, "room", None),
            )
            return
        match frame:
            case Join():
                await self.join(frame)
            case Leave():
                await self.hub.rooms.leave(self.conn, frame.room)
                self.conn.send(Left(room=frame.room, id=frame.id))
            case Send():
                wait = self._limit("messages")
                if wait < 0:
                    wait = await self.limits.take("messages", self.role, self.user_key)
                if wait:
                    self._refuse(wait, "messages", frame.id, frame.room)
                else:
                    await self.send(frame)
            case Direct():
                wait = self._limit("messages")
                if wait < 0:
                    wait = await self.limits.take("messages", self.role, self.user_key)
                if wait:
                    self._refuse(wait, "messages", frame.id, None)
                else:
                    await self.direct(frame)
            case Typing():
                # over the typing limit, typing frames are dropped silently: no error, no strike
                wait = self._limit("typing")
                if wait < 0:
                    wait = await self.limits.take("typing", self.role, self.user_key)
                if not wait and self._joined(frame.room, None):
                    assert self.conn.user is not None
                    self.hub.rooms.typing(frame.room, self.conn.user, frame.active)
            case HistoryRequest():
                await self.history(frame)
            case Cancel():
                await self.cancel(frame)
            case Command():
                wait = self._limit("commands")
                if wait < 0:
                    wait = await self.limits.take("commands", self.role, self.user_key)
                if wait:
                    self._refuse(wait, "commands", frame.id, frame.room)
                else:
                    await self.command(frame)

    # ------------------------------------------------------------ limits

    def _limit(self, kind: str) -> float:
        """This socket's bucket for ``kind``, then (embedded) the user's, without awaiting:
        0.0 to go ahead, seconds to wait, or -1.0 when the shared (Redis) bucket must decide."""
        rate = self._socket_rates.get(kind)
        if rate is not None:
            wait = self._buckets[kind].take(rate, time.monotonic())
            if wait:
                return wait
        if self.limits.local:
            return self.limits.take_now(kind, self.role, self.user_key)
        return -1.0

    def _refuse(self, wait: float, what: str, ref: str | None, room: str | None) -> None:
        """Answer ``rate_limited``; the ``limit_strikes``-th refusal within the retry window
        (a client ignoring ``retry_after``) closes the socket with 1008."""
        now = time.monotonic()
        if now >= self._strike_until:
            self._strikes = 0
        self._strikes += 1
        self._strike_until = max(self._strike_until, now + wait)
        retry_after = math.ceil(wait * 1000) / 1000
        self.conn.send(
            Error(
                code=ErrorCode.RATE_LIMITED,
                detail=f"too many {what}; try again in {retry_after:g} s",
                id=ref,
                room=room,
                retry_after=retry_after,
            )
        )
        if self._strikes >= self.settings.limit_strikes:
            log.info(
                "closing %s (%s): %d frames refused within their retry window",
                self.conn.id,
                self.user_key,
                self._strikes,
            )
            self.conn.close(CloseCode.POLICY_VIOLATION)

    # ------------------------------------------------------------ frames

    async def hello(self, frame: Hello) -> None:
        """Authenticate; on an authenticated socket, re-authenticate in place (a fresh token
        of the same user: new expiry and roles, rooms kept) and answer ``welcome`` again."""
        if self.conn.identity is not None:
            await self._reauthenticate(frame)
            return
        identity: Identity
        if frame.token is None:
            if not self.settings.allow_guests:
                self.error(
                    ErrorCode.NOT_AUTHENTICATED, "a token is required: guests are not allowed"
                )
                return
            identity = guest_identity(frame.name)
            self._guest_base = identity.name  # made unique per room from this on join
            identity = msgspec.structs.replace(
                identity, name=await guest_name(self.hub.store, identity.name)
            )
        else:
            verified = self._verify(frame.token)
            if verified is None:
                return
            identity = verified
        role = role_of(identity)
        if not await self.limits.open_socket(role, identity.id, self.conn.id):
            log.info("refusing a socket of %s: too many open", identity.id)
            self.conn.send(
                Error(
                    code=ErrorCode.RATE_LIMITED,
                    detail=f"too many open sockets for {identity.id!r}; close one first",
                    retry_after=max(1.0, self.settings.presence_ttl / 3),
                )
            )
            self.conn.close(CloseCode.TRY_AGAIN_LATER)
            return
        self._socket_counted = True
        self.role, self.user_key = role, identity.id
        self.limits.note_role(identity.id, role)
        now = time.monotonic()
        for kind in ("messages", "typing", "commands"):
            rate = self.limits.rate(f"{kind}_socket", role)
            self._socket_rates[kind] = rate
            if rate is not None:
                self._buckets[kind] = Bucket(rate.burst, now)
        self.conn.identity = identity
        self.conn.user = UserRef(id=identity.id, name=identity.name, guest=identity.is_guest)
        await self.hub.users.seen(identity)
        await self.hub.sockets.register(self.conn)
        if self.hub.revocations.is_revoked(identity.jti):  # revoked while registering
            self.hub.revocations.apply(identity.jti or "")
            return
        self._arm_expiry(identity)
        self._welcome()

    # -------------------------------------------------- identity: token expiry and re-auth

    def _verify(self, token: str) -> Identity | None:
        """The token's identity, or None after an error frame (expired, revoked, invalid)."""
        try:
            identity = verify_token(token, self.hub.secret)
        except TokenExpired:
            self.error(ErrorCode.TOKEN_EXPIRED, "the token has expired; get a new one")
            return None
        except NotAuthorizedException:
            self.error(ErrorCode.AUTH_FAILED, "the token is invalid or forged")
            return None
        if self.hub.revocations.is_revoked(identity.jti):
            self.error(ErrorCode.TOKEN_REVOKED, "the token was revoked; get a new one")
            return None
        return identity

    async def _reauthenticate(self, frame: Hello) -> None:
        assert self.conn.identity is not None
        current = self.conn.identity
        if frame.token is None:
            self.error(
                ErrorCode.ALREADY_AUTHENTICATED,
                "this connection is authenticated already (send hello with a fresh token "
                "of the same user to extend it)",
            )
            return
        identity = self._verify(frame.token)
        if identity is None:
            return
        if identity.id != current.id:
            self.error(
                ErrorCode.ALREADY_AUTHENTICATED,
                f"this connection belongs to {current.id!r}; a token of another user "
                "cannot take it over (open a new connection)",
            )
            return
        self.conn.identity = identity  # new expiry, token id and roles; name and rooms kept
        await self.hub.users.seen(identity)
        self._arm_expiry(identity)
        self._welcome()

    def _arm_expiry(self, identity: Identity) -> None:
        """Close the socket when its token expires (``token_expired``, close 4401)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if identity.exp is not None:
            delay = max(0.0, identity.exp - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._expiry = None
        self.error(
            ErrorCode.TOKEN_EXPIRED,
            "the token has expired: reconnect with a fresh one (or re-authenticate in place "
            "with hello before it expires)",
        )
        self.conn.close(CloseCode.UNAUTHENTICATED)

    def _welcome(self) -> None:
        assert self.conn.identity is not None and self.conn.user is not None
        self.conn.send(
            Welcome(
                user=self.conn.user,
                session=self.conn.id,
                roles=list(self.conn.identity.roles),
                heartbeat_interval=self.settings.heartbeat_interval,
                heartbeat_timeout=self.settings.heartbeat_timeout,
                typing_ttl=self.settings.typing_ttl,
                max_frame_bytes=self.settings.max_frame_bytes,
            )
        )

    async def _guest_name_for(self, room_id: str) -> None:
        """Make a guest's display name unique in ``room_id``: no member's or present user's
        name (``Bob (guest)``, ``Bob (guest 2)``, ...). Renames this socket's user."""
        user = self.conn.user
        assert user is not None
        taken = {m.user_name for m in await self.hub.store.members(room_id)}
        taken |= {
            e.user.name for e in await self.hub.presence.snapshot(room_id) if e.user.id != user.id
        }
        base = self._guest_base or user.name
        if user.name != base:
            taken.add(base)  # a known user's name: marked at hello, stays marked
        name = unique_guest_name(base, taken)
        if name != user.name:
            self.conn.user = msgspec.structs.replace(user, name=name)

    # -------------------------------------------------- rooms

    async def join(self, frame: Join) -> None:
        assert self.conn.identity is not None and self.conn.user is not None
        room = await self._room(frame.room, frame.id)
        if room is None:
            return
        if room.kind == "public" and not self.conn.identity.is_guest:
            await self.hub.store.add_member(room.id, self.conn.user.id, self.conn.user.name)
        if self.conn.identity.is_guest and room.id not in self.conn.rooms:
            await self._guest_name_for(room.id)
        await self.hub.rooms.join(
            self.conn, room.id, room.name, room.epoch, frame.since, frame.epoch, frame.id
        )

    async def _room(self, room_id: str, ref: str | None) -> RoomInfo | None:
        """The room, if it exists and this socket may see it; else an error is sent."""
        assert self.conn.identity is not None
        try:
            return await self.hub.visible_room(room_id, self.conn.identity)
        except RoomNotVisible as exc:
            self.error(exc.code, exc.detail, ref, room_id)
            return None

    def _joined(self, room_id: str, ref: str | None) -> bool:
        if self.hub.rooms.is_joined(self.conn, room_id):
            return True
        self.error(ErrorCode.NOT_JOINED, f"join {room_id!r} first", ref, room_id)
        return False

    def _text_ok(self, text: str, ref: str | None, room: str | None = None) -> bool:
        """A command's text follows the hub's rule for a message's text (not blank, size)."""
        try:
            self.hub.check_message(text)
        except MessageRefused as exc:
            self.error(exc.code, exc.detail, ref, room)
            return False
        return True

    async def send(self, frame: Send) -> None:
        """Post into a joined room; the hub's rules (text, attachments) refuse as ``error``."""
        assert self.conn.user is not None
        try:  # the hub's rule first (as before joining is checked), then its full check below
            self.hub.check_message(frame.text, attachments=len(frame.attachments))
        except MessageRefused as exc:
            self.error(exc.code, exc.detail, frame.id, frame.room)
            return
        if not self._joined(frame.room, frame.id):
            return
        self.hub.rooms.stop_typing(frame.room, self.conn.user)
        try:
            message, duplicate = await self.hub.post_message(
                frame.room,
                self.conn.user,
                frame.text,
                client_id=frame.id,
                reply_to=frame.reply_to,
                attachments=frame.attachments,
            )
        except MessageRefused as exc:
            self.error(exc.code, exc.detail, frame.id, frame.room)
            return
        if frame.id is not None:
            self.conn.send(
                Ack(id=frame.id, room=frame.room, offset=message.offset, duplicate=duplicate)
            )

    async def direct(self, frame: Direct) -> None:
        assert self.conn.user is not None
        if frame.to == self.conn.user.id:
            self.error(
                ErrorCode.INVALID_FRAME, "cannot send a direct message to yourself", frame.id
            )
            return
        try:
            self.hub.check_message(frame.text)  # before anything else: the hub's one rule
        except MessageRefused as exc:
            self.error(exc.code, exc.detail, frame.id)
            return
        try:
            msgspec.convert(self.conn.user.id, UserId)
        except msgspec.ValidationError:
            self.error(
                ErrorCode.FORBIDDEN,
                "your user id cannot be used in direct messages "
                "(letters, digits, _ . @ - and at most 48 characters)",
                frame.id,
            )
            return
        assert self.conn.identity is not None
        refusal = await dm_refusal(
            self.hub.users,
            self.conn.identity,
            frame.to,
            guest_dm_targets=self.hub.settings.guest_dm_targets,
            room=self.hub.room,
        )
        if refusal is not None:
            self.error(refusal[0], refusal[1], frame.id)
            return
        try:
            message, duplicate = await self.hub.post_direct(
                self.conn.user, UserRef(id=frame.to, name=frame.to), frame.text, frame.id
            )
        except MessageRefused as exc:
            self.error(exc.code, exc.detail, frame.id)
            return
        except DmRoomUnavailable as exc:
            log.error("DM room %s is squatted: run `lydian migrate` to repair it", exc.args[0])
            self.error(
                ErrorCode.FORBIDDEN,
                "the direct-message room of this pair is not available; an admin must repair it",
                frame.id,
            )
            return
        if frame.id is not None:
            self.conn.send(
                Ack(id=frame.id, room=message.room, offset=message.offset, duplicate=duplicate)
            )

    async def history(self, frame: HistoryRequest) -> None:
        assert self.conn.identity is not None
        room = await self._room(frame.room, frame.id)
        if room is None:
            return
        limit = min(frame.limit, self.settings.history_page_max)
        page = await self.hub.queries.messages_before(room.id, frame.before, limit + 1)
        has_more = len(page) > limit
        self.conn.send(
            History(
                room=room.id,
                messages=page[-limit:] if has_more else page,
                has_more=has_more,
                id=frame.id,
            )
        )

    async def cancel(self, frame: Cancel) -> None:
        """Stop a streamed answer for everyone (asker, room owner, admins); acked if ``id``."""
        assert self.conn.identity is not None
        if not self._joined(frame.room, frame.id):
            return
        try:
            await self.hub.streams.cancel(frame.room, frame.stream_id, self.conn.identity)
        except CancelRefused as exc:
            self.error(exc.code, exc.detail, frame.id, frame.room)
            return
        if frame.id is not None:
            self.conn.send(Ack(id=frame.id, room=frame.room))

    async def command(self, frame: Command) -> None:
        """Run a chat-ops command in a joined room; reply ``command_result`` or ``error``.

        It runs in the background so that a slow plugin never stalls this socket. A plain
        ``send`` is never a command: clients turn a leading ``/`` into a ``command`` frame.
        """
        assert self.conn.identity is not None
        if not self._joined(frame.room, frame.id) or not self._text_ok(
            frame.text, frame.id, room=frame.room
        ):
            return
        identity = self.conn.identity

        async def run() -> None:
            try:
                reply = await self.hub.plugins.run_command(
                    self.hub, identity, frame.room, frame.text, frame.id
                )
            except Exception as exc:
                if find_unavailable(exc) is not None:
                    self._store_unavailable(frame, exc)
                    return
                log.exception("command %r in %s failed", redact(frame.text)[:100], frame.room)
                self.error(ErrorCode.INTERNAL, "the command failed", frame.id, frame.room)
                return
            self.conn.send(reply)

        self.hub.spawn(run(), name=f"command:{frame.room}")


_last_store_warning = 0.0


def _warn_store_unavailable(exc: BaseException) -> None:
    """One warning line per 10 s while the database is away, not one per frame."""
    global _last_store_warning
    now = time.monotonic()
    if now - _last_store_warning >= 10:
        _last_store_warning = now
        log.warning("store unavailable, frames refused with store_unavailable: %s", exc)


def _byte_size(data: str | bytes, limit: int) -> int:
    """The UTF-8 size of a frame, or its character count when that is surely within ``limit``
    (a character is at most 4 bytes): ordinary frames are measured without a copy."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:
        return len(data)
    return len(data.encode())


@websocket("/ws")
async def ws_endpoint(socket: WebSocket) -> None:
    """The hub's WebSocket: send ``hello`` first, then any client frame (docs/protocol.md)."""
    hub: Hub = socket.app.state.hub
    await socket.accept()
    conn = Connection(socket, hub.settings.send_queue_frames, hub.rooms.slow_consumers)
    await Session(hub, conn).run()
