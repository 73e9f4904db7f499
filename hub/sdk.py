"""The Lydian SDK: the whole public surface for plugin and adapter authors.

A plugin imports ``hub.sdk`` and nothing else from ``hub``::

    from hub.sdk import Arg, CommandContext, CommandSpec, HubAPI, hookimpl

What is here: :data:`hookimpl`; the types hooks receive and return (messages, users,
attachments, commands, agents, LLM providers, cache strategies, dashboard pages, settings
markers); the wire frames a room subscription delivers; the errors the hub raises; and
:class:`HubAPI`, every operation a plugin may call on the ``hub`` it is given (a route
handler gets it with :func:`hub_of`). ``docs/plugins.md`` documents it.

Stability promise (semantic versioning of the ``lydian-hub`` distribution): the names in
``__all__`` and the operations of :class:`HubAPI` are only removed or changed
incompatibly in a major version; minor versions only add (new names, new operations, new
optional arguments). Anything not exported here (every other ``hub.*`` module, every
attribute of the hub object that :class:`HubAPI` does not name) is internal and may change
in any release. A plugin that needs something missing here should ask for it to be added.
"""

from __future__ import annotations

from typing import Any

from litestar import Response
from litestar.connection import ASGIConnection

from hub import __version__
from hub.access.limits import ModelRefused, retry_header, role_of
from hub.ai.agents import OFFLINE, Agent
from hub.ai.llm import (
    BAD_RESPONSE,
    IMAGE_TOKENS,
    IMAGES_UNSUPPORTED,
    NO_PROVIDER,
    UPSTREAM_ERROR,
    UPSTREAM_TIMEOUT,
    ChatTurn,
    CompletionRequest,
    ImagePart,
    LLMError,
    estimate_tokens,
)
from hub.ai.streams import CancelRefused, StreamMetrics
from hub.base.auth import Identity
from hub.base.config import Settings
from hub.base.errors import MessageRefused, Refusal, RoomNotVisible
from hub.base.protocol import (
    INT64_MAX,
    Ack,
    Attachment,
    AttachmentEvent,
    ChatMessage,
    CommandResult,
    ErrorCode,
    Frame,
    FrameError,
    History,
    Joined,
    Left,
    MessageFrame,
    Ping,
    PresenceEntry,
    PresenceFrame,
    Reconnect,
    RoomEvent,
    ServerFrame,
    StreamDelta,
    StreamEnd,
    StreamError,
    StreamSnapshot,
    StreamStart,
    TypingFrame,
    UserRef,
    Welcome,
    decode_server,
    encode,
)
from hub.base.protocol import Error as ErrorFrame
from hub.cache.strategy import CacheStrategy
from hub.media.pipeline import (
    AttachmentHandler,
    AttachmentInfo,
    DerivedFile,
    HandlerError,
    HandlerResult,
)
from hub.plugin_host.api import (
    CommandArgument,
    FrameHandler,
    HubAPI,
    LLMProvider,
    RoomCommand,
    Unsubscribe,
)
from hub.plugin_host.commands import (
    Arg,
    CommandContext,
    CommandError,
    CommandForbidden,
    CommandSpec,
    UsageError,
)
from hub.plugin_host.dashboard import DashboardPage, RouteHandler
from hub.plugin_host.hookspecs import hookimpl
from hub.plugin_host.settings import PerRoom, Secret
from hub.realtime.shared import SharedState
from hub.store.store import AttachmentResult, DerivedAttachment, RoomExists, RoomInfo

NO_STORE = {"Cache-Control": "no-store"}
"""Headers of an answer no cache may keep (model output, anything per user)."""


def openai_error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """An error answer in OpenAI's shape (``{"error": {"message", "type", "code",
    "param"}}``), never cached: for routes of OpenAI-compatible APIs (``/v1/...``), so that
    OpenAI's clients raise their usual exceptions with the message."""
    body = {"error": {"message": message, "type": kind, "code": code, "param": None}}
    return Response(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def hub_of(connection: ASGIConnection[Any, Any, Any, Any]) -> HubAPI:
    """The hub serving a request or WebSocket, in a ``lydian_routes`` handler."""
    hub: HubAPI = connection.app.state.hub
    return hub


__all__ = [
    "BAD_RESPONSE",
    "IMAGES_UNSUPPORTED",
    "IMAGE_TOKENS",
    "INT64_MAX",
    "NO_PROVIDER",
    "NO_STORE",
    "OFFLINE",
    "UPSTREAM_ERROR",
    "UPSTREAM_TIMEOUT",
    "Ack",
    "Agent",
    "Arg",
    "Attachment",
    "AttachmentEvent",
    "AttachmentHandler",
    "AttachmentInfo",
    "AttachmentResult",
    "CacheStrategy",
    "CancelRefused",
    "ChatMessage",
    "ChatTurn",
    "CommandArgument",
    "CommandContext",
    "CommandError",
    "CommandForbidden",
    "CommandResult",
    "CommandSpec",
    "CompletionRequest",
    "DashboardPage",
    "DerivedAttachment",
    "DerivedFile",
    "ErrorCode",
    "ErrorFrame",
    "Frame",
    "FrameError",
    "FrameHandler",
    "HandlerError",
    "HandlerResult",
    "History",
    "HubAPI",
    "Identity",
    "ImagePart",
    "Joined",
    "LLMError",
    "LLMProvider",
    "Left",
    "MessageFrame",
    "MessageRefused",
    "ModelRefused",
    "PerRoom",
    "Ping",
    "PresenceEntry",
    "PresenceFrame",
    "Reconnect",
    "Refusal",
    "RoomCommand",
    "RoomEvent",
    "RoomExists",
    "RoomInfo",
    "RoomNotVisible",
    "RouteHandler",
    "Secret",
    "ServerFrame",
    "Settings",
    "SharedState",
    "StreamDelta",
    "StreamEnd",
    "StreamError",
    "StreamMetrics",
    "StreamSnapshot",
    "StreamStart",
    "TypingFrame",
    "Unsubscribe",
    "UsageError",
    "UserRef",
    "Welcome",
    "__version__",
    "decode_server",
    "encode",
    "estimate_tokens",
    "hookimpl",
    "hub_of",
    "openai_error",
    "retry_header",
    "role_of",
]
