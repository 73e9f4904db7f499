"""``HubAPI``: every operation a plugin may call on the hub (the ``hub`` hook argument).

:class:`hub.core.Hub` implements it; plugins and adapters see only this protocol (through
:mod:`hub.sdk`), never the hub's services.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from hub.base.auth import Identity
from hub.base.config import Settings
from hub.base.protocol import Attachment, ChatMessage, UserRef
from hub.store.store import RoomInfo


class HubAPI(Protocol):
    """The hub as a plugin sees it."""

    @property
    def settings(self) -> Settings:
        """The hub's effective settings (read only)."""
        ...

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
        """Validate, persist and publish a message; ``(message, duplicate)``.
        Raises :class:`hub.base.errors.MessageRefused` (nothing stored)."""
        ...

    async def visible_room(self, room_id: str, identity: Identity) -> RoomInfo:
        """The room if it exists and ``identity`` may see it, else
        :class:`hub.base.errors.RoomNotVisible`."""
        ...

    def spawn(self, coro: Awaitable[Any], name: str | None = None) -> Any:
        """Run background work owned by the hub (cancelled on shutdown, errors logged)."""
        ...
