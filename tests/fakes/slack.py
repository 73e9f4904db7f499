"""A fake Slack: the Web API methods the adapter uses, and a sender of signed Events API
requests and slash commands, as Slack would deliver them to the hub.

Point ``slack_sdk`` at it with ``base_url=fake.api_url``. Files the bot uploads go the way of
``files_upload_v2``: ``files.getUploadURLExternal`` gives an upload URL (on 127.0.0.1 here,
``files.slack.com`` on Slack) and a file id, the bytes are POSTed there (raw, or a
multipart ``file`` field; ``OK - N`` as text), ``files.completeUploadExternal`` shares the
file in a channel or thread as a ``file_share`` message with the ``initial_comment``
(``fake.uploads`` keeps them; ``fake.fail_uploads`` makes the upload URL answer 500).
``fake.rate_limit("chat.postMessage",
retry_after=1)`` makes the next call of that method answer 429 with ``Retry-After``. When
``echo_events`` is on, every message the bot posts comes back to the hub as a ``message``
event with the bot's ids, as Slack does, so echo suppression is exercised for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from aiohttp import web

from tests.fakes.server import LoopbackServer

TEAM = "T0FAKE"
BOT_USER = "UBOT"
BOT_ID = "BBOT"


class FakeSlack(LoopbackServer):
    def __init__(self, signing_secret: str, token: str = "xoxb-fake") -> None:
        super().__init__()
        self.signing_secret = signing_secret
        self.token = token
        self.hub_url: str | None = None
        self.echo_events = True
        self.native_streaming = True
        self.users: dict[str, dict[str, Any]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> message
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.rejected: list[tuple[str, float]] = []  # 429s given: (method, time)
        self._limits: dict[str, list[float]] = {}
        self._outages: dict[str, list[int]] = {}
        self._held: dict[str, asyncio.Event] = {}
        self._ts = itertools.count(1)
        self._events = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app_token = "xapp-fake"
        self.socket_acks: dict[str, dict[str, Any]] = {}
        self.socket_connected = asyncio.Event()
        self._socket: web.WebSocketResponse | None = None
        self.app.router.add_route("*", "/api/{method}", self._api)
        self.app.router.add_get("/socket", self._socket_mode)
        self.files: dict[str, tuple[bytes, str]] = {}  # file id -> (bytes, mimetype)
        self.file_fetches: list[tuple[str, str | None]] = []  # (file id, Authorization)
        self.app.router.add_get("/files-pri/{team_file}/{name}", self._file)
        self.uploads: dict[str, dict[str, Any]] = {}  # file id -> the bot's upload, see above
        self.fail_uploads = 0  # the next N POSTs to an upload URL answer 500
        self.app.router.add_post("/upload/v1/{key}", self._upload)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def add_user(self, user_id: str, name: str, avatar: str | None = None) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": name.lower(),
            "real_name": name,
            "profile": {"display_name": name, "real_name": name, "image_72": avatar},
        }

    def rate_limit(self, method: str, retry_after: float = 1.0, times: int = 1) -> None:
        self._limits.setdefault(method, []).extend([retry_after] * times)

    def outage(self, method: str, times: int = 1, status: int = 503) -> None:
        """The next ``times`` calls of ``method`` fail with ``status`` (Slack is down)."""
        self._outages.setdefault(method, []).extend([status] * times)

    def hold(self, method: str) -> asyncio.Event:
        """Calls of ``method`` wait (after being recorded) until the returned event is set."""
        return self._held.setdefault(method, asyncio.Event())

    def in_channel(self, channel: str) -> list[dict[str, Any]]:
        """Messages in ``channel`` in posting order (current text, after edits)."""
        found = [m for (c, _), m in self.messages.items() if c == channel and not m.get("deleted")]
        return sorted(found, key=lambda m: float(m["ts"]))

    def posted(self, method: str = "chat.postMessage") -> list[dict[str, Any]]:
        return [params for name, params, _ in self.calls if name == method]

    def add_file(
        self, name: str, data: bytes, mimetype: str, size: int | None = None
    ) -> dict[str, Any]:
        """A file shared in Slack: the ``files`` item of its ``file_share`` message event.
        Its ``url_private`` answers only with the bot token (else Slack's HTML login page)."""
        file_id = f"F{len(self.files) + 1:08d}"
        self.files[file_id] = (data, mimetype)
        url = f"{self.url}/files-pri/{TEAM}-{file_id}/{name}"
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": len(data) if size is None else size,
            "url_private": url,
            "url_private_download": url + "?download=1",
            "permalink": f"https://fake.slack.test/files/{BOT_USER}/{file_id}/{name}",
        }

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["team_file"].rsplit("-", 1)[-1]
        auth = request.headers.get("Authorization")
        self.file_fetches.append((file_id, auth))
        if auth != f"Bearer {self.token}":  # what Slack does: a login page, status 200
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        found = self.files.get(file_id)
        if found is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=found[0], content_type=found[1])

    # ------------------------------------------------------------ the bot's uploads

    async def _m_files_getUploadURLExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        filename = p.get("filename")
        try:
            length = int(p.get("length", ""))
        except ValueError:
            length = 0
        if not filename or length < 1:
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{len(self.files) + len(self.uploads) + 1:08d}"
        key = hashlib.sha256(f"{self.token}:{file_id}".encode()).hexdigest()[:32]
        self.uploads[file_id] = {
            "id": file_id,
            "filename": filename,
            "length": length,
            "key": key,
            "data": None,
            "shared": False,
        }
        return {"ok": True, "upload_url": f"{self.url}/upload/v1/{key}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL: no token (the URL is the credential), the bytes in the body."""
        found = next(
            (u for u in self.uploads.values() if u["key"] == request.match_info["key"]), None
        )
        if found is None or found["shared"]:
            return web.Response(status=404, text="not found", content_type="text/plain")
        if self.fail_uploads:
            self.fail_uploads -= 1
            return web.Response(status=500, text="upload failed", content_type="text/plain")
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            field = form.get("file")
            data = field.file.read() if hasattr(field, "file") else str(field or "").encode()
        else:
            data = await request.read()
        found["data"] = data
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _m_files_completeUploadExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        try:
            items = json.loads(p.get("files") or "")
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(items, list) or not items:
            return {"ok": False, "error": "invalid_arguments"}
        done = []
        for item in items:
            upload = self.uploads.get(str(item.get("id")))
            if upload is None or upload["data"] is None:  # never uploaded: Slack's answer
                return {"ok": False, "error": "file_not_found"}
            upload["title"] = item.get("title") or upload["filename"]
            done.append(upload)
        channel, thread = p.get("channel_id"), p.get("thread_ts")
        files = []
        for upload in done:
            upload["shared"] = True
            upload["channel"], upload["thread_ts"] = channel, thread
            upload["initial_comment"] = p.get("initial_comment")
            self.files[upload["id"]] = (upload["data"], "text/plain")
            url = f"{self.url}/files-pri/{TEAM}-{upload['id']}/{upload['filename']}"
            files.append(
                {
                    "id": upload["id"],
                    "name": upload["filename"],
                    "title": upload["title"],
                    "mimetype": "text/plain",
                    "size": len(upload["data"]),
                    "url_private": url,
                    "url_private_download": url + "?download=1",
                }
            )
        if channel:  # shared: a file_share message from the bot, in the thread if given
            ts = self._next_ts()
            message = {
                "ts": ts,
                "channel": str(channel),
                "text": p.get("initial_comment") or "",
                "files": files,
                "bot_id": BOT_ID,
                "user": BOT_USER,
                **({"thread_ts": thread} if thread else {}),
            }
            self.messages[(str(channel), ts)] = message
            self._echo({"type": "message", "subtype": "file_share", **message})
        return {"ok": True, "files": files}

    # ------------------------------------------------------------ Web API

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        else:
            params.update(dict(await request.post()))
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token = self.app_token if method == "apps.connections.open" else self.token
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        down = self._outages.get(method)
        if down:
            status = down.pop(0)
            self.rejected.append((method, time.monotonic()))
            return web.Response(status=status, text="upstream unavailable")
        pending = self._limits.get(method)
        if pending:
            retry = pending.pop(0)
            self.rejected.append((method, time.monotonic()))
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": f"{retry:g}"},
            )
        self.calls.append((method, params, time.monotonic()))
        gate = self._held.get(method)
        if gate is not None:
            await gate.wait()
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(await handler(params))

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    async def _m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.test/",
            "team": "Fake",
            "user": "lydian",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
        }

    async def _m_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    async def _m_users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(p.get("user", ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    async def _m_conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": {"id": p.get("channel"), "name": p.get("channel")}}

    async def _m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = str(p.get("channel"))
        ts = self._next_ts()
        message = {
            "ts": ts,
            "channel": channel,
            "text": p.get("text", ""),
            "username": p.get("username"),
            "icon_url": p.get("icon_url"),
            "bot_id": BOT_ID,
            "user": BOT_USER,
        }
        self.messages[(channel, ts)] = message
        self._echo({"type": "message", "subtype": "bot_message", **message})
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    async def _m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        """Shown to ``user`` only: not a channel message (see ``posted("chat.postEphemeral")``)."""
        return {"ok": True, "message_ts": self._next_ts()}

    async def _m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((str(p.get("channel")), str(p.get("ts"))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message["text"] = p.get("text", "")
        message["edits"] = message.get("edits", 0) + 1
        self._echo(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": message["channel"],
                "message": {**message},
                "ts": self._next_ts(),
            }
        )
        return {"ok": True, "channel": message["channel"], "ts": message["ts"]}

    async def _m_chat_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((str(p.get("channel")), str(p.get("ts"))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message["deleted"] = True
        return {"ok": True}

    async def _m_chat_startStream(self, p: dict[str, Any]) -> dict[str, Any]:
        if not self.native_streaming:
            return {"ok": False, "error": "unknown_method"}
        channel = str(p.get("channel"))
        ts = self._next_ts()
        self.messages[(channel, ts)] = {
            "ts": ts,
            "channel": channel,
            "text": p.get("markdown_text") or "",
            "thread_ts": p.get("thread_ts"),
            "streaming": True,
            "bot_id": BOT_ID,
        }
        return {"ok": True, "channel": channel, "ts": ts}

    async def _m_chat_appendStream(self, p: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((str(p.get("channel")), str(p.get("ts"))))
        if message is None or not message.get("streaming"):
            return {"ok": False, "error": "message_not_in_streaming_state"}
        message["text"] += p.get("markdown_text") or ""
        message["appends"] = message.get("appends", 0) + 1
        return {"ok": True, "channel": message["channel"], "ts": message["ts"]}

    async def _m_chat_stopStream(self, p: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((str(p.get("channel")), str(p.get("ts"))))
        if message is None or not message.get("streaming"):
            return {"ok": False, "error": "message_not_in_streaming_state"}
        message["text"] += p.get("markdown_text") or ""
        message["streaming"] = False
        return {"ok": True, "channel": message["channel"], "ts": message["ts"]}

    # ------------------------------------------------------------ deliveries to the hub

    def _echo(self, event: dict[str, Any]) -> None:
        if self.echo_events and self.hub_url:
            task = asyncio.ensure_future(self.send_event(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the echo deliveries in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def sign(self, body: bytes, timestamp: int | None = None, secret: str | None = None) -> dict:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        base = b"v0:" + ts.encode() + b":" + body
        key = (secret or self.signing_secret).encode()
        signature = "v0=" + hmac.new(key, base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}

    async def deliver(
        self,
        path: str,
        body: bytes,
        content_type: str,
        *,
        retry_num: int | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        assert self.hub_url is not None
        headers = {"Content-Type": content_type, **self.sign(body, timestamp, secret)}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(self.hub_url + path, content=body, headers=headers)

    def event_body(self, event: dict[str, Any], event_id: str | None = None) -> bytes:
        envelope = {
            "token": "legacy",
            "team_id": TEAM,
            "api_app_id": "AFAKE",
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._events):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
            "event": event,
        }
        return json.dumps(envelope).encode()

    async def send_event(self, event: dict[str, Any], **kw: Any) -> httpx.Response:
        event_id = kw.pop("event_id", None)
        return await self.deliver(
            "/slack/events", self.event_body(event, event_id), "application/json", **kw
        )

    async def user_says(self, channel: str, user: str, text: str, **kw: Any) -> str:
        """A user posts in ``channel``: store it and deliver the ``message`` event; its ts."""
        ts = self._next_ts()
        message = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts}
        self.messages[(channel, ts)] = dict(message)
        resp = await self.send_event({**message, "event_ts": ts, **kw.pop("extra", {})}, **kw)
        assert resp.status_code == 200, resp.text
        return ts

    async def slash(
        self, command: str, text: str, user: str, channel: str, **kw: Any
    ) -> httpx.Response:
        body = urlencode(
            {
                "token": "legacy",
                "team_id": TEAM,
                "channel_id": channel,
                "user_id": user,
                "user_name": self.users.get(user, {}).get("name", user),
                "command": command,
                "text": text,
                "api_app_id": "AFAKE",
                "response_url": f"{self.url}/response/1",
                "trigger_id": "trig",
            }
        ).encode()
        return await self.deliver(
            "/slack/commands", body, "application/x-www-form-urlencoded", **kw
        )

    # ------------------------------------------------------------ Socket Mode

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._socket = ws
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {}})
        self.socket_connected.set()
        async for frame in ws:
            if frame.type.name == "TEXT":
                ack = json.loads(frame.data)
                self.socket_acks[ack.get("envelope_id", "")] = ack
        return ws

    async def socket_send(self, kind: str, payload: dict[str, Any]) -> str:
        """Deliver an envelope over Socket Mode (``events_api``, ``slash_commands``)."""
        assert self._socket is not None
        envelope_id = f"env{next(self._events)}"
        await self._socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
                "payload": payload,
            }
        )
        return envelope_id
