"""A fake Discord: the REST routes the adapter uses and a gateway WebSocket speaking
HELLO (op 10) / IDENTIFY (op 2) / READY / heartbeat (op 1) and ACK (op 11) / dispatch (op 0).

Point discord.py at it through the adapter's ``api_url`` (``fake.api_url``); the gateway
URL comes from ``GET /gateway/bot``. Frames are plain JSON text (no zlib), which
discord.py accepts. ``fake.rate_limit("POST", retry_after=1)`` answers the next message
create with 429, ``Retry-After`` and the ``X-RateLimit-*`` headers. Messages the bot posts
come back as ``MESSAGE_CREATE`` dispatches, as on Discord, so echo suppression is real.
A message sent with files is ``multipart/form-data`` (``payload_json`` and ``files[N]``
parts, matched to ``payload_json``'s ``attachments`` by id); the files become the message's
attachment objects, served by the fake CDN like users' files. ``fake.too_large = N``
answers the next N of them 413 (code 40005), as Discord does past its upload limit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import mimetypes
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.server import LoopbackServer

GUILD = "900000000000000001"
APP_ID = "900000000000000002"
BOT = {
    "id": "900000000000000003",
    "username": "lydian",
    "discriminator": "0",
    "global_name": "Lydian",
    "avatar": None,
    "bot": True,
}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with the exact ``application/json`` content type Discord sends (no charset)."""
    body = json.dumps(data).encode()
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakeDiscord(LoopbackServer):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.messages: dict[str, dict[str, Any]] = {}  # id -> message
        self.calls: list[tuple[str, str, dict[str, Any], float]] = []
        self.rejected: list[tuple[str, str, float]] = []
        self.commands: list[dict[str, Any]] = []
        self.interaction_replies: dict[str, list[dict[str, Any]]] = {}
        self.identify: dict[str, Any] | None = None
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.webhooks_allowed = False  # the bot lacks Manage Webhooks unless a test grants it
        self.heartbeats = 0
        self.identified = asyncio.Event()
        self.identifies = 0  # IDENTIFY frames (a new session each: READY again)
        self._limits: dict[str, list[float]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()
        r = self.app.router
        r.add_get("/gateway", self._gateway)
        r.add_get("/attachments/{channel}/{id}/{name}", self._cdn)
        self.files: dict[str, bytes] = {}  # attachment id -> bytes
        self.cdn_fetches: list[tuple[str, bool]] = []  # (attachment id, signature valid)
        self.too_large = 0  # the next N messages with files answer 413
        r.add_get("/api/v10/users/@me", self._me)
        r.add_get("/api/v10/gateway/bot", self._gateway_bot)
        r.add_get("/api/v10/oauth2/applications/@me", self._application)
        r.add_post("/api/v10/channels/{channel}/messages", self._create)
        r.add_patch("/api/v10/channels/{channel}/messages/{id}", self._edit)
        r.add_delete("/api/v10/channels/{channel}/messages/{id}", self._delete)
        r.add_put("/api/v10/applications/{app}/commands", self._put_commands)
        r.add_put("/api/v10/applications/{app}/guilds/{guild}/commands", self._put_commands)
        r.add_post("/api/v10/interactions/{id}/{token}/callback", self._callback)
        r.add_post("/api/v10/webhooks/{app}/{token}", self._execute)
        r.add_get("/api/v10/channels/{channel}/webhooks", self._list_webhooks)
        r.add_post("/api/v10/channels/{channel}/webhooks", self._create_webhook)
        r.add_patch("/api/v10/webhooks/{app}/{token}/messages/{id}", self._webhook_edit)
        r.add_delete("/api/v10/webhooks/{app}/{token}/messages/{id}", self._webhook_delete)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    def snowflake(self) -> str:
        return str(1_100_000_000_000_000_000 + next(self._ids))

    def rate_limit(self, method: str, retry_after: float = 1.0, times: int = 1) -> None:
        self._limits.setdefault(method, []).extend([retry_after] * times)

    def in_channel(self, channel: str) -> list[dict[str, Any]]:
        found = [m for m in self.messages.values() if m["channel_id"] == channel]
        return sorted((m for m in found if not m.get("deleted")), key=lambda m: int(m["id"]))

    def sent(self, method: str = "POST") -> list[dict[str, Any]]:
        return [
            body for m, path, body, _ in self.calls if m == method and path.endswith("/messages")
        ]

    # ------------------------------------------------------------ REST

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    async def _guard(self, request: web.Request) -> web.Response | None:
        if not self._authorized(request):
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        pending = self._limits.get(request.method)
        if pending and "/messages" in request.path:
            retry = pending.pop(0)
            self.rejected.append((request.method, request.path, time.monotonic()))
            return _json(
                {"message": "You are being rate limited.", "retry_after": retry, "global": False},
                status=429,
                headers={
                    "Retry-After": f"{retry:g}",
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                    "X-RateLimit-Reset-After": f"{retry:.3f}",
                    "X-RateLimit-Bucket": "fakebucket",
                    "X-RateLimit-Scope": "user",
                    "Via": "1.1 google",
                },
            )
        body: dict[str, Any] = {}
        parts: list[dict[str, Any]] = []
        request["parts"] = parts  # the files sent, for the route
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                elif part.name and part.name.startswith("files["):
                    parts.append(
                        {
                            "index": int(part.name[len("files[") : -1]),
                            "filename": part.filename,  # type: ignore[union-attr]
                            "content_type": part.headers.get("Content-Type"),
                            "data": await part.read(),  # type: ignore[union-attr]
                        }
                    )
            if parts and self.too_large:
                self.too_large -= 1
                return _json({"message": "Request entity too large", "code": 40005}, status=413)
        elif request.can_read_body:
            body = await request.json()
        self.calls.append((request.method, request.path, body, time.monotonic()))
        return None

    async def _me(self, request: web.Request) -> web.Response:
        return await self._guard(request) or _json(BOT)

    async def _application(self, request: web.Request) -> web.Response:
        return await self._guard(request) or _json(
            {
                "id": APP_ID,
                "name": "Lydian",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": {**BOT, "bot": False, "id": "900000000000000009"},
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return await self._guard(request) or _json(
            {
                "url": f"ws://127.0.0.1:{self.port}/gateway",
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    def message(self, channel: str, author: dict[str, Any], content: str, **extra: Any) -> dict:
        return {
            "id": self.snowflake(),
            "channel_id": channel,
            "guild_id": GUILD,
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            **extra,
        }

    async def _create(self, request: web.Request) -> web.Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        body = self.calls[-1][2]
        channel = request.match_info["channel"]
        named = {str(a.get("id")): a for a in body.get("attachments") or []}
        attachments = []
        for part in request["parts"]:  # the files sent with it, by their attachments entry
            entry = named.get(str(part["index"]), {})
            name = entry.get("filename") or part["filename"]
            kind = mimetypes.guess_type(name)[0] or part["content_type"]  # Discord's guess
            attachments.append(
                self.attachment(channel, name, part["data"], kind or "application/octet-stream")
            )
        extra = {"attachments": attachments}
        if body.get("message_reference"):
            extra["message_reference"] = body["message_reference"]
        message = self.message(channel, BOT, body.get("content", ""), **extra)
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return _json(message)

    async def _edit(self, request: web.Request) -> web.Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        message = self.messages.get(request.match_info["id"])
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        message["content"] = self.calls[-1][2].get("content", message["content"])
        message["edited_timestamp"] = _now()
        message["edits"] = message.get("edits", 0) + 1
        await self.dispatch("MESSAGE_UPDATE", {k: v for k, v in message.items() if k != "edits"})
        return _json(message)

    async def _delete(self, request: web.Request) -> web.Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        message = self.messages.get(request.match_info["id"])
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        message["deleted"] = True
        return web.Response(status=204)

    async def _put_commands(self, request: web.Request) -> web.Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        self.commands = [
            {**c, "id": self.snowflake(), "application_id": APP_ID, "version": "1"}
            for c in self.calls[-1][2]  # type: ignore[union-attr]
        ]
        return _json(self.commands)

    async def _callback(self, request: web.Request) -> web.Response:
        if not request.can_read_body:
            return _json({"message": "empty"}, status=400)
        body = await request.json()
        self.interaction_replies.setdefault(request.match_info["id"], []).append(body)
        return _json(
            {
                "interaction": {
                    "id": request.match_info["id"],
                    "type": 2,
                    "response_message_loading": body.get("type") == 5,
                    "response_message_ephemeral": True,
                }
            }
        )

    async def _execute(self, request: web.Request) -> web.Response:
        """Execute a webhook: an interaction follow-up (application id) or a channel webhook."""
        body = await request.json()
        hook_id, token = request.match_info["app"], request.match_info["token"]
        if hook_id == APP_ID:
            self.interaction_replies.setdefault(f"followup:{token}", []).append(body)
            return _json(self.message("0", BOT, body.get("content", "")))
        hook = self.webhooks.get(hook_id)
        if hook is None or hook["token"] != token:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        self.calls.append(("POST", request.path, body, time.monotonic()))
        author = {
            "id": hook_id,
            "username": body.get("username") or hook["name"],
            "discriminator": "0000",
            "avatar": None,
            "bot": True,
        }
        message = self.message(
            hook["channel_id"],
            author,
            body.get("content", ""),
            webhook_id=hook_id,
            avatar_url=body.get("avatar_url"),
        )
        self.messages[message["id"]] = message
        await self.dispatch(
            "MESSAGE_CREATE", {k: v for k, v in message.items() if k != "avatar_url"}
        )
        return _json(message)

    async def _list_webhooks(self, request: web.Request) -> web.Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        if not self.webhooks_allowed:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        channel = request.match_info["channel"]
        return _json([h for h in self.webhooks.values() if h["channel_id"] == channel])

    async def _create_webhook(self, request: web.Request) -> web.Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        if not self.webhooks_allowed:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        hook_id = self.snowflake()
        hook = {
            "id": hook_id,
            "type": 1,
            "channel_id": request.match_info["channel"],
            "guild_id": GUILD,
            "name": self.calls[-1][2].get("name"),
            "avatar": None,
            "token": f"hooktoken{hook_id}",
            "application_id": APP_ID,
            "user": BOT,
        }
        self.webhooks[hook_id] = hook
        return _json(hook)

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        message = self.messages.get(request.match_info["id"])
        if message is None or message.get("webhook_id") != request.match_info["app"]:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        body = await request.json()
        self.calls.append(("PATCH", request.path, body, time.monotonic()))
        message["content"] = body.get("content", message["content"])
        message["edits"] = message.get("edits", 0) + 1
        return _json({k: v for k, v in message.items() if k not in ("edits", "avatar_url")})

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        message = self.messages.get(request.match_info["id"])
        if message is None or message.get("webhook_id") != request.match_info["app"]:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        message["deleted"] = True
        return web.Response(status=204)

    # ------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        self._sockets.add(ws)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                op = payload.get("op")
                if op == 1:
                    self.heartbeats += 1
                    await ws.send_json({"op": 11})
                elif op == 2:
                    if payload["d"].get("token") != self.token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    self.identify = payload["d"]
                    self.identifies += 1
                    await ws.send_json(
                        {
                            "op": 0,
                            "t": "READY",
                            "s": next(self._seq),
                            "d": {
                                "v": 10,
                                "user": BOT,
                                "guilds": [],
                                "session_id": "fake-session",
                                "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                                "application": {"id": APP_ID, "flags": 0},
                            },
                        }
                    )
                    self.identified.set()
        finally:
            self._sockets.discard(ws)
        return ws

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        frame = {"op": 0, "t": event, "s": next(self._seq), "d": data}
        for ws in list(self._sockets):
            await ws.send_json(frame)

    async def invalidate_sessions(self) -> None:
        """Op 9 (INVALID_SESSION, not resumable): clients reconnect and IDENTIFY anew, which
        fires ``on_ready`` again."""
        for ws in list(self._sockets):
            await ws.send_json({"op": 9, "d": False})

    def command_syncs(self) -> int:
        """How many times application commands were registered (PUT .../commands)."""
        return sum(1 for m, path, *_ in self.calls if m == "PUT" and path.endswith("/commands"))

    async def close_sockets(self) -> None:
        for ws in list(self._sockets):
            await ws.close()

    # ------------------------------------------------------------ users acting

    @staticmethod
    def user(user_id: str, name: str) -> dict[str, Any]:
        return {
            "id": user_id,
            "username": name.lower(),
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
        }

    def attachment(
        self, channel: str, name: str, data: bytes, content_type: str, size: int | None = None
    ) -> dict[str, Any]:
        """An attachment object for :meth:`user_says`, served from the fake CDN at a signed
        URL (``ex``/``is``/``hm`` as Discord's): an unsigned or altered URL is refused."""
        attachment_id = self.snowflake()
        self.files[attachment_id] = data
        path = f"/attachments/{channel}/{attachment_id}/{name}"
        url = f"{self.url}{path}?ex=ffffffff&is=00000000&hm={self._sign(path)}&"
        return {
            "id": attachment_id,
            "filename": name,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    def _sign(self, path: str) -> str:
        import hashlib

        return hashlib.sha256(f"{self.token}:{path}".encode()).hexdigest()

    async def _cdn(self, request: web.Request) -> web.Response:
        attachment_id = request.match_info["id"]
        valid = request.query.get("hm") == self._sign(request.path)
        self.cdn_fetches.append((attachment_id, valid))
        if not valid:
            return web.Response(status=403, text="This content is no longer available.")
        data = self.files.get(attachment_id)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def user_says(
        self,
        channel: str,
        user: dict[str, Any],
        content: str,
        attachments: list[dict[str, Any]] | None = None,
    ) -> str:
        message = self.message(channel, user, content, attachments=attachments or [])
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return message["id"]

    async def user_edits(self, message_id: str, content: str) -> None:
        message = self.messages[message_id]
        message["content"] = content
        message["edited_timestamp"] = _now()
        await self.dispatch("MESSAGE_UPDATE", message)

    async def user_deletes(self, message_id: str) -> None:
        message = self.messages[message_id]
        message["deleted"] = True
        await self.dispatch(
            "MESSAGE_DELETE",
            {"id": message_id, "channel_id": message["channel_id"], "guild_id": GUILD},
        )

    async def react(self, message_id: str, user: dict[str, Any], emoji: str) -> None:
        message = self.messages[message_id]
        await self.dispatch(
            "MESSAGE_REACTION_ADD",
            {
                "user_id": user["id"],
                "channel_id": message["channel_id"],
                "message_id": message_id,
                "guild_id": GUILD,
                "emoji": {"id": None, "name": emoji},
                "burst": False,
                "type": 0,
            },
        )

    async def slash(self, channel: str, user: dict[str, Any], command: str, text: str) -> str:
        """Invoke the application command ``/command command:text``; the interaction id."""
        interaction_id = self.snowflake()
        await self.dispatch(
            "INTERACTION_CREATE",
            {
                "id": interaction_id,
                "application_id": APP_ID,
                "type": 2,
                "token": f"tok{interaction_id}",
                "version": 1,
                "guild_id": GUILD,
                "channel_id": channel,
                "channel": {
                    "id": channel,
                    "type": 0,
                    "name": "general",
                    "position": 0,
                    "guild_id": GUILD,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                },
                "member": {
                    "user": user,
                    "roles": [],
                    "joined_at": _now(),
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "permissions": "0",
                },
                "app_permissions": "0",
                "locale": "en-US",
                "attachment_size_limit": 8_000_000,
                "entitlements": [],
                "authorizing_integration_owners": {},
                "context": 0,
                "data": {
                    "id": next((c["id"] for c in self.commands if c["name"] == command), "0"),
                    "name": command,
                    "type": 1,
                    "options": [{"name": "command", "type": 3, "value": text}],
                },
            },
        )
        return interaction_id
