"""The Discord side of the bridge: a discord.py client on the gateway, REST for sends.

Gateway events (intents: guilds, guild messages, message content, guild reactions) bring
messages, edits, deletions and 🛑 reactions; the ``/lydian`` application command runs hub
chat-ops commands as the Discord user. Messages of the bot itself and of webhooks (its
copies) and of other bots are never ingested, so bridges cannot loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from hub.sdk import Attachment
from lydian_adapters.bridge import PlatformUser, bridge_for
from lydian_adapters.bridge.connector import FileTooLarge, PlatformFile
from lydian_adapters.discord.connector import DiscordConnector
from lydian_adapters.discord.settings import DiscordSettings

if TYPE_CHECKING:
    from hub.sdk import HubAPI

log = logging.getLogger(__name__)

COMMAND_WAIT = 2.5  # Discord wants an interaction answered within 3 s


def _intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    intents.guild_reactions = True
    return intents


def _rebase(route: Route, base: str) -> None:
    """Point one request at ``base`` instead of discord.py's default API root (read, never
    written: other clients in the process keep theirs)."""
    if base and base != Route.BASE and route.url.startswith(Route.BASE):
        route.url = base + route.url[len(Route.BASE) :]


class _HTTPClient(HTTPClient):
    """discord.py's HTTP client with this client's API root and gateway (``api_url`` may
    point at a proxy or a test server)."""

    api_base = ""
    gateway: yarl.URL | None = None

    async def request(self, route: Route, **kwargs: Any) -> Any:
        _rebase(route, self.api_base)
        return await super().request(route, **kwargs)

    async def ws_connect(self, url: str, *, compress: int = 0) -> Any:
        default = str(DiscordWebSocket.DEFAULT_GATEWAY)
        if self.gateway is not None and url.startswith(default):
            # the first connection (and one after an invalidated session) uses the library's
            # default gateway; resumes use the URL the gateway itself gave (READY)
            url = str(self.gateway.with_query(yarl.URL(url).query))
        return await super().ws_connect(url, compress=compress)


class _WebhookAdapter(AsyncWebhookAdapter):
    """Webhook and interaction requests (discord.py sends them through a context-local
    adapter) to this client's API root."""

    def __init__(self, api_base: str) -> None:
        super().__init__()
        self.api_base = api_base

    async def request(self, route: Route, *args: Any, **kwargs: Any) -> Any:
        _rebase(route, self.api_base)
        return await super().request(route, *args, **kwargs)


class LydianDiscordClient(discord.Client):
    """A ``discord.Client`` talking to ``api_url`` (per client: two clients in one process
    may use different servers), with a one-time setup after login (``setup_hook``)."""

    def __init__(
        self,
        *,
        api_url: str,
        setup: Callable[[], Awaitable[None]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        http = _HTTPClient(
            self.loop,
            options.get("connector"),
            proxy=options.get("proxy"),
            proxy_auth=options.get("proxy_auth"),
            unsync_clock=options.get("assume_unsync_clock", True),
            http_trace=options.get("http_trace"),
            max_ratelimit_timeout=options.get("max_ratelimit_timeout"),
        )
        http.api_base = api_url.rstrip("/")
        self.http = http
        self._connection.http = http
        self.webhook_adapter = _WebhookAdapter(http.api_base)
        self._setup = setup
        self._set_up = False

    async def setup_hook(self) -> None:
        """Once per client, after the first successful login, not on every (re)connect."""
        if self._setup is not None and not self._set_up:
            self._set_up = True
            await self._setup()

    def use_api(self) -> contextvars.Token[AsyncWebhookAdapter]:
        """Route this task's webhook and interaction requests through this client's API
        root; ``async_context.reset(token)`` undoes it."""
        return async_context.set(self.webhook_adapter)


class DiscordAdapter:
    """One Discord bot bridged into one hub."""

    def __init__(self, hub: HubAPI, settings: DiscordSettings) -> None:
        self.hub = hub
        self.settings = settings
        self.bridge = bridge_for(hub)
        self.client = LydianDiscordClient(
            api_url=settings.api_url,
            setup=self._sync_commands,
            intents=_intents(),
            max_ratelimit_timeout=settings.max_ratelimit_wait,
            guild_ready_timeout=settings.guild_ready_timeout,
        )
        self.tree = app_commands.CommandTree(self.client)
        self.connector = DiscordConnector(
            self.client,
            edit_interval=settings.edit_interval,
            public_url=settings.public_url,
            use_webhooks=settings.use_webhooks,
        )
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._register()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.bridge.start()
        self.bridge.register(self.connector)
        self._task = self.hub.spawn(self._run(), name="discord:gateway")

    async def _run(self) -> None:
        """Log in over REST, find the gateway (``/gateway/bot``) and stay connected."""
        await self.bridge.leader.wait()  # one gateway connection per hub, in the leader
        self.client.use_api()  # this task and the event handlers it starts (interactions)
        delay = 1.0
        while True:
            try:
                await self.client.login(self.settings.bot_token)
                _, url, _ = await self.client.http.get_bot_gateway()
                self.client.http.gateway = yarl.URL(url)
                break
            except discord.LoginFailure:
                log.error("Discord rejected the bot token; the Discord adapter stays off")
                return
            except Exception as exc:
                log.warning("Discord login failed (%s); retry in %.0f s", exc, delay)
                with contextlib.suppress(Exception):
                    await self.client.http.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)
        await self.client.connect(reconnect=True)

    async def stop(self) -> None:
        self.bridge.unregister("discord")
        with contextlib.suppress(Exception):
            await self.client.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sync_commands(self) -> None:
        """Register the application command once (discord.py's ``setup_hook``), not in
        ``on_ready``, which runs again after every reconnect that cannot resume."""
        if not self.settings.sync_commands:
            return
        guild = discord.Object(int(self.settings.guild_id)) if self.settings.guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        try:
            await self.tree.sync(guild=guild)
        except discord.HTTPException as exc:
            log.warning("Discord command registration failed: %s", exc)

    # ------------------------------------------------------------ events

    def _own(self, user_id: int | None) -> bool:
        return self.client.user is not None and user_id == self.client.user.id

    def _register(self) -> None:
        client = self.client

        @client.event
        async def on_ready() -> None:  # runs again on every reconnect without a resume
            self.ready.set()

        @client.event
        async def on_message(message: discord.Message) -> None:
            await self._on_message(message)

        @client.event
        async def on_raw_message_edit(payload: discord.RawMessageUpdateEvent) -> None:
            data = payload.data.get("author") or {}
            content = payload.data.get("content")
            author = str(data.get("id") or "")
            if content is None or not author.isdigit() or self._own(int(author)):
                return
            name = str(data.get("global_name") or data.get("username") or author)[:200]
            await self.bridge.ingest_edit(
                "discord",
                str(payload.channel_id),
                str(payload.message_id),
                content,
                PlatformUser("discord", author, name),
            )

        @client.event
        async def on_raw_message_delete(payload: discord.RawMessageDeleteEvent) -> None:
            await self.bridge.ingest_delete(
                "discord", str(payload.channel_id), str(payload.message_id)
            )

        @client.event
        async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
            if payload.emoji.name != self.settings.stop_emoji or self._own(payload.user_id):
                return
            user_id = str(payload.user_id)
            known = await self.bridge.store.user("discord", user_id)
            user = known or PlatformUser("discord", user_id, user_id)
            identity = await self.bridge.identity_for(user, user_id in self.settings.admins)
            result = await self.bridge.stop_stream(
                "discord", str(payload.channel_id), str(payload.message_id), identity
            )
            if result is not None:
                log.info("Discord stop by %s: %s", user_id, result)

        @app_commands.command(name=self.settings.command, description="Run a Lydian command")
        @app_commands.describe(command="a hub command, e.g. help, bridge, roll 2d6")
        async def lydian(interaction: discord.Interaction, command: str) -> None:
            await self._on_command(interaction, command)

        self.tree.add_command(lydian)

    async def _on_message(self, message: discord.Message) -> None:
        author = message.author
        if self._own(author.id) or author.bot or message.webhook_id is not None:
            return
        files = [_file(a) for a in message.attachments]
        user = PlatformUser(
            "discord", str(author.id), author.display_name[:200], str(author.display_avatar.url)
        )
        await self.bridge.ingest(
            "discord", str(message.channel.id), str(message.id), user, message.content, files=files
        )

    async def _on_command(self, interaction: discord.Interaction, text: str) -> None:
        author = interaction.user
        user = PlatformUser("discord", str(author.id), author.display_name[:200])
        identity = await self.bridge.identity_for(user, user.id in self.settings.admins)
        channel = str(interaction.channel_id or "")
        task = asyncio.ensure_future(self.bridge.run_command("discord", channel, identity, text))
        done, _ = await asyncio.wait({task}, timeout=COMMAND_WAIT)
        if not done:
            await interaction.response.defer(ephemeral=True, thinking=True)
            ok, reply = await task
            await interaction.followup.send(_reply(ok, reply), ephemeral=True)
            return
        ok, reply = task.result()
        await interaction.response.send_message(_reply(ok, reply), ephemeral=True)


def _file(item: discord.Attachment) -> PlatformFile:
    """A Discord attachment, fetched from its (signed) URL by discord.py's HTTP session."""
    link = Attachment(
        id=f"discord:{item.id}",
        name=item.filename[:200],
        media_type=item.content_type or "application/octet-stream",
        size=item.size,
        url=item.url,
    )

    async def fetch(max_bytes: int) -> bytes:
        if item.size > max_bytes:
            raise FileTooLarge(item.url)
        data = await item.read()
        if len(data) > max_bytes:
            raise FileTooLarge(item.url)
        return data

    return PlatformFile(link.name, link.media_type, link.size, fetch, link)


def _reply(ok: bool, text: str) -> str:
    text = text if ok else f"⚠ {text}"
    return text[:2000] or "done"
