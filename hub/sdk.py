"""The public plugin API: everything a plugin or adapter may import from the hub.

(Minimal version from the ``adapters-sdk`` branch: the names the built-in adapters need;
to be merged with the full SDK module.)
"""

from __future__ import annotations

from hub.ai.streams import CancelRefused
from hub.base.auth import Identity
from hub.base.errors import MessageRefused, Refusal, RoomNotVisible
from hub.base.protocol import (
    Attachment,
    ChatMessage,
    CommandResult,
    MessageFrame,
    RoomEvent,
    ServerFrame,
    StreamDelta,
    StreamEnd,
    StreamError,
    StreamStart,
    UserRef,
)
from hub.plugin_host.api import HubAPI
from hub.plugin_host.commands import Arg, CommandContext, CommandForbidden, CommandSpec, UsageError
from hub.plugin_host.hookspecs import hookimpl
from hub.plugin_host.settings import Secret
from hub.realtime.shared import SharedState, Unsubscribe
from hub.store.store import RoomExists, RoomInfo

__all__ = [
    "Arg",
    "Attachment",
    "CancelRefused",
    "ChatMessage",
    "CommandContext",
    "CommandForbidden",
    "CommandResult",
    "CommandSpec",
    "HubAPI",
    "Identity",
    "MessageFrame",
    "MessageRefused",
    "Refusal",
    "RoomEvent",
    "RoomExists",
    "RoomInfo",
    "RoomNotVisible",
    "Secret",
    "ServerFrame",
    "SharedState",
    "StreamDelta",
    "StreamEnd",
    "StreamError",
    "StreamStart",
    "Unsubscribe",
    "UsageError",
    "UserRef",
    "hookimpl",
]
