"""Who is online in which room. A user with several connections stays online until the last goes.

:class:`Presence` is the interface; :class:`MemoryPresence` is the embedded default. A
shared implementation (Redis with expiry) keeps the same methods so that several
replicas report one presence.
"""

from __future__ import annotations

from typing import Protocol

from hub.base.protocol import PresenceEntry, UserRef


class Presence(Protocol):
    async def connect(self, room: str, user: UserRef, conn_id: str) -> bool:
        """Record a connection of ``user`` in ``room``; True when the user just came online."""
        ...

    async def disconnect(self, room: str, user_id: str, conn_id: str) -> bool:
        """Forget one connection; True when it was the user's last one in the room."""
        ...

    async def snapshot(self, room: str) -> list[PresenceEntry]:
        """Everyone online in ``room``, ordered by user id."""
        ...


class MemoryPresence:
    """Presence for a single process."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, tuple[UserRef, set[str]]]] = {}

    async def connect(self, room: str, user: UserRef, conn_id: str) -> bool:
        users = self._rooms.setdefault(room, {})
        entry = users.get(user.id)
        if entry is None:
            users[user.id] = (user, {conn_id})
            return True
        entry[1].add(conn_id)
        return False

    async def disconnect(self, room: str, user_id: str, conn_id: str) -> bool:
        users = self._rooms.get(room, {})
        entry = users.get(user_id)
        if entry is None or conn_id not in entry[1]:
            return False
        entry[1].discard(conn_id)
        if entry[1]:
            return False
        del users[user_id]
        if not users:
            self._rooms.pop(room, None)
        return True

    async def snapshot(self, room: str) -> list[PresenceEntry]:
        users = self._rooms.get(room, {})
        return [PresenceEntry(user=users[uid][0]) for uid in sorted(users)]
