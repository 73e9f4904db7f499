"""Sending to Slack through ``slack_sdk``'s AsyncWebClient: post, update, delete, streams.

Messages are posted with the author's name and avatar (``chat:write.customize``). A
streamed answer uses Slack's native streaming (``chat.startStream`` / ``appendStream`` /
``stopStream``) when it answers a Slack message and the workspace accepts it, otherwise
it is posted once and edited with ``chat.update`` as tokens arrive.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from hub.sdk import Attachment, UserRef
from lydian_adapters.bridge.connector import PLACEHOLDER, Connector, StreamState, attachment_lines
from lydian_adapters.bridge.outbox import PermanentError, RateLimited

log = logging.getLogger(__name__)

PERMANENT_ERRORS = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "no_permission",
    "missing_scope",
    "msg_too_long",
    "message_not_found",
    "cant_update_message",
    "cant_delete_message",
    "invalid_blocks",
    "not_authed",
}
NO_NATIVE_STREAMING = {"unknown_method", "not_allowed_token_type", "method_deprecated"}
MAX_TEXT = 39_000


def _raise(exc: SlackApiError | aiohttp.ClientError) -> None:
    """Turn a client error into the outbox's vocabulary (429, permanent, or transient)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        if response.status_code == 429:
            retry = response.headers.get("Retry-After") or response.headers.get("retry-after")
            raise RateLimited(float(retry or 1), "Slack rate limit") from None
        error = response.get("error") if isinstance(response.data, dict) else None
        if error in PERMANENT_ERRORS:
            raise PermanentError(f"Slack: {error}") from None
    raise exc


class SlackConnector(Connector):
    platform = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        edit_interval: float = 1.0,
        native_streaming: bool = True,
        public_url: str = "",
    ) -> None:
        self.client = client
        self.edit_interval = edit_interval
        self.native_streaming = native_streaming
        self.public_url = public_url
        self.team_id: str | None = None
        self.authors: OrderedDict[tuple[str, str], str] = OrderedDict()  # (channel, ts) -> user

    def remember_author(self, channel: str, ts: str, user: str) -> None:
        self.authors[(channel, ts)] = user
        while len(self.authors) > 10_000:
            self.authors.popitem(last=False)

    async def _call(self, method: str, **kwargs: object) -> dict:
        try:
            response = await getattr(self.client, method)(**kwargs)
        except (SlackApiError, aiohttp.ClientError) as exc:
            _raise(exc)
        return response.data  # type: ignore[return-value]

    def _text(self, text: str, attachments: list[Attachment]) -> str:
        extra = attachment_lines(attachments, self.public_url)
        text = f"{text}\n{extra}" if text and extra else (text or extra)
        return text[:MAX_TEXT] or PLACEHOLDER

    async def post(
        self, channel: str, author: UserRef, text: str, attachments: list[Attachment]
    ) -> str:
        data = await self._call(
            "chat_postMessage",
            channel=channel,
            text=self._text(text, attachments),
            username=author.name,
            icon_url=author.avatar,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(data["ts"])

    async def notice(self, channel: str, platform_msg: str, user_id: str, text: str) -> None:
        """An ephemeral message only the author sees, in the channel they wrote in."""
        await self._call("chat_postEphemeral", channel=channel, user=user_id, text=text[:MAX_TEXT])

    async def reply(self, channel: str, platform_msg: str, text: str) -> None:
        """In the message's thread (``thread_ts``), as the bot."""
        await self._call(
            "chat_postMessage",
            channel=channel,
            thread_ts=platform_msg,
            text=text[:MAX_TEXT] or PLACEHOLDER,
            unfurl_links=False,
            unfurl_media=False,
        )

    async def reply_file(
        self, channel: str, platform_msg: str, text: str, filename: str, data: bytes
    ) -> None:
        """A file in the message's thread with ``text`` as its comment: ``files_upload_v2``
        (``files.getUploadURLExternal``, the upload, ``files.completeUploadExternal``;
        the app needs the ``files:write`` scope)."""
        try:
            await self.client.files_upload_v2(
                channel=channel,
                thread_ts=platform_msg,
                content=data,
                filename=filename,
                title=filename,
                initial_comment=text[:MAX_TEXT],
            )
        except (SlackApiError, aiohttp.ClientError) as exc:
            _raise(exc)

    async def edit(self, channel: str, platform_msg: str, author: UserRef, text: str) -> None:
        await self._call("chat_update", channel=channel, ts=platform_msg, text=self._text(text, []))

    async def delete(self, channel: str, platform_msg: str) -> None:
        await self._call("chat_delete", channel=channel, ts=platform_msg)

    # ------------------------------------------------------------ streams

    async def stream_open(self, channel: str, stream: StreamState) -> str:
        recipient = self.authors.get((channel, stream.thread)) if stream.thread else None
        if self.native_streaming and stream.thread and recipient:
            opening = stream.text  # deltas may arrive while Slack answers: they are not sent yet
            try:
                data = await self.client.chat_startStream(
                    channel=channel,
                    thread_ts=stream.thread,
                    recipient_user_id=recipient,
                    recipient_team_id=self.team_id,
                    markdown_text=opening or None,
                )
            except SlackApiError as exc:
                error = exc.response.get("error") if isinstance(exc.response.data, dict) else ""
                if exc.response.status_code == 429:
                    _raise(exc)
                log.info("Slack native streaming unavailable (%s); using post-then-edit", error)
                if error in NO_NATIVE_STREAMING:
                    self.native_streaming = False
            except aiohttp.ClientError as exc:
                _raise(exc)
            else:
                stream.extra["native"] = True
                stream.extra["sent"] = len(opening)
                return str(data["ts"])
        return await self.post(channel, stream.agent, stream.text or PLACEHOLDER, [])

    async def stream_update(self, channel: str, stream: StreamState, text: str) -> None:
        if not stream.extra.get("native"):
            await super().stream_update(channel, stream, text)
            return
        sent = stream.extra.get("sent", 0)
        if len(text) > sent:
            await self._call(
                "chat_appendStream",
                channel=channel,
                ts=stream.platform_msg,
                markdown_text=text[sent:],
            )
            stream.extra["sent"] = len(text)

    async def stream_close(
        self, channel: str, stream: StreamState, text: str, cancelled: bool
    ) -> None:
        if not stream.extra.get("native"):
            await super().stream_close(channel, stream, text, cancelled)
            return
        sent = stream.extra.get("sent", 0)
        streamed = stream.text[:sent]
        rest = text[sent:] if text.startswith(streamed) else None
        await self._call(
            "chat_stopStream", channel=channel, ts=stream.platform_msg, markdown_text=rest or None
        )
        stream.extra["sent"] = len(text)
        if rest is None:  # the final text is not a continuation: replace it
            await self.edit(channel, stream.platform_msg or "", stream.agent, text)
