"""Sending to Discord through discord.py's REST client: post, edit, delete.

A bot cannot post under another name, so copies start with the author's name in bold.
discord.py itself honours 429 / ``Retry-After`` and the ``X-RateLimit-*`` buckets; waits
longer than ``max_ratelimit_wait`` come back as :class:`discord.RateLimited` and are
retried by the outbox.
"""

from __future__ import annotations

import aiohttp
import discord

from adapters.bridge.connector import PLACEHOLDER, Connector, attachment_lines
from adapters.bridge.outbox import PermanentError, RateLimited
from hub.protocol import Attachment, UserRef

MAX_CONTENT = 2000


def render(author: UserRef, text: str) -> str:
    """What a bridged message looks like on Discord: ``**Name**: text`` (capped at 2000)."""
    prefix = f"**{discord.utils.escape_markdown(author.name)}**: "
    body = text or PLACEHOLDER
    if len(prefix) + len(body) > MAX_CONTENT:
        body = body[: MAX_CONTENT - len(prefix) - 1] + "…"
    return prefix + body


class DiscordConnector(Connector):
    platform = "discord"

    def __init__(self, client: discord.Client, *, edit_interval: float = 1.0, public_url: str = ""):
        self.client = client
        self.edit_interval = edit_interval
        self.public_url = public_url

    def _channel(self, channel: str) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(channel))

    async def _do(self, coro: object) -> object:
        try:
            return await coro  # type: ignore[misc]
        except discord.RateLimited as exc:
            raise RateLimited(exc.retry_after, "Discord rate limit") from None
        except (discord.NotFound, discord.Forbidden) as exc:
            raise PermanentError(f"Discord: {exc}") from None
        except discord.HTTPException as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                raise PermanentError(f"Discord: {exc}") from None
            raise
        except aiohttp.ClientError:
            raise

    async def post(
        self, channel: str, author: UserRef, text: str, attachments: list[Attachment]
    ) -> str:
        extra = attachment_lines(attachments, self.public_url)
        body = f"{text}\n{extra}" if text and extra else (text or extra)
        message = await self._do(
            self._channel(channel).send(
                render(author, body), allowed_mentions=discord.AllowedMentions.none()
            )
        )
        return str(message.id)  # type: ignore[attr-defined]

    async def edit(self, channel: str, platform_msg: str, author: UserRef, text: str) -> None:
        partial = self._channel(channel).get_partial_message(int(platform_msg))
        await self._do(partial.edit(content=render(author, text)))

    async def delete(self, channel: str, platform_msg: str) -> None:
        partial = self._channel(channel).get_partial_message(int(platform_msg))
        await self._do(partial.delete())
