"""The query cache: the store's hot reads (room lists, rooms, history pages) through the
:class:`~hub.cache.manager.CacheManager`, dropped by events the moment the data changes.

Events: ``room:<id>`` when a room gets a message, a member or is created; ``rooms`` when
any room or membership changes (room lists depend on both). The store announces every
committed write (:meth:`hub.store.store.Store.on_change`), so every path that writes (REST,
gateway, commands, DMs) invalidates before its caller sees the result: no stale page.
"""

from __future__ import annotations

from hub.base.protocol import ChatMessage
from hub.cache.manager import CacheManager
from hub.store.store import RoomInfo, Store

ROOMS_EVENT = "rooms"
NAMESPACE = "query"


def room_event(room_id: str) -> str:
    return f"room:{room_id}"


class QueryCache:
    """Cached reads over a :class:`Store`, invalidated through its change notifications."""

    def __init__(self, store: Store, cache: CacheManager, ttl: float | None = 300.0) -> None:
        self.store = store
        self.cache = cache
        cache.configure(NAMESPACE, strategy="ttl", ttl=ttl)
        store.on_change(self.changed)

    async def changed(self, kind: str, room_id: str) -> None:
        """Store callback: ``kind`` is ``message``, ``member`` or ``room``."""
        if kind == "message":
            await self.cache.invalidate(event=room_event(room_id))
        else:
            await self.cache.invalidate(events=(room_event(room_id), ROOMS_EVENT))

    async def list_rooms(self, user_id: str | None) -> list[RoomInfo]:
        return await self.cache.get(
            f"rooms:{user_id or ''}",
            lambda: self.store.list_rooms(user_id),
            namespace=NAMESPACE,
            type=list[RoomInfo],
            events=(ROOMS_EVENT,),
        )

    async def get_room(self, room_id: str) -> RoomInfo | None:
        return await self.cache.get(
            f"room:{room_id}",
            lambda: self.store.get_room(room_id),
            namespace=NAMESPACE,
            type=RoomInfo | None,
            events=(room_event(room_id),),
        )

    async def messages_before(
        self, room_id: str, before: int | None, limit: int
    ) -> list[ChatMessage]:
        return await self.cache.get(
            f"before:{room_id}:{before}:{limit}",
            lambda: self.store.messages_before(room_id, before, limit),
            namespace=NAMESPACE,
            type=list[ChatMessage],
            events=(room_event(room_id),),
        )

    async def messages_after(self, room_id: str, after: int, limit: int) -> list[ChatMessage]:
        return await self.cache.get(
            f"after:{room_id}:{after}:{limit}",
            lambda: self.store.messages_after(room_id, after, limit),
            namespace=NAMESPACE,
            type=list[ChatMessage],
            events=(room_event(room_id),),
        )
