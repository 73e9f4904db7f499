"""The plugin contract: every hook a Lydian plugin may implement.

A plugin is any importable object (usually a module) whose functions are marked with
:data:`hookimpl` and named after a hook below. It is found through the entry-point group
``lydian.plugins``; built-in plugins are registered exactly the same way.

Rules every hook follows (see ``docs/plugins.md``):

* A hook may be a plain function or ``async def``; whatever it returns that is awaitable
  is awaited. Plain functions (hooks and command handlers, all but ``lydian_routes``) run
  in a worker thread, so they may block, but they cannot touch the event loop: make
  hooks that call the hub (``hub.post_message``, ``hub.spawn``) ``async def``.
* A hook may accept any subset of the arguments listed in its spec, by name.
* Every call is isolated: an exception, a timeout (``plugin_hook_timeout``) or a return
  value of the wrong type is reported to the room as an ``event`` frame and logged with
  the plugin's name; the other plugins and the room carry on. A plugin that keeps failing
  in a room is switched off there and the room's admins are told.
* Room hooks (messages, transforms, commands, agents) only run in rooms where the plugin
  is enabled (``/plugins enable NAME``); the rest run once per hub process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import msgspec

    from hub.ai.agents import Agent
    from hub.base.protocol import ChatMessage, UserRef
    from hub.cache.strategy import CacheStrategy
    from hub.media.pipeline import AttachmentHandler
    from hub.plugin_host.api import HubAPI, LLMProvider
    from hub.plugin_host.commands import CommandSpec
    from hub.plugin_host.dashboard import DashboardPage, RouteHandler

PROJECT = "lydian"


hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Mark a plugin function as a hook implementation: ``@hookimpl def lydian_commands(): ...``."""


# --------------------------------------------------------------------------- lifecycle


@hookspec
def lydian_startup(hub: HubAPI) -> None:
    """Called once when the hub process starts, after the store and broker are up.

    Open connections, warm caches, start background work with ``hub.spawn(coro)`` (tasks
    spawned there are cancelled on shutdown). If it raises or times out, the plugin stays
    off in every room while this process runs.

    Example::

        @hookimpl
        async def lydian_startup(hub):
            hub.spawn(poll_feeds(hub), name="feeds")
    """


@hookspec
def lydian_shutdown(hub: HubAPI) -> None:
    """Called once when the hub process stops, before the store and broker close.

    Flush and close what ``lydian_startup`` opened. Errors are logged and ignored.
    """


# --------------------------------------------------------------------------- room messages


@hookspec
def lydian_message(message: ChatMessage, hub: HubAPI) -> None:
    """Observe a room message after it is persisted and published.

    Runs in the background (the sender never waits for it), only in rooms where the plugin
    is enabled. Answer with ``await hub.post_message(message.room, me, text, kind="agent")``
    — and check ``message.user`` so that you do not answer yourself.

    Example::

        @hookimpl
        async def lydian_message(message, hub):
            if "deploy" in message.text and message.kind == "user":
                await hub.post_message(message.room, BOT, "Deploys are frozen today.")
    """


@hookspec
def lydian_transform_message(text: str, room: str, author: UserRef, hub: HubAPI) -> str | None:
    """Rewrite a message's text before it is persisted; return ``None`` to keep it.

    Transforms of all plugins enabled in ``room`` form a chain: each gets the text the
    previous one returned. The sender waits for the chain, so keep it fast. Returning
    anything but a ``str`` or ``None`` is an error and leaves the text unchanged.

    Example::

        @hookimpl
        def lydian_transform_message(text):
            return text.replace(":tada:", "🎉")
    """


# --------------------------------------------------------------------------- chat-ops


@hookspec
def lydian_commands() -> list[CommandSpec]:
    """Register chat-ops commands (:class:`hub.sdk.CommandSpec`), listed by ``/help``.

    A command answers only in rooms where its plugin is enabled. Its handler gets a
    :class:`hub.sdk.CommandContext` and the parsed arguments and returns the reply
    text (or raises ``UsageError`` / ``CommandForbidden``).

    Example::

        @hookimpl
        def lydian_commands():
            return [CommandSpec(name="echo", help="Repeat text", handler=echo,
                                args=[Arg("text", greedy=True)])]
    """


# --------------------------------------------------------------------------- AI


@hookspec
def lydian_agents() -> list[Agent]:
    """Register agents: named participants that answer in a room, possibly streaming.

    Return :class:`hub.sdk.Agent` objects. An agent is enabled or disabled per room
    under its own name, like a plugin (``/plugins enable NAME``); it is off until enabled
    unless ``default_enabled=True``.

    Example::

        @hookimpl
        def lydian_agents():
            return [Agent(name="summarizer", system_prompt="Summarize the thread.")]
    """


@hookspec
def lydian_llm_providers() -> list[LLMProvider]:
    """Register LLM providers (:class:`hub.sdk.LLMProvider`: ``name``, ``configured(hub)``,
    ``models(hub)``, ``stream(request, hub)``) that agents select by name."""


@hookspec
def lydian_cache_strategies() -> list[CacheStrategy]:
    """Register cache strategies (subclasses of :class:`hub.sdk.CacheStrategy`),
    selected by ``name`` per cache namespace."""


@hookspec
def lydian_attachment_handlers() -> list[AttachmentHandler]:
    """Register attachment handlers (:class:`hub.sdk.AttachmentHandler`): what to do with
    uploaded files of some media types (``"application/pdf"``, ``"image/*"``).

    When a message refers to an upload, every handler matching its media type whose plugin
    is enabled in the room runs on it as a job in a child process (``run(data, info)``, a
    top-level function, within the handler's ``timeout``, ``memory_mb`` and ``max_bytes``)
    and returns a :class:`hub.sdk.HandlerResult`. A handler given ``run_async`` instead (an
    ``async`` function ``(data, info, hub)``, for network-bound work such as a model call)
    is awaited in the hub process, within its ``timeout``. Results are stored by content
    hash and handler name, and the room sees ``attachment`` frames. See ``docs/plugins.md``.

    Example::

        def count_lines(data: bytes, info: AttachmentInfo) -> HandlerResult:
            n = data.count(b"\\n")
            return HandlerResult(summary=f"{n} lines", data={"lines": n})

        @hookimpl
        def lydian_attachment_handlers():
            return [AttachmentHandler("lines", ("text/*",), count_lines, timeout=10)]
    """


# --------------------------------------------------------------------------- web


@hookspec
def lydian_routes() -> list[RouteHandler]:
    """Extra Litestar route handlers (``@get``, ``@post``, controllers, ``@websocket``).

    Collected once, when the app is built: adding or removing routes needs a restart.
    Handlers reach the hub with ``hub_of(request)`` (a :class:`hub.sdk.HubAPI`); they are
    behind the same JWT authentication as the rest of the API unless marked
    ``exclude_from_auth=True``.

    Example::

        @get("/api/weather/{city:str}")
        async def weather(city: str) -> dict: ...

        @hookimpl
        def lydian_routes():
            return [weather]
    """


@hookspec
def lydian_dashboard_pages() -> list[DashboardPage]:
    """Admin pages: :class:`hub.sdk.DashboardPage` objects (``title``, ``path``,
    ``handler``, ``description``). The hub only collects them (no navigation of its own);
    serve the page itself from ``lydian_routes``."""


# --------------------------------------------------------------------------- configuration


@hookspec
def lydian_plugin_settings() -> type[msgspec.Struct] | None:
    """The plugin's settings: a ``msgspec.Struct`` type with defaults, or ``None``.

    Values come from the ``[plugins.NAME]`` table of the config file and from environment
    variables ``LYDIAN_PLUGIN_<NAME>_<FIELD>``. Mark secret fields with
    ``Annotated[str, Secret]`` (:mod:`hub.sdk`): they are read only from the environment
    and never shown. Mark fields a room may override with ``PerRoom``
    (``[plugins.NAME.rooms.ROOM]``). Invalid settings keep the plugin off, with the
    field and the reason logged at startup. Read them with
    ``hub.plugin_settings("NAME", room)`` or, in a command, ``ctx.settings()``.
    """
