"""Chat-ops commands: declaration, argument parsing, permissions and the built-in commands.

A plugin returns :class:`CommandSpec` objects from ``lydian_commands``. The text
``/roll 2d6 loud`` is split shell-style, matched against the spec's :class:`Arg` list and
handed to the handler as a dict; a mismatch is a :class:`UsageError` carrying the usage
line. Built-in commands (``/help``, ``/plugins``) answer in every room; a plugin's
commands answer only where the plugin is enabled.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from hub.base.auth import Identity
from hub.base.errors import CommandError
from hub.base.protocol import INT64_MAX, UserRef

if TYPE_CHECKING:
    from hub.plugin_host.api import HubAPI

CORE = "core"
"""Owner name of the built-in commands."""


class _Listed(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def error(self) -> str | None: ...


class _Report(Protocol):
    def lines(self) -> list[str]: ...


class CommandHost(Protocol):
    """What commands need from the plugin host that runs them (the built-ins' registry):
    :class:`hub.plugin_host.host.PluginHost` is one."""

    def settings_for(self, name: str, room: str | None = None) -> Any: ...

    def command(self, name: str) -> tuple[CommandSpec, str] | None: ...

    def all_commands(self) -> list[tuple[CommandSpec, str]]: ...

    def is_enabled(self, room: str, name: str) -> bool: ...

    def infos(self) -> Sequence[_Listed]: ...

    def agent_names(self) -> list[str]: ...

    async def reload(self, *, broadcast: bool = True) -> _Report: ...

    async def set_enabled(
        self,
        room: str,
        name: str,
        enabled: bool,
        *,
        by: Identity | str,
        reason: str | None = None,
    ) -> None: ...


class UsageError(CommandError):
    """Wrong arguments; the detail should contain the usage line."""

    code = "usage"


class CommandForbidden(CommandError):
    """The caller lacks the permission (e.g. an admin-only command)."""

    code = "forbidden"


class Arg(msgspec.Struct, frozen=True):
    """One positional argument. ``greedy`` takes the rest of the line as one string."""

    name: str
    type: type = str
    required: bool = True
    choices: tuple[str, ...] | None = None
    greedy: bool = False
    help: str = ""


Handler = Callable[["CommandContext", dict[str, Any]], "str | Awaitable[str | None] | None"]


class CommandSpec(msgspec.Struct, frozen=True):
    """A chat-ops command. ``name`` is used without the slash (``"roll"`` for ``/roll``)."""

    name: str
    help: str
    handler: Handler
    args: list[Arg] = []
    admin_only: bool = False
    usage: str | None = None

    def usage_line(self) -> str:
        if self.usage:
            return self.usage if self.usage.startswith("/") else f"/{self.name} {self.usage}"
        parts = [f"/{self.name}"]
        for arg in self.args:
            label = "|".join(arg.choices) if arg.choices else arg.name.upper()
            label += "..." if arg.greedy else ""
            parts.append(label if arg.required else f"[{label}]")
        return " ".join(parts)

    def parse(self, rest: str) -> dict[str, Any]:
        """Parse the text after the command name into ``{arg name: value}``."""
        usage = f"usage: {self.usage_line()}"
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise UsageError(f"{exc}; {usage}") from None
        out: dict[str, Any] = {}
        for index, arg in enumerate(self.args):
            if arg.greedy:
                value: Any = " ".join(words[index:]) if index < len(words) else None
                words = words[:index]
            elif index < len(words):
                value = words[index]
            else:
                value = None
            if value is None or value == "":
                if arg.required:
                    raise UsageError(f"missing {arg.name.upper()}; {usage}")
                out[arg.name] = None
                continue
            if arg.choices and value not in arg.choices:
                raise UsageError(
                    f"{arg.name.upper()} must be one of {', '.join(arg.choices)}; {usage}"
                )
            try:
                out[arg.name] = arg.type(value)
                if arg.type is int and not -INT64_MAX - 1 <= out[arg.name] <= INT64_MAX:
                    raise ValueError("beyond int64")  # a client's integer: range-checked
            except (TypeError, ValueError):
                raise UsageError(
                    f"{arg.name.upper()} must be {getattr(arg.type, '__name__', arg.type)}, "
                    f"not {value!r}; {usage}"
                ) from None
        if len(words) > len(self.args) and not any(a.greedy for a in self.args):
            raise UsageError(f"too many arguments; {usage}")
        return out


class CommandContext:
    """What a command handler knows about its call."""

    def __init__(
        self,
        hub: HubAPI | None,
        room: str,
        identity: Identity,
        command: str,
        plugin: str,
        ref: str | None = None,
        *,
        host: CommandHost | None = None,
    ) -> None:
        self.hub = hub
        self.host = host  # the plugin host running the command (the built-ins' registry)
        self.room = room
        self.identity = identity
        self.user = UserRef(id=identity.id, name=identity.name)
        self.command = command
        self.plugin = plugin
        self.ref = ref

    @property
    def is_admin(self) -> bool:
        return self.identity.is_admin

    def settings(self) -> Any:
        """This plugin's settings for this room (``None`` without a settings struct)."""
        if self.host is None:
            return None
        return self.host.settings_for(self.plugin, self.room)


def split_command(text: str) -> tuple[str, str]:
    """``"/roll 2d6"`` → ``("roll", "2d6")``; raise :class:`UsageError` if not a command."""
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2 or stripped[1].isspace():
        raise UsageError("a command starts with '/', e.g. /help")
    name, _, rest = stripped[1:].partition(" ")
    return name.lower(), rest.strip()


# --------------------------------------------------------------------------- built-ins


def _help_line(spec: CommandSpec) -> str:
    admin = " (admin)" if spec.admin_only else ""
    return f"{spec.usage_line()} — {spec.help}{admin}"


async def _help(ctx: CommandContext, args: dict[str, Any]) -> str:
    assert ctx.host is not None
    plugins = ctx.host
    name = args.get("command")
    if name:
        name = name.lstrip("/").lower()
        found = plugins.command(name)
        if found is None:
            raise UsageError(f"no command /{name}; /help lists them")
        spec, owner = found
        lines = [_help_line(spec)]
        lines += [f"  {a.name.upper()}: {a.help}" for a in spec.args if a.help]
        if owner != CORE and not plugins.is_enabled(ctx.room, owner):
            lines.append(f"from plugin {owner!r}, not enabled in this room")
        elif owner != CORE:
            lines.append(f"from plugin {owner!r}")
        return "\n".join(lines)
    here, elsewhere = [], []
    for spec, owner in plugins.all_commands():
        if owner == CORE or plugins.is_enabled(ctx.room, owner):
            here.append(_help_line(spec))
        else:
            elsewhere.append(f"{spec.usage_line()} (plugin {owner})")
    text = "Commands:\n" + "\n".join(here)
    if elsewhere:
        text += "\nNot enabled in this room:\n" + "\n".join(elsewhere)
    return text


async def _plugins(ctx: CommandContext, args: dict[str, Any]) -> str:
    assert ctx.host is not None
    plugins = ctx.host
    action = args.get("action") or "list"
    name = args.get("name")
    if action == "list":
        lines = []
        for info in plugins.infos():
            state = "on" if plugins.is_enabled(ctx.room, info.name) else "off"
            if info.error:
                state = f"broken: {info.error}"
            lines.append(f"{info.name} {info.version} — {state}")
        for agent in plugins.agent_names():
            state = "on" if plugins.is_enabled(ctx.room, agent) else "off"
            lines.append(f"{agent} (agent) — {state}")
        return "Plugins in this room:\n" + ("\n".join(lines) or "(none installed)")
    if not ctx.is_admin:
        raise CommandForbidden(f"/plugins {action} is for admins only")
    if action == "reload":
        report = await plugins.reload()
        return "\n".join(["rescanned plugins (other replicas follow)", *report.lines()])
    if not name:
        raise UsageError(f"missing NAME; usage: /plugins {action} NAME")
    await plugins.set_enabled(ctx.room, name, action == "enable", by=ctx.identity)
    return f"plugin {name!r} {'enabled' if action == 'enable' else 'disabled'} in {ctx.room}"


async def _password(ctx: CommandContext, args: dict[str, Any]) -> str:
    """``/password ATTACHMENT_ID PASSWORD``: process an encrypted upload again with it.

    The password goes to these jobs only (never stored, logged or echoed): a command is
    never stored as a room message, its reply goes to the caller alone, and the command's
    text is redacted wherever a command is logged (:func:`redact`)."""
    import asyncio

    from hub.media.attachments import AttachmentStore, UnknownAttachment
    from hub.media.pipeline import PasswordRefused, password_jobs

    if ctx.hub is None:
        raise CommandError("no hub to run this command on")
    attachment_id = str(args["attachment"])
    store = AttachmentStore.for_settings(ctx.hub.settings)
    try:
        meta = await asyncio.to_thread(store.get, attachment_id)
    except UnknownAttachment:
        meta = None
    if meta is None or meta.room != ctx.room:
        raise CommandError(f"no attachment {attachment_id!r} in {ctx.room}")
    try:
        queued = await password_jobs(ctx.hub, ctx.room, meta, ctx.identity, args["password"])
    except PasswordRefused as exc:
        if exc.status == 403:
            raise CommandForbidden(exc.detail) from None
        raise CommandError(exc.detail) from None
    handlers = ", ".join(q.split(":", 1)[1] for q in queued)
    return f"processing {meta.name} again with the password ({handlers}); it is not kept"


SECRET_COMMANDS = {"password": 2}
"""Commands with a secret: how many words of their text are shown in logs."""


def redact(text: str) -> str:
    """A command's text fit for a log line: the secret of ``/password`` replaced by ***."""
    stripped = text.strip()
    name = stripped[1:].partition(" ")[0].lower() if stripped.startswith("/") else ""
    keep = SECRET_COMMANDS.get(name)
    if keep is None:
        return text
    words = stripped.split()
    return " ".join(words[:keep] + (["***"] if len(words) > keep else []))


BUILTIN_COMMANDS = [
    CommandSpec(
        name="help",
        help="list the commands, or show how to use one",
        handler=_help,
        args=[Arg("command", required=False, help="a command name, e.g. roll")],
    ),
    CommandSpec(
        name="plugins",
        help="list plugins in this room; admins enable, disable or reload them",
        handler=_plugins,
        args=[
            Arg("action", required=False, choices=("list", "enable", "disable", "reload")),
            Arg("name", required=False, help="plugin or agent name"),
        ],
    ),
    CommandSpec(
        name="password",
        help="process an encrypted file again with its password (used once, never kept)",
        handler=_password,
        args=[
            Arg("attachment", help="the attachment id"),
            Arg("password", greedy=True, help="the file's password"),
        ],
    ),
]
