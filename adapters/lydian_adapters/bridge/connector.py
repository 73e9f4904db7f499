"""What a platform adapter provides to the bridge: post, edit, delete, and streamed answers.

Methods raise :class:`adapters.bridge.outbox.RateLimited` on a 429 and
:class:`adapters.bridge.outbox.PermanentError` when retrying cannot help; anything else is
retried by the outbox. The stream methods default to post-then-edit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from hub.sdk import Attachment, UserRef

PLACEHOLDER = "…"
STOPPED = "(stopped)"


class StreamState(msgspec.Struct):
    """One streamed answer as mirrored into one platform channel."""

    room: str
    stream_id: str
    agent: UserRef
    text: str = ""
    platform_msg: str | None = None
    thread: str | None = None  # platform id of the message being answered, if known there
    edit_queued: bool = False
    last_edit: float = 0.0
    finished: bool = False
    extra: dict[str, Any] = {}


class FileTooLarge(Exception):
    """A platform file over the hub's upload limit (not fetched, or cut off while read)."""


@dataclass
class PlatformFile:
    """A file shared on a platform, to be fetched into the hub (``BridgeService.ingest``).

    ``fetch(max_bytes)`` returns its bytes with the platform's auth, raising
    :class:`FileTooLarge` past ``max_bytes`` and any other exception on failure; ``link`` is
    the external attachment the message keeps when the file cannot be brought in."""

    name: str
    media_type: str
    size: int
    fetch: Callable[[int], Awaitable[bytes]]
    link: Attachment


class Connector:
    """Base class of a platform connector; subclasses set ``platform`` and implement sends."""

    platform: str = ""
    edit_interval: float = 1.0
    """Minimum seconds between two edits of one streamed message (the platform's rate)."""

    async def post(
        self, channel: str, author: UserRef, text: str, attachments: list[Attachment]
    ) -> str:
        """Post a message in ``channel`` on behalf of ``author``; return its platform id."""
        raise NotImplementedError

    async def edit(self, channel: str, platform_msg: str, author: UserRef, text: str) -> None:
        raise NotImplementedError

    async def delete(self, channel: str, platform_msg: str) -> None:
        raise NotImplementedError

    async def notice(self, channel: str, platform_msg: str, user_id: str, text: str) -> None:
        """Tell the author of ``platform_msg`` something about it (e.g. that the hub refused
        it), as privately as the platform allows. By default nothing is sent (logged only)."""

    async def reply(self, channel: str, platform_msg: str, text: str) -> None:
        """Answer ``platform_msg`` in its thread (Slack ``thread_ts``, a Discord reply), as
        the bot: e.g. what an attachment handler made of a file. Nothing by default."""

    async def reply_file(
        self, channel: str, platform_msg: str, text: str, filename: str, data: bytes
    ) -> None:
        """Answer ``platform_msg`` in its thread with a file (``data`` named ``filename``)
        and ``text`` saying what it is, as the bot: e.g. a handler's long extracted text.
        Raises :class:`NotImplementedError` where files are not supported (the default);
        the bridge then replies with the text cut, and so it does on any other error."""
        raise NotImplementedError

    async def stream_open(self, channel: str, stream: StreamState) -> str:
        """Create the message that will hold a streamed answer; return its platform id."""
        return await self.post(channel, stream.agent, stream.text or PLACEHOLDER, [])

    async def stream_update(self, channel: str, stream: StreamState, text: str) -> None:
        assert stream.platform_msg is not None
        await self.edit(channel, stream.platform_msg, stream.agent, text or PLACEHOLDER)

    async def stream_close(
        self, channel: str, stream: StreamState, text: str, cancelled: bool
    ) -> None:
        assert stream.platform_msg is not None
        empty = STOPPED if cancelled else PLACEHOLDER
        await self.edit(channel, stream.platform_msg, stream.agent, text or empty)


def attachment_lines(attachments: list[Attachment], base_url: str | None) -> str:
    """Attachments as one line each (name and link) for platforms that get them as text."""
    lines = []
    for item in attachments:
        url = item.url
        if url.startswith("/") and base_url:
            url = base_url.rstrip("/") + url
        lines.append(f"📎 {item.name} ({item.media_type}, {item.size} bytes): {url}")
    return "\n".join(lines)
