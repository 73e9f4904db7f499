"""The Slack side of the bridge: a slack-bolt AsyncApp receiving events and commands.

Events arrive over HTTP (``/slack/events``, signature-verified by bolt with the signing
secret) or Socket Mode (app token). A retried delivery (``X-Slack-Retry-Num``) carries the
same ``event_id`` and is dropped; even if it were not, the bridge posts a platform message
once (its client id is derived from channel and ``ts``). Events of the bot itself are
ignored by bolt, and copies the bridge posted are never ingested again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from hub.sdk import Attachment
from lydian_adapters.bridge import PlatformUser, bridge_for
from lydian_adapters.bridge.connector import FileTooLarge, PlatformFile
from lydian_adapters.slack.connector import SlackConnector
from lydian_adapters.slack.settings import SlackSettings

if TYPE_CHECKING:
    from hub.sdk import HubAPI

log = logging.getLogger(__name__)

NEW_MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message"}
COMMAND_WAIT = 2.5  # Slack wants an answer to a slash command within 3 s
USER_TTL = 600.0


class SlackAdapter:
    """One Slack workspace bridged into one hub."""

    def __init__(self, hub: HubAPI, settings: SlackSettings) -> None:
        self.hub = hub
        self.settings = settings
        self.bridge = bridge_for(hub)
        self.client = AsyncWebClient(
            token=settings.bot_token,
            base_url=settings.api_url,
            timeout=int(settings.request_timeout),
        )
        self.connector = SlackConnector(
            self.client,
            edit_interval=settings.edit_interval,
            native_streaming=settings.native_streaming,
            public_url=settings.public_url,
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=settings.signing_secret or "unused",
            request_verification_enabled=True,
            process_before_response=False,
        )
        self._users: dict[str, tuple[float, PlatformUser]] = {}
        self._events: OrderedDict[str, None] = OrderedDict()
        self._socket: Any = None
        self._register()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.bridge.start()
        self.bridge.register(self.connector)
        self.hub.spawn(self._connect(), name="slack:connect")

    async def _connect(self) -> None:
        """Learn the workspace and bot ids (retrying), then open Socket Mode if configured."""
        delay = 1.0
        while True:
            try:
                auth = await self.client.auth_test()
                self.connector.team_id = auth.get("team_id")
                break
            except Exception as exc:
                log.warning("Slack auth.test failed (%s); retry in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)
        if self.settings.app_token:
            await self.bridge.leader.wait()  # one Socket Mode connection per hub
            from slack_bolt.adapter.socket_mode.websockets import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(
                self.app, self.settings.app_token, web_client=self.client
            )
            await self._socket.connect_async()
            log.info("Slack Socket Mode connected")

    async def stop(self) -> None:
        self.bridge.unregister("slack")
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()
        with contextlib.suppress(Exception):
            session = getattr(self.client, "session", None)
            if session is not None:
                await session.close()

    # ------------------------------------------------------------ users

    async def user(self, user_id: str) -> PlatformUser:
        """Name and avatar of a Slack user (``users.info``, cached)."""
        cached = self._users.get(user_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        name, avatar = user_id, None
        try:
            info = (await self.client.users_info(user=user_id)).get("user") or {}
            profile = info.get("profile") or {}
            name = (
                profile.get("display_name")
                or profile.get("real_name")
                or info.get("real_name")
                or info.get("name")
                or user_id
            )
            avatar = profile.get("image_72") or profile.get("image_48")
        except Exception as exc:
            log.warning("Slack users.info %s failed: %s", user_id, exc)
            return PlatformUser("slack", user_id, name)
        user = PlatformUser("slack", user_id, str(name)[:200], avatar)
        self._users[user_id] = (time.monotonic() + USER_TTL, user)
        return user

    def _seen(self, event_id: str | None) -> bool:
        """True if this event was handled already (Slack retries with the same id)."""
        if not event_id:
            return False
        if event_id in self._events:
            return True
        self._events[event_id] = None
        while len(self._events) > 10_000:
            self._events.popitem(last=False)
        return False

    # ------------------------------------------------------------ listeners

    def _register(self) -> None:
        self.app.event("message")(self._on_message)
        self.app.event("reaction_added")(self._on_reaction)
        self.app.command(re.compile(r"^/.+"))(self._on_command)

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if self._seen(body.get("event_id")):
            return
        channel = event.get("channel")
        subtype = event.get("subtype")
        if not isinstance(channel, str):
            return
        if subtype == "message_changed":
            message = event.get("message")
            if not isinstance(message, dict) or message.get("bot_id") or not message.get("ts"):
                return
            editor = message.get("user")
            author = await self.user(editor) if isinstance(editor, str) and editor else None
            await self.bridge.ingest_edit(
                "slack", channel, str(message["ts"]), str(message.get("text") or ""), author
            )
            return
        if subtype == "message_deleted":
            if event.get("deleted_ts"):
                await self.bridge.ingest_delete("slack", channel, str(event["deleted_ts"]))
            return
        if subtype not in NEW_MESSAGE_SUBTYPES or event.get("bot_id"):
            return
        user_id, ts, text = event.get("user"), event.get("ts"), event.get("text") or ""
        if not all(isinstance(v, str) and v for v in (user_id, ts, channel)):
            return  # not a message a person wrote in a channel
        files = event.get("files")
        if not isinstance(text, str) or not isinstance(files or [], list):
            log.warning("Slack message %s in %s has unexpected fields; ignored", ts, channel)
            return
        self.connector.remember_author(channel, ts, user_id)
        shared = [self._file(f) for f in files or [] if isinstance(f, dict)]
        await self.bridge.ingest("slack", channel, ts, await self.user(user_id), text, files=shared)

    def _file(self, f: dict[str, Any]) -> PlatformFile:
        """A shared file: fetched from ``url_private`` with the bot token (``files:read``)."""
        link = Attachment(
            id=f"slack:{f.get('id', '')}"[:100],
            name=str(f.get("name") or "file")[:200],
            media_type=str(f.get("mimetype") or "application/octet-stream"),
            size=int(f.get("size") or 0),
            url=str(f.get("permalink") or f.get("url_private") or ""),
        )
        url = str(f.get("url_private_download") or f.get("url_private") or "")

        async def fetch(max_bytes: int) -> bytes:
            return await self.download(url, max_bytes, link.media_type)

        return PlatformFile(link.name, link.media_type, link.size, fetch, link)

    async def download(self, url: str, max_bytes: int, media_type: str = "") -> bytes:
        """A Slack file's bytes (``Authorization: Bearer`` bot token), at most ``max_bytes``."""
        if not url.startswith(("https://", "http://")):
            raise ValueError("the file has no download URL")
        timeout = aiohttp.ClientTimeout(total=max(30.0, self.settings.request_timeout * 3))
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"}
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            got = response.headers.get("Content-Type", "")
            if got.startswith("text/html") and "html" not in media_type:
                raise ValueError("Slack answered with a login page: is files:read granted?")
            if (response.content_length or 0) > max_bytes:
                raise FileTooLarge(url)
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise FileTooLarge(url)
            return bytes(data)

    async def _on_reaction(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if self._seen(body.get("event_id")) or event.get("reaction") != self.settings.stop_reaction:
            return
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "message":
            return
        user = await self.user(str(event.get("user") or ""))
        identity = await self.bridge.identity_for(user, self.is_admin(user.id))
        result = await self.bridge.stop_stream(
            "slack", str(item.get("channel")), str(item.get("ts")), identity
        )
        if result is not None:
            log.info("Slack stop by %s: %s", user.id, result)

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.settings.admins

    async def _on_command(self, ack: Any, command: dict[str, Any]) -> None:
        name = str(command.get("command") or "")
        text = str(command.get("text") or "").strip()
        if name != self.settings.command:
            text = f"{name} {text}".strip()
        elif not text:
            text = "/help"
        user = PlatformUser(
            "slack", str(command.get("user_id")), str(command.get("user_name") or "")[:200]
        )
        identity = await self.bridge.identity_for(user, self.is_admin(user.id))
        channel = str(command.get("channel_id") or "")
        task = asyncio.ensure_future(self.bridge.run_command("slack", channel, identity, text))
        done, _ = await asyncio.wait({task}, timeout=COMMAND_WAIT)
        if not done:
            await ack(text="working on it…", response_type="ephemeral")
            ok, reply = await task
            await self._respond(command.get("response_url"), reply)
            return
        ok, reply = task.result()
        await ack(text=reply if ok else f"⚠ {reply}", response_type="ephemeral")

    async def _respond(self, url: Any, text: str) -> None:
        if not url:
            return
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        try:
            await AsyncWebhookClient(str(url)).send(text=text, response_type="ephemeral")
        except Exception as exc:
            log.warning("Slack response_url failed: %s", exc)
