"""Refusals every door reports the same way: a message the hub will not store, a room an
identity may not see, a command that failed in an expected way."""

from __future__ import annotations

from enum import StrEnum

from hub.base.protocol import ErrorCode


class Refusal(StrEnum):
    """Why :meth:`hub.core.Hub.post_message` refused a message (stable, for doors and logs)."""

    BLANK = "blank"
    TOO_LONG = "too_long"
    TOO_MANY_ATTACHMENTS = "too_many_attachments"
    UNKNOWN_ATTACHMENT = "unknown_attachment"


class MessageRefused(Exception):
    """A message the hub will not store: the same refusal whichever door it came through.

    ``code`` is the wire :class:`ErrorCode` (``invalid_frame``), ``reason`` says which rule
    (:class:`Refusal`) and ``detail`` is the sentence every door shows. Nothing was stored.
    """

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.code = ErrorCode.INVALID_FRAME
        self.reason = reason
        self.detail = detail


class RoomNotVisible(Exception):
    """:meth:`hub.core.Hub.visible_room`: the room does not exist (``UNKNOWN_ROOM``) or this
    identity may not see it (``FORBIDDEN``)."""

    def __init__(self, code: ErrorCode, room_id: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.room_id = room_id
        self.detail = detail

    @property
    def missing(self) -> bool:
        return self.code == ErrorCode.UNKNOWN_ROOM


class CommandError(Exception):
    """A command failed in an expected way; ``detail`` goes back to the caller.

    Defined here, at the ground floor, so that services below the plugin host (model limits:
    :class:`hub.access.limits.ModelRefused`) can refuse a command without importing it."""

    code = "usage"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
