"""Who may talk to whom: known users, token revocation, guests' DM targets and names.

* :class:`KnownUsers` records authenticated (non-guest) users when they say hello or use a
  REST token (once an hour per process, not per request): a DM goes only to a known user.
* :class:`Revocations` keeps the revoked token ids in a set loaded from the database at
  start, updated on every replica through the broker (``hub:revoked``) and reloaded
  periodically and after a broker outage; a revoked token is refused everywhere and its
  sockets are closed (``token_revoked``, close 4403).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from hub.base.auth import Identity
from hub.base.protocol import CloseCode, Error, ErrorCode
from hub.realtime.broker import Broker
from hub.realtime.connection import Connection, Outbox
from hub.store.store import RoomInfo, Store, dm_room_id

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]
"""Runs a background task owned by the hub: ``spawn(coro, name)`` (``Hub.spawn``)."""

REVOKE_CHANNEL = "hub:revoked"
TOUCH_INTERVAL = 3600.0
"""A user's ``last_seen`` is refreshed at most this often per process."""


def user_kind(identity: Identity) -> str:
    if identity.is_admin:
        return "admin"
    if "agent" in identity.roles:
        return "agent"
    return "user"


class KnownUsers:
    """The users this hub has seen; cached in-process, persisted in ``lydian_user``."""

    def __init__(self, store: Store, spawn: Spawn) -> None:
        self.store = store
        self.spawn = spawn
        self._touched: dict[str, float] = {}  # user id -> monotonic time of the last write
        self._kinds: dict[str, str] = {}  # known users' kinds (positive answers only)

    def _due(self, identity: Identity) -> bool:
        """True (and marked as done) if ``identity`` should be written now: not a guest, and
        not recorded by this process within :data:`TOUCH_INTERVAL`."""
        if identity.is_guest:
            return False
        now = time.monotonic()
        last = self._touched.get(identity.id)
        if last is not None and now - last < TOUCH_INTERVAL:
            return False
        self._touched[identity.id] = now
        self._kinds[identity.id] = user_kind(identity)
        return True

    async def seen(self, identity: Identity) -> None:
        """Record an authenticated non-guest user (at most once an hour per process)."""
        if self._due(identity):
            await self._record(identity)

    def seen_soon(self, identity: Identity) -> None:
        """:meth:`seen` in the background (REST requests do not wait for it)."""
        if self._due(identity):
            self.spawn(self._record(identity), "users:seen")

    async def _record(self, identity: Identity) -> None:
        try:
            await self.store.touch_user(identity.id, identity.name, user_kind(identity))
        except Exception as exc:  # not fatal: the user is known in this process; retried later
            self._touched.pop(identity.id, None)
            log.warning("could not record user %s: %s", identity.id, exc)

    async def kind(self, user_id: str) -> str | None:
        """``user``, ``admin``, ``agent`` or ``member`` (only a room member so far); None if
        the hub has never seen ``user_id``. Unknown answers are not cached."""
        kind = self._kinds.get(user_id)
        if kind is None:
            kind = await self.store.user_kind(user_id)
            if kind is not None:
                self._kinds[user_id] = kind
        return kind


async def dm_refusal(
    users: KnownUsers,
    sender: Identity,
    to: str,
    *,
    guest_dm_targets: str,
    room: Callable[[str], Awaitable[RoomInfo | None]],
) -> tuple[ErrorCode, str] | None:
    """Why ``sender`` may not DM ``to`` (code and detail), or None if they may.

    Members and admins may DM any known user, and reply to whoever has a DM room with them
    (a guest who wrote first; ``room`` looks it up). Guests may DM whom ``guest_dm_targets``
    allows: ``none``, ``admins``, ``any`` (any known user) or a comma-separated list of ids.
    """
    if sender.is_guest:
        policy = guest_dm_targets.strip()
        if policy == "none" or not policy:
            return ErrorCode.FORBIDDEN, "guests cannot send direct messages on this hub"
        if policy not in ("admins", "any"):
            allowed = {p.strip() for p in policy.split(",") if p.strip()}
            if to not in allowed:
                return ErrorCode.FORBIDDEN, f"guests cannot send direct messages to {to!r}"
            return None
        kind = await users.kind(to)
        if kind is None:
            return ErrorCode.UNKNOWN_USER, f"no user {to!r} on this hub"
        if policy == "admins" and kind != "admin":
            return ErrorCode.FORBIDDEN, "guests can send direct messages to admins only"
        return None
    if await users.kind(to) is not None:
        return None
    found = await room(dm_room_id(sender.id, to))
    if found is not None and found.kind == "dm":  # a reply: they wrote first
        return None
    return ErrorCode.UNKNOWN_USER, f"no user {to!r} on this hub"


class Revocations:
    """Revoked token ids, the same on every replica."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        spawn: Spawn,
        *,
        connections: Mapping[str, Connection],
        reload_interval: float,
    ) -> None:
        """``connections``: this process's sockets (closed when their token is revoked)."""
        self.store = store
        self.broker = broker
        self.spawn = spawn
        self.connections = connections
        self.reload_interval = reload_interval
        self.revoked: set[str] = set()
        self._unsubscribe: Callable[[], Awaitable[None]] | None = None
        self._feeds: set[Outbox] = set()  # REST feeds (SSE) that end with their token

    def is_revoked(self, jti: str | None) -> bool:
        """Tokens without an id (issued before revocation existed) are never revoked."""
        return jti is not None and jti in self.revoked

    async def setup(self) -> None:
        self.revoked = await self.store.revoked_tokens()
        self._unsubscribe = await self.broker.subscribe(REVOKE_CHANNEL, self._on_publish)
        self.broker.on_reconnect(self.reload)
        interval = self.reload_interval
        if interval > 0:
            self.spawn(self._reload_every(interval), "revocations")

    async def revoke(
        self, jti: str, *, user_id: str | None, expires_at: float | None, by: str
    ) -> bool:
        """Persist a revocation, apply it here and tell every replica; False if known."""
        expires = datetime.fromtimestamp(expires_at, UTC) if expires_at is not None else None
        new = await self.store.revoke_token(jti, user_id=user_id, expires_at=expires, by=by)
        self.apply(jti)
        try:
            await self.broker.publish(REVOKE_CHANNEL, jti.encode())
        except Exception:  # the others catch up on their next reload
            log.warning("could not announce the revocation of %s; replicas reload it", jti)
        return new

    def track(self, feed: Outbox) -> Callable[[], None]:
        """End a REST feed (SSE) when its token expires (close 4401) or is revoked (4403);
        returns the function to call when the feed ends by itself."""
        self._feeds.add(feed)
        timer = None
        exp = feed.identity.exp if feed.identity is not None else None
        if exp is not None:
            delay = max(0.0, exp - time.time())
            timer = asyncio.get_running_loop().call_later(
                delay, feed.close, CloseCode.UNAUTHENTICATED
            )

        def untrack() -> None:
            self._feeds.discard(feed)
            if timer is not None:
                timer.cancel()

        return untrack

    def _on_publish(self, data: bytes) -> None:
        self.apply(data.decode())

    def apply(self, jti: str) -> None:
        """Refuse ``jti`` from now on and close this process's sockets using it."""
        self.revoked.add(jti)
        for conn in tuple(self.connections.values()):
            if conn.identity is not None and conn.identity.jti == jti:
                log.info("closing %s (%s): its token was revoked", conn.id, conn.identity.id)
                conn.send(Error(code=ErrorCode.TOKEN_REVOKED, detail="the token was revoked"))
                conn.close(CloseCode.TOKEN_REVOKED)
        for feed in tuple(self._feeds):  # the feed sends its own error event as it ends
            if feed.identity is not None and feed.identity.jti == jti:
                feed.close(CloseCode.TOKEN_REVOKED)

    async def reload(self) -> None:
        """Read the revocations from the database (missed announcements, expired rows)."""
        current = await self.store.revoked_tokens()
        for jti in current - self.revoked:
            self.apply(jti)
        self.revoked = current

    async def _reload_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception as exc:  # the database away: keep the set we have
                log.warning("could not reload revoked tokens: %s", exc)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            with contextlib.suppress(Exception):
                await self._unsubscribe()


# ---------------------------------------------------------------------- guest names


async def guest_name(store: Store, name: str) -> str:
    """A guest's name at hello: ``Alice (guest)`` if a known user is named ``Alice``."""
    try:
        taken = await store.user_name_taken(name)
    except Exception as exc:  # the database away: rooms still make names unique on join
        log.warning("could not check guest name %r: %s", name, exc)
        return name
    return unique_guest_name(name, {name}) if taken else name


def unique_guest_name(name: str, taken: set[str]) -> str:
    """``name`` if no one in ``taken`` (casefolded) has it, else ``name (guest)``,
    ``name (guest 2)``, ... whichever is free first."""
    folded = {t.casefold() for t in taken}
    if name.casefold() not in folded:
        return name
    candidate, n = f"{name} (guest)", 1
    while candidate.casefold() in folded:
        n += 1
        candidate = f"{name} (guest {n})"
    return candidate
