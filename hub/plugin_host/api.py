"""``HubAPI``: every operation a plugin may call on the hub (the ``hub`` hook argument).

:class:`hub.core.Hub` implements it; plugins and adapters see only this protocol (through
:mod:`hub.sdk`), never the hub's services. Everything here is part of the SDK's stability
promise: an operation is only removed or changed incompatibly in a major version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from piccolo.table import Table

from hub.ai.agents import Agent
from hub.ai.llm import ChatTurn, CompletionRequest
from hub.ai.streams import StreamMetrics
from hub.base.auth import Identity
from hub.base.config import Settings
from hub.base.protocol import (
    Attachment,
    ChatMessage,
    CommandResult,
    Error,
    RoomEvent,
    ServerFrame,
    UserRef,
)
from hub.realtime.shared import SharedState
from hub.store.store import AttachmentResult, RoomInfo

FrameHandler = Callable[[int, ServerFrame], Awaitable[None]]
"""What :meth:`HubAPI.subscribe` calls with each frame: ``(room offset, frame)``."""

Unsubscribe = Callable[[], Awaitable[None]]
"""Returned by the subscriptions: await it to stop receiving."""


class CommandArgument(Protocol):
    """An argument of a :class:`RoomCommand` (a :class:`hub.sdk.Arg`), read only."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> type: ...

    @property
    def required(self) -> bool: ...

    @property
    def choices(self) -> tuple[str, ...] | None: ...

    @property
    def greedy(self) -> bool: ...


class RoomCommand(Protocol):
    """A command as :meth:`HubAPI.room_commands` lists it: a :class:`hub.sdk.CommandSpec`,
    read only (this floor cannot name that class: it is the one that imports this)."""

    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str: ...

    @property
    def args(self) -> Sequence[CommandArgument]: ...

    @property
    def admin_only(self) -> bool: ...

    def usage_line(self) -> str: ...

    def parse(self, rest: str) -> dict[str, Any]:
        """The text after the command name as ``{argument: value}``, or ``UsageError``."""
        ...


class HubAPI(Protocol):
    """The hub as a plugin sees it.

    Errors are the SDK's types: :class:`MessageRefused`, :class:`RoomNotVisible`,
    :class:`RoomExists`, :class:`ModelRefused`, :class:`LLMError`, :class:`CancelRefused`.
    """

    # ------------------------------------------------------------ configuration and state

    @property
    def settings(self) -> Settings:
        """The hub's effective settings (read only)."""
        ...

    @property
    def shared(self) -> SharedState:
        """Keys with a TTL, leases and channels shared by every replica (memory or Redis)."""
        ...

    def bind_tables(self, tables: Iterable[type[Table]]) -> None:
        """Put the plugin's own Piccolo tables on the hub's database (its engine, pool and
        transactions): the plugin then queries them with Piccolo, never holding an engine.
        Its migrations create them. ``TypeError`` for anything but a ``Table`` class."""
        ...

    def plugin_settings(self, name: str, room: str | None = None) -> Any:
        """Plugin ``name``'s validated settings struct (the type its
        ``lydian_plugin_settings`` returned; only the plugin knows it), with ``room``'s
        overrides applied; ``None`` if it declares no settings."""
        ...

    def authenticate(self, token: str) -> Identity | None:
        """The identity of a hub token (signature, expiry and revocation checked), else
        ``None``. For routes that cannot use the hub's own authentication (a browser
        WebSocket passes the token in the query string)."""
        ...

    def spawn(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run background work owned by the hub (cancelled on shutdown, errors logged)."""
        ...

    # ------------------------------------------------------------ rooms and messages

    async def room(self, room_id: str) -> RoomInfo | None:
        """The room, or ``None`` if there is none (no visibility check: see
        :meth:`visible_room` when acting for someone)."""
        ...

    async def visible_room(self, room_id: str, identity: Identity) -> RoomInfo:
        """The room if it exists and ``identity`` may see it, else :class:`RoomNotVisible`."""
        ...

    async def create_room(
        self,
        room_id: str,
        *,
        name: str | None = None,
        topic: str = "",
        kind: str = "public",
        created_by: str,
    ) -> RoomInfo:
        """Create a room (``kind``: ``public`` or ``private``); :class:`RoomExists` if taken."""
        ...

    def check_message(self, text: str, *, kind: str = "user", attachments: int = 0) -> None:
        """The rules :meth:`post_message` applies (blank, size, attachment count), without
        posting: :class:`MessageRefused` if broken. For a door that must refuse early."""
        ...

    async def post_message(
        self,
        room_id: str,
        author: UserRef,
        text: str,
        *,
        kind: str = "user",
        client_id: str | None = None,
        reply_to: str | None = None,
        attachments: Sequence[str | Attachment] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> tuple[ChatMessage, bool]:
        """Validate, persist and publish a message; ``(message, duplicate)`` (a repeated
        ``client_id`` is stored once). Raises :class:`MessageRefused` (nothing stored)."""
        ...

    async def history(
        self, room_id: str, before: int | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """Up to ``limit`` messages with an offset below ``before`` (the newest if None),
        oldest first."""
        ...

    async def publish_event(self, room_id: str, event: RoomEvent) -> None:
        """Send an ``event`` frame to everybody in the room (not stored, not ordered)."""
        ...

    async def subscribe(
        self, room_id: str, on_frame: Callable[[int, ServerFrame], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Receive the room's server frames in order, with gaps filled from the store:
        ``on_frame(offset, frame)``. Returns the unsubscribe.

        Frames queue for ``on_frame``, at most ``subscriber_queue_frames`` (1024): a
        subscriber that falls that far behind has its queue dropped, then gets
        ``on_frame(N, Error(code=ErrorCode.SLOW_CONSUMER))``, N being the offset of the last
        message it got, and every stored message after N, read from the store; the events
        it missed (typing, presence, stream frames) are not replayed."""
        ...

    async def run_command(
        self, identity: Identity, room: str, text: str, ref: str | None = None
    ) -> CommandResult | Error:
        """Run the ``/command`` in ``text`` in ``room`` as ``identity`` (enablement and
        permissions checked); the reply frame."""
        ...

    def room_commands(self, room: str) -> list[RoomCommand]:
        """The commands (:class:`CommandSpec` objects) :meth:`run_command` would find in
        ``room`` now, by name: the
        built-ins and those of the plugins enabled there and running. Admin-only commands
        are listed too (``admin_only``): running one is still checked against the caller.
        E.g. to turn the room's commands into a grammar (the speech plugin's voice commands)."""
        ...

    # ------------------------------------------------------------ agents and models

    def list_agents(self) -> dict[str, Agent]:
        """Every agent plugins registered, by name."""
        ...

    def agent(self, name: str) -> Agent | None:
        """The agent named ``name``, if any."""
        ...

    async def answer(
        self,
        agent: Agent | str,
        room: str,
        question: str,
        *,
        reply_to: ChatMessage | None = None,
        requested_by: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        limited: bool = True,
        context: Sequence[ChatTurn] = (),
    ) -> str:
        """Stream ``agent``'s answer to ``question`` into ``room`` (the room's history as
        context); returns the stream id once started. Counts towards ``requested_by``'s
        model use: over it, :class:`ModelRefused` before anything runs (``limited=False``
        when :meth:`check_model` was called already). ``context``: turns placed right after
        the agent's system prompt (e.g. excerpts of documents, as ``system`` turns); they
        count against the agent's ``context_tokens`` before the room's history does."""
        ...

    def enabled_agents(self, room: str) -> list[Agent]:
        """The agents that may answer in ``room`` now (enabled there, plugin running)."""
        ...

    def complete(
        self,
        agent: Agent,
        turns: list[ChatTurn],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """``agent``'s answer to a whole conversation, piece by piece, outside any room
        (:class:`LLMError` while iterating). Not counted: see :meth:`charge_model_tokens`."""
        ...

    def accepts_images(self, agent: Agent) -> bool:
        """Whether ``agent``'s provider passes image parts (:attr:`ChatTurn.images`) to its
        model; when not, :meth:`complete` refuses turns with images (``images_unsupported``)."""
        ...

    async def check_model(self, role: str, user_id: str) -> None:
        """Before a model runs for ``user_id`` (``role`` from :func:`role_of`): raise
        :class:`ModelRefused` if they may not, or have used up their requests or tokens."""
        ...

    async def charge_model_tokens(self, role: str, user_id: str, tokens: int) -> None:
        """Count ``tokens`` of model use to ``user_id`` (known only afterwards)."""
        ...

    def model_role(self, user_id: str) -> str:
        """The role whose model limits apply to ``user_id`` when only the id is known (not
        their :class:`Identity`, e.g. an upload's owner): ``admin``, ``agent``, ``guest`` or
        ``user``, as this hub process has seen them (``guest`` for guest ids, else ``user``
        for someone it has not seen)."""
        ...

    # ------------------------------------------------------------ streams

    async def start_stream(
        self,
        room: str,
        author: UserRef,
        pieces: AsyncIterator[str],
        *,
        reply_to: str | None = None,
        requested_by: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Stream ``pieces`` into ``room`` as ``author`` (``stream_start``, deltas, then the
        stored message, exactly as streamed); returns the stream id once started."""
        ...

    async def cancel_stream(self, room: str, stream_id: str, identity: Identity) -> None:
        """Stop a stream wherever it runs; :class:`CancelRefused` if it is not running in
        ``room`` or ``identity`` may not stop it (only the asker, the room's owner, admins)."""
        ...

    def record_stream(self, metrics: StreamMetrics) -> None:
        """Add the figures of a stream run outside a room (e.g. an HTTP API) to the hub's."""
        ...

    # ------------------------------------------------------------ attachments

    async def process_attachment(
        self,
        room: str,
        attachment_id: str,
        *,
        handlers: set[str] | None = None,
        password: str | None = None,
    ) -> list[str]:
        """Run the attachment handlers enabled in ``room`` (or only ``handlers``) on an
        upload of that room again, even if its bytes were processed before; returns the
        ``attachment_id:handler`` jobs queued. Progress arrives as ``attachment`` frames.
        ``password`` (an encrypted file's) reaches these jobs only, never stored or logged."""
        ...

    async def store_attachment(
        self, room: str, filename: str, media_type: str, data: bytes, uploaded_by: str
    ) -> Attachment:
        """Keep ``data`` as a hub upload of ``room`` (e.g. a file a bridge fetched from a
        platform), checked like a widget upload (size limit, sniffed type); post a message
        with the returned attachment to have it processed. :class:`ValueError` with a clear
        reason when it cannot be kept. The file is written off the event loop."""
        ...

    async def attachment_results(self, attachment_id: str) -> list[AttachmentResult]:
        """Every stored handler result for this upload's bytes (``done`` or ``failed``);
        :class:`LookupError` if there is no such upload."""
        ...

    async def wait_attachment_results(
        self, attachment_id: str, timeout: float = 60.0
    ) -> list[AttachmentResult]:
        """:meth:`attachment_results` once the handlers' jobs on this upload have ended:
        those running, and those of a message carrying it that was just posted (its jobs
        start in the background; an agent answering that message calls this to see what
        they extract). At once when no job is queued or running. Woken by the jobs' end (no
        polling); it sees the jobs of the hub process it runs in, which is the one that
        posted the message for a ``lydian_message`` hook. :class:`TimeoutError`
        (saying which handlers are still at work) after ``timeout`` seconds;
        :class:`LookupError` if there is no such upload."""
        ...

    # ------------------------------------------------------------ cache

    def cache_stats(self) -> dict[str, Any]:
        """Counters and gauges of the hub's cache (JSON-ready)."""
        ...


@runtime_checkable
class LLMProvider(Protocol):
    """An LLM provider as a plugin writes it (``lydian_llm_providers``): a ``name`` agents
    select it by, and three methods given the hub. (The AI floor sees the same shape as
    :class:`hub.ai.llm.Provider`, with the hub left untyped there because it sits below.)"""

    name: str

    def configured(self, hub: HubAPI) -> bool:
        """Whether the provider has what it needs (URL, key, model) on this hub."""
        ...

    def models(self, hub: HubAPI) -> list[str]: ...

    def stream(self, request: CompletionRequest, hub: HubAPI) -> AsyncIterator[str]:
        """Yield the answer piece by piece; raise :class:`hub.sdk.LLMError` on trouble."""
        ...
