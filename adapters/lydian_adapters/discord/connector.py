"""Sending to Discord through discord.py's REST client: post, edit, delete.

With ``use_webhooks`` (the default) and the bot allowed to manage webhooks in a channel,
copies go through one channel webhook named ``Lydian bridge``, under the author's name and
avatar. Otherwise the bot posts them itself, starting with the author's name in bold.
discord.py honours 429 / ``Retry-After`` and the ``X-RateLimit-*`` buckets; waits longer
than ``max_ratelimit_wait`` come back as :class:`discord.RateLimited` and are retried by
the outbox.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
import discord
from discord.webhook.async_ import async_context

from hub.sdk import Attachment, UserRef
from lydian_adapters.bridge.connector import PLACEHOLDER, Connector, attachment_lines
from lydian_adapters.bridge.outbox import PermanentError, RateLimited

log = logging.getLogger(__name__)

MAX_CONTENT = 2000
WEBHOOK_NAME = "Lydian bridge"


def _cap(text: str, room: int = MAX_CONTENT) -> str:
    body = text or PLACEHOLDER
    return body if len(body) <= room else body[: room - 1] + "…"


def render(author: UserRef, text: str) -> str:
    """A copy posted by the bot itself: ``**Name**: text`` (capped at 2000)."""
    prefix = f"**{discord.utils.escape_markdown(author.name)}**: "
    return prefix + _cap(text, MAX_CONTENT - len(prefix))


class DiscordConnector(Connector):
    platform = "discord"

    def __init__(
        self,
        client: discord.Client,
        *,
        edit_interval: float = 1.0,
        public_url: str = "",
        use_webhooks: bool = True,
    ) -> None:
        self.client = client
        self.edit_interval = edit_interval
        self.public_url = public_url
        self.use_webhooks = use_webhooks
        self._webhooks: dict[str, discord.Webhook | None] = {}
        self._hooked: dict[str, discord.Webhook] = {}  # message id -> the webhook that posted it

    def _channel(self, channel: str) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(channel))

    async def _do(self, coro: Awaitable[Any]) -> Any:
        use_api = getattr(self.client, "use_api", None)  # webhook requests to its api_url
        token = use_api() if use_api is not None else None
        try:
            return await coro
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
        finally:
            if token is not None:
                async_context.reset(token)

    async def webhook(self, channel: str) -> discord.Webhook | None:
        """The channel's bridge webhook (found or created once), or None if not allowed."""
        if not self.use_webhooks:
            return None
        if channel in self._webhooks:
            return self._webhooks[channel]
        hook: discord.Webhook | None = None
        try:
            existing = await self.client.http.channel_webhooks(int(channel))
            data = next(
                (h for h in existing if h.get("name") == WEBHOOK_NAME and h.get("token")), None
            )
            if data is None:
                data = await self.client.http.create_webhook(int(channel), name=WEBHOOK_NAME)
            hook = discord.Webhook.from_state(data, self.client._connection)
        except (discord.Forbidden, discord.NotFound) as exc:
            log.info("no webhook in Discord channel %s (%s): the bot posts itself", channel, exc)
        except discord.HTTPException as exc:
            if exc.status >= 500 or exc.status == 429:
                raise  # transient: the outbox retries, and so will this lookup
            log.info("no webhook in Discord channel %s (%s): the bot posts itself", channel, exc)
        self._webhooks[channel] = hook
        return hook

    def is_own_webhook(self, webhook_id: int | None) -> bool:
        return webhook_id is not None and any(
            h is not None and h.id == webhook_id for h in self._webhooks.values()
        )

    async def post(
        self, channel: str, author: UserRef, text: str, attachments: list[Attachment]
    ) -> str:
        extra = attachment_lines(attachments, self.public_url)
        body = f"{text}\n{extra}" if text and extra else (text or extra)
        none = discord.AllowedMentions.none()
        hook = await self.webhook(channel)
        if hook is not None:
            message = await self._do(
                hook.send(
                    _cap(body),
                    username=(author.name or "someone")[:80],
                    avatar_url=author.avatar or discord.utils.MISSING,
                    allowed_mentions=none,
                    wait=True,
                )
            )
            self._hooked[str(message.id)] = hook
            return str(message.id)
        message = await self._do(
            self._channel(channel).send(render(author, body), allowed_mentions=none)
        )
        return str(message.id)

    async def notice(self, channel: str, platform_msg: str, user_id: str, text: str) -> None:
        """A reply to the message (Discord has no ephemeral messages outside interactions),
        pinging nobody."""
        partial = self._channel(channel).get_partial_message(int(platform_msg))
        none = discord.AllowedMentions.none()
        await self._do(partial.reply(_cap(text), allowed_mentions=none, mention_author=False))

    async def reply(self, channel: str, platform_msg: str, text: str) -> None:
        """A reply to the message, as the bot, pinging nobody."""
        partial = self._channel(channel).get_partial_message(int(platform_msg))
        none = discord.AllowedMentions.none()
        await self._do(partial.reply(_cap(text), allowed_mentions=none, mention_author=False))

    async def reply_file(
        self, channel: str, platform_msg: str, text: str, filename: str, data: bytes
    ) -> None:
        """A reply to the message carrying the file (a ``discord.File``), as the bot,
        pinging nobody."""
        partial = self._channel(channel).get_partial_message(int(platform_msg))
        none = discord.AllowedMentions.none()
        attached = discord.File(io.BytesIO(data), filename=filename)
        await self._do(
            partial.reply(_cap(text), file=attached, allowed_mentions=none, mention_author=False)
        )

    async def edit(self, channel: str, platform_msg: str, author: UserRef, text: str) -> None:
        hook = self._hooked.get(platform_msg)
        if hook is not None:
            await self._do(hook.edit_message(int(platform_msg), content=_cap(text)))
            return
        partial = self._channel(channel).get_partial_message(int(platform_msg))
        await self._do(partial.edit(content=render(author, text)))

    async def delete(self, channel: str, platform_msg: str) -> None:
        hook = self._hooked.pop(platform_msg, None)
        if hook is not None:
            await self._do(hook.delete_message(int(platform_msg)))
            return
        partial = self._channel(channel).get_partial_message(int(platform_msg))
        await self._do(partial.delete())
