"""The plugin host: discovery, isolation, per-room enablement, and command dispatch.

Plugins come from the entry-point group ``lydian.plugins`` (filtered by the allow-list
``LYDIAN_PLUGINS=a,b``) or from :meth:`PluginHost.register`. Each hook implementation is
called on its own, never through pluggy's all-or-nothing loop, so that one plugin's
exception, hang (``plugin_hook_timeout``) or garbage return value cannot hurt the others:
the failure is logged with the plugin's name, the room gets an ``event`` frame, and after
``plugin_max_failures`` consecutive failures in a room the plugin is switched off there.

Per-room enablement lives in the store; each process keeps a cache that it updates from
``hub:control`` broker messages, so a change made on one replica applies on all at once.
``LYDIAN_TRACE_HOOKS=1`` logs every hook call with its plugin, room, result and duration.

The host is given what it works with when it starts (:meth:`PluginHost.start`): the hub as
plugins see it (``HubAPI``, handed to hooks and commands), the store (enablement), the
broker (``hub:control``), the rooms (events) and ``spawn``; it never reaches into the hub.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import site
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import msgspec
import pluggy

from hub.base.auth import Identity
from hub.base.config import Settings
from hub.base.protocol import CommandResult, Error, ErrorCode, Frame, RoomEvent, UserRef, encode
from hub.media.pipeline import check_handler
from hub.plugin_host import hookspecs
from hub.plugin_host.api import HubAPI
from hub.plugin_host.commands import (
    BUILTIN_COMMANDS,
    CORE,
    CommandContext,
    CommandError,
    CommandSpec,
    UsageError,
    split_command,
)
from hub.plugin_host.settings import PluginConfigError, PluginSettings, load_plugin_settings
from hub.plugin_host.threads import DaemonExecutor
from hub.realtime.broker import CONTROL_CHANNEL, Broker
from hub.realtime.rooms import RoomRegistry
from hub.store.store import Store

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lydian.plugins"
COMMAND_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

LIST_HOOKS = (
    "lydian_agents",
    "lydian_llm_providers",
    "lydian_cache_strategies",
    "lydian_dashboard_pages",
    "lydian_attachment_handlers",
)
"""Hooks returning lists of objects that other parts of the hub look up by name."""


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable (a coroutine, task or future), else return it."""
    if inspect.isawaitable(value):
        return await value
    return value


class Spawn(Protocol):
    """Runs a background task owned by the hub (cancelled on shutdown, errors logged)."""

    def __call__(self, coro: Awaitable[Any], name: str | None = None) -> Any: ...


class HostServices(NamedTuple):
    """The services a started host works with (given to :meth:`PluginHost.start`)."""

    store: Store
    broker: Broker
    rooms: RoomRegistry
    spawn: Spawn


class PluginFailure(Exception):
    """A plugin's hook raised, timed out or returned the wrong type."""

    def __init__(self, plugin: str, hook: str, reason: str) -> None:
        super().__init__(f"plugin {plugin!r} failed in {hook}: {reason}")
        self.plugin = plugin
        self.hook = hook
        self.reason = reason


class UnknownPlugin(CommandError):
    code = "unknown_plugin"


class UnknownRoomError(CommandError):
    code = "unknown_room"


class PluginUnavailable(CommandError):
    code = "plugin_error"


# --------------------------------------------------------------------------- wire structs


class PluginToggle(msgspec.Struct, tag_field="type", tag="plugin_toggle"):
    """Control message: a plugin or agent was switched on or off in a room."""

    room: str
    plugin: str
    enabled: bool
    by: str


class PluginsReload(msgspec.Struct, tag_field="type", tag="plugins_reload"):
    """Control message: rescan the entry points (a plugin was installed). ``origin`` is the
    sending host's id: it has rescanned already and skips its own message."""

    origin: str = ""


class ReloadReport(msgspec.Struct):
    """What one rescan did: plugins started for the first time, plugins whose earlier
    import failure was retried and now loaded, and ``{plugin: one-line error}``."""

    new: list[str] = []
    reloaded: list[str] = []
    failed: dict[str, str] = {}

    def lines(self) -> list[str]:
        failed = "; ".join(f"{name} ({error})" for name, error in sorted(self.failed.items()))
        return [
            f"new: {', '.join(self.new) or 'none'}",
            f"reloaded: {', '.join(self.reloaded) or 'none'}",
            f"failed: {failed or 'none'}",
        ]


_control_decoder = msgspec.json.Decoder(PluginToggle | PluginsReload)


class PluginInfo(msgspec.Struct):
    """A plugin as ``GET /api/plugins`` and ``lydian plugins list`` show it."""

    name: str
    version: str
    source: str
    hooks: list[str]
    default_enabled: bool
    commands: list[str] = []
    agents: list[str] = []
    error: str | None = None
    settings: dict[str, Any] | None = None
    rooms: list[str] = []


class _Record:
    __slots__ = ("default_enabled", "error", "name", "plugin", "source", "started", "version")

    def __init__(self, name: str, plugin: Any, version: str, source: str) -> None:
        self.name = name
        self.plugin = plugin
        self.version = version
        self.source = source
        self.default_enabled = bool(getattr(plugin, "LYDIAN_DEFAULT_ENABLED", False))
        self.error: str | None = None
        self.started = False

    @property
    def active(self) -> bool:
        return self.started and self.error is None


# --------------------------------------------------------------------------- loading


class PluginNotLoaded(Exception):
    """An entry point could not be imported; ``reason`` says why in one line."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"plugin {name!r} not loaded: {reason}")
        self.name = name
        self.reason = reason


_DEV_EXTRAS = {"test", "tests", "dev", "docs", "all"}
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"extra\s*==\s*[\"']([^\"']+)[\"']")


def _squash(name: str) -> str:
    return re.sub(r"[-_.]", "", name).lower()


def missing_library_hint(dist: importlib.metadata.Distribution | None, module: str) -> str:
    """Why a module is missing, from the plugin's distribution metadata: the optional extra
    (or plain requirement) that brings it, e.g. ``needs the 'adapters' extra (pip install
    "lydian-hub[adapters]")``; else just the module's name."""
    top = module.split(".")[0]
    if dist is not None:
        extras: list[str] = []
        required = None
        for requirement in dist.requires or []:
            found = _REQUIREMENT_NAME.match(requirement)
            if found is None or _squash(top) not in _squash(found.group(1)):
                continue
            extra = _EXTRA_MARKER.search(requirement)
            if extra is None:
                required = found.group(1)
            elif extra.group(1) not in extras:
                extras.append(extra.group(1))
        dist_name = dist.metadata["Name"]
        chosen = [e for e in extras if e not in _DEV_EXTRAS] or extras
        if chosen:
            return (
                f'needs the {chosen[0]!r} extra (pip install "{dist_name}[{chosen[0]}]");'
                f" module {top!r} is missing"
            )
        if required is not None:
            return f'needs {required!r}, which is not installed (pip install "{dist_name}")'
    return f"needs the Python module {top!r}, which is not installed"


def load_entry_point(ep: importlib.metadata.EntryPoint) -> Any:
    """Import one plugin entry point, or raise :class:`PluginNotLoaded` with a one-line reason
    (a missing optional library names the extra that installs it). The traceback goes to the
    log at debug level only: a plain install must start without any."""
    try:
        return ep.load()
    except ModuleNotFoundError as exc:
        log.debug("plugin %r: importing %s failed", ep.name, ep.value, exc_info=True)
        module = exc.name or ""
        own = ep.module.split(".")[0]
        if not module or module == ep.module or module.split(".")[0] == own:
            reason = f"cannot import {ep.value}: {exc}"
        else:
            reason = missing_library_hint(ep.dist, module)
        raise PluginNotLoaded(ep.name, reason) from None
    except Exception as exc:
        log.debug("plugin %r: importing %s failed", ep.name, ep.value, exc_info=True)
        where = ""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
        reason = f"import failed: {type(exc).__name__}: {exc}"
        raise PluginNotLoaded(ep.name, reason.splitlines()[0] + where) from None


# --------------------------------------------------------------------------- the host


class PluginHost:
    """All plugins of one hub process."""

    def __init__(self, settings: Settings, *, discover: bool = True) -> None:
        self.settings = settings
        self.timeout = settings.plugin_hook_timeout
        self.max_failures = settings.plugin_max_failures
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.hub: HubAPI | None = None  # what hooks and commands are handed, once started
        self._services: HostServices | None = None
        self._records: dict[str, _Record] = {}
        self._enabled: dict[str, dict[str, bool]] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._commands: dict[str, tuple[CommandSpec, str]] = {
            spec.name: (spec, CORE) for spec in BUILTIN_COMMANDS
        }
        self._agents: dict[str, tuple[str, bool]] = {}  # agent name -> (plugin, default on)
        self._items: dict[str, list[tuple[str, Any]]] = {hook: [] for hook in LIST_HOOKS}
        self._settings: dict[str, PluginSettings] = {}
        self._secrets: list[str] = []
        self._executor = DaemonExecutor(max_workers=8)
        self._unsubscribe: Callable[[], Any] | None = None
        self._lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self.instance_id = uuid.uuid4().hex
        if settings.trace_hooks:
            self.pm.add_hookcall_monitoring(
                lambda name, impls, kw: log.info(
                    "hook %s -> %s", name, [i.plugin_name for i in impls]
                ),
                lambda out, name, impls, kw: log.info("hook %s <- %r", name, out),
            )
        if discover:
            self.discover()

    # ------------------------------------------------------------ discovery and registration

    def allowed(self, name: str) -> bool:
        """The ``LYDIAN_PLUGINS`` allow-list (unset: every installed plugin)."""
        allow = self.settings.plugins
        if allow is None:
            return True
        return name in {n.strip() for n in allow.split(",") if n.strip()}

    def discover(self) -> list[str]:
        """Load entry points not loaded yet; return the names of the new plugins."""
        importlib.invalidate_caches()
        added = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self._records or not self.allowed(ep.name):
                continue
            version = ep.dist.version if ep.dist is not None else ""
            try:
                plugin = load_entry_point(ep)
            except PluginNotLoaded as exc:  # said in one line; the traceback only at debug
                log.error("%s", exc)
                record = _Record(ep.name, None, version, f"entry point {ep.value}")
                record.error = f"not loaded: {exc.reason}"
                self._records[ep.name] = record
                continue
            try:
                if self.register(plugin, ep.name, version=version, source="entry point"):
                    added.append(ep.name)
            except ValueError as exc:  # e.g. two distributions claim the same name
                log.error("plugin %r from %s skipped: %s", ep.name, ep.value, exc)
        return added

    def register(
        self, plugin: Any, name: str, *, version: str = "", source: str = "registered"
    ) -> bool:
        """Add a plugin object (module or instance); it becomes active on the next
        :meth:`start` or :meth:`reload`. Returns False (and records why) if it is invalid."""
        if name in self._records or name == CORE:
            raise ValueError(f"a plugin named {name!r} exists already")
        record = _Record(name, plugin, version or getattr(plugin, "__version__", ""), source)
        self._records[name] = record
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            record.error = f"invalid plugin: {exc}"
            log.error("plugin %r: %s", name, record.error)
            return False
        unknown = [hc.name for hc in self.pm.get_hookcallers(plugin) or [] if not hc.has_spec()]
        if unknown:
            self.pm.unregister(plugin)
            record.error = f"unknown hook(s): {', '.join(unknown)}"
            log.error("plugin %r: %s", name, record.error)
            return False
        return True

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            return []
        return sorted(hc.name for hc in self.pm.get_hookcallers(plugin) or [])

    def _impls(self, hook: str, plugin: str | None = None) -> list[Any]:
        """Implementations of ``hook`` in pluggy's call order (LIFO, tryfirst/trylast)."""
        impls = list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))
        out = []
        for impl in impls:
            if plugin is not None and impl.plugin_name != plugin:
                continue
            if impl.hookwrapper or impl.wrapper:
                log.warning("plugin %r: hook wrappers are not supported", impl.plugin_name)
                continue
            out.append(impl)
        return out

    def routes(self) -> list[Any]:
        """Route handlers from ``lydian_routes``; called once, when the app is built."""
        from litestar import Controller, Router
        from litestar.handlers import BaseRouteHandler

        out: list[Any] = []
        for impl in self._impls("lydian_routes"):
            name = impl.plugin_name
            try:
                result = impl.function(*[{}.get(a) for a in impl.argnames])
            except Exception as exc:
                log.exception("plugin %r: lydian_routes failed", name)
                self._records[name].error = f"lydian_routes: {type(exc).__name__}: {exc}"
                continue
            items = result if isinstance(result, list) else None
            ok = items is not None and all(
                isinstance(r, (BaseRouteHandler, Router))
                or (isinstance(r, type) and issubclass(r, Controller))
                for r in items
            )
            if not ok:
                error = f"lydian_routes must return a list of route handlers, got {result!r:.100}"
                self._records[name].error = error
                log.error("plugin %r: %s", name, error)
                continue
            out.extend(items or [])
        return out

    # ------------------------------------------------------------ lifecycle

    @property
    def services(self) -> HostServices:
        if self._services is None:
            raise RuntimeError("the plugin host is not started (PluginHost.start)")
        return self._services

    async def start(
        self,
        hub: HubAPI,
        *,
        store: Store,
        broker: Broker,
        rooms: RoomRegistry,
        spawn: Spawn,
    ) -> None:
        """Load room enablement, follow control messages, configure and start plugins.
        ``hub`` is what hooks and commands are handed; the rest is what the host uses."""
        self.hub = hub
        self._services = HostServices(store, broker, rooms, spawn)
        self._enabled = await store.room_plugins()
        self._unsubscribe = await broker.subscribe(CONTROL_CHANNEL, self._on_control)
        await self._activate_pending()

    async def stop(self) -> None:
        for name, record in list(self._records.items()):
            if record.active:
                for impl in self._impls("lydian_shutdown", name):
                    try:
                        kwargs = {"hub": self.hub}
                        await self._call(impl.function, impl, kwargs, name, "lydian_shutdown")
                    except PluginFailure as exc:
                        log.error("%s", exc)
        if self._unsubscribe is not None:
            await self._unsubscribe()
            self._unsubscribe = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def reload(self, *, broadcast: bool = True) -> ReloadReport:
        """Make new installs importable, retry failed imports, rescan entry points and start
        what is new; with ``broadcast``, the other replicas (``hub:control``) do the same."""
        broker = self.services.broker
        async with self._reload_lock:
            report = await self._rescan()
        if broadcast:
            message = PluginsReload(origin=self.instance_id)
            await broker.publish(CONTROL_CHANNEL, encode_control(message))
        return report

    async def _rescan(self) -> ReloadReport:
        """One reload: new ``.pth`` files, failed imports forgotten, then :meth:`discover`."""
        refresh_import_paths()
        failed = {name for name, record in self._records.items() if record.plugin is None}
        pending = [n for n, r in self._records.items() if not r.started and r.error is None]
        candidates = [
            ep
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if (ep.name not in self._records or ep.name in failed) and self.allowed(ep.name)
        ]
        for ep in candidates:
            if ep.name in failed:
                forget_modules(ep.module)
        # import in a worker thread so that a slow import does not stall the event loop;
        # discover() then finds the modules loaded (or fails again, and records why)
        await asyncio.to_thread(prime_imports, [ep.module for ep in candidates])
        retried = self._forget_import_failures()
        added = self.discover()
        started = await self._activate_pending()
        report = ReloadReport()
        for name in sorted({ep.name for ep in candidates} | set(pending) | set(added)):
            record = self._records.get(name)
            if record is None:
                report.failed[name] = "not loaded; the hub's log says why"
            elif record.error is not None:
                report.failed[name] = one_line(record.error)
            elif name in started:
                (report.reloaded if name in retried else report.new).append(name)
        for name in sorted(retried - set(self._records)):
            log.info("plugin %r: its entry point is gone (uninstalled)", name)
        return report

    def _forget_import_failures(self) -> set[str]:
        """Drop the records of plugins whose import failed, so that the rescan retries them."""
        failed = {name for name, record in self._records.items() if record.plugin is None}
        for name in failed:
            del self._records[name]
        return failed

    async def _activate_pending(self) -> list[str]:
        started = []
        async with self._lock:
            for record in list(self._records.values()):
                if record.started or record.error is not None:
                    continue
                record.started = True
                if await self._activate(record):
                    started.append(record.name)
        return started

    async def _activate(self, record: _Record) -> bool:
        """Settings, then ``lydian_startup``, then collect commands and registries."""
        assert self.hub is not None
        name = record.name
        try:
            for impl in self._impls("lydian_plugin_settings", name):
                struct = await self._call(impl.function, impl, {}, name, "lydian_plugin_settings")
                if struct is not None:
                    table = self.settings.plugin_config.get(name)
                    self._settings[name] = load_plugin_settings(name, struct, table)
                    self._secrets.extend(self._settings[name].secrets())
            for impl in self._impls("lydian_startup", name):
                await self._call(impl.function, impl, {"hub": self.hub}, name, "lydian_startup")
            commands = await self._collect("lydian_commands", name)
            for spec in commands:
                if not isinstance(spec, CommandSpec):
                    raise PluginFailure(
                        name, "lydian_commands", f"expected CommandSpec items, got {spec!r:.100}"
                    )
                if not COMMAND_NAME.match(spec.name):
                    raise PluginFailure(
                        name,
                        "lydian_commands",
                        f"invalid command name {spec.name!r:.50}"
                        " (lowercase letters, digits, '-', '_')",
                    )
            items = {hook: await self._collect(hook, name) for hook in LIST_HOOKS}
            for agent in items["lydian_agents"]:
                if not isinstance(getattr(agent, "name", None), str):
                    raise PluginFailure(name, "lydian_agents", f"agent without a name: {agent!r}")
            taken = {h.name: p for p, h in self.items("lydian_attachment_handlers") if p != name}
            for handler in items["lydian_attachment_handlers"]:
                if (problem := check_handler(handler)) is not None:
                    raise PluginFailure(name, "lydian_attachment_handlers", problem)
                if handler.name in taken:  # results are stored by handler name
                    raise PluginFailure(
                        name,
                        "lydian_attachment_handlers",
                        f"attachment handler {handler.name!r} is taken by {taken[handler.name]!r}",
                    )
        except (PluginConfigError, PluginFailure) as exc:
            record.error = str(exc)
            log.error("%s; the plugin stays off", exc)
            return False
        for spec in commands:
            if spec.name in self._commands:
                owner = self._commands[spec.name][1]
                log.warning("plugin %r: /%s is taken by %r; skipped", name, spec.name, owner)
                continue
            self._commands[spec.name] = (spec, name)
        for agent in items["lydian_agents"]:
            self._agents.setdefault(agent.name, (name, bool(getattr(agent, "default_enabled", 0))))
        for hook, found in items.items():
            self._items[hook].extend((name, item) for item in found)
        log.info("plugin %r %s started", name, record.version)
        return True

    async def _collect(self, hook: str, name: str) -> list[Any]:
        out: list[Any] = []
        for impl in self._impls(hook, name):
            result = await self._call(impl.function, impl, {}, name, hook)
            if result is None:
                continue
            if not isinstance(result, (list, tuple)):
                raise PluginFailure(name, hook, f"expected a list, got {type(result).__name__}")
            out.extend(result)
        return out

    # ------------------------------------------------------------ what plugins provide

    def infos(self) -> list[PluginInfo]:
        out = []
        for name, record in sorted(self._records.items()):
            settings = self._settings.get(name)
            out.append(
                PluginInfo(
                    name=name,
                    version=record.version,
                    source=record.source,
                    hooks=self.hooks_of(name),
                    default_enabled=record.default_enabled,
                    commands=sorted(
                        s.name for s, owner in self._commands.values() if owner == name
                    ),
                    agents=sorted(a for a, (owner, _) in self._agents.items() if owner == name),
                    error=record.error,
                    settings=settings.public() if settings else None,
                )
            )
        return out

    def names(self) -> list[str]:
        return sorted(self._records)

    def agent_names(self) -> list[str]:
        return sorted(self._agents)

    def items(self, hook: str) -> list[tuple[str, Any]]:
        """``(plugin, object)`` pairs a list hook returned, e.g. ``"lydian_llm_providers"``."""
        return [(p, item) for p, item in self._items[hook] if self._records[p].active]

    def command(self, name: str) -> tuple[CommandSpec, str] | None:
        found = self._commands.get(name)
        if found is None or (found[1] != CORE and not self._records[found[1]].active):
            return None
        return found

    def all_commands(self) -> list[tuple[CommandSpec, str]]:
        return [self.command(n) for n in sorted(self._commands) if self.command(n)]  # type: ignore[misc]

    def settings_for(self, name: str, room: str | None = None) -> Any:
        """A plugin's validated settings struct (room overrides applied), or None."""
        found = self._settings.get(name)
        return found.for_room(room) if found else None

    def public_settings(self, name: str, room: str | None = None) -> dict[str, Any] | None:
        """:meth:`settings_for` as builtins with every ``Secret`` masked, or None."""
        found = self._settings.get(name)
        return found.public(room) if found else None

    # ------------------------------------------------------------ per-room enablement

    def is_enabled(self, room: str, name: str) -> bool:
        """Whether a plugin (or agent) may act in ``room`` right now."""
        if name in self._agents:
            owner, default = self._agents[name]
            if not self._records[owner].active:
                return False
        else:
            record = self._records.get(name)
            if record is None or not record.active:
                return False
            default = record.default_enabled
        return self._enabled.get(room, {}).get(name, default)

    async def set_enabled(
        self,
        room: str,
        name: str,
        enabled: bool,
        *,
        by: Identity | str,
        reason: str | None = None,
    ) -> None:
        """Persist, apply here, tell the other replicas, and announce it in the room."""
        who = by.name if isinstance(by, Identity) else by
        record = self._records.get(name)
        if record is None and name not in self._agents:
            known = ", ".join(self.names() + self.agent_names()) or "none"
            raise UnknownPlugin(f"no plugin or agent {name!r}; installed: {known}")
        if record is not None and enabled and not record.active:
            raise PluginUnavailable(f"plugin {name!r} is off on this hub: {record.error}")
        store, broker, rooms, _ = self.services
        if await store.get_room(room) is None:
            raise UnknownRoomError(f"no room {room!r}")
        try:
            await store.set_room_plugin(room, name, enabled, who)
        except Exception:  # a concurrent first switch (another replica) won the unique row
            log.info("retrying the switch of %r in %s after a concurrent one", name, room)
            await store.set_room_plugin(room, name, enabled, who)
        self._apply(PluginToggle(room=room, plugin=name, enabled=enabled, by=who))
        await broker.publish(
            CONTROL_CHANNEL,
            encode_control(PluginToggle(room=room, plugin=name, enabled=enabled, by=who)),
        )
        verb = "enabled" if enabled else "disabled"
        detail = f"{who} {verb} plugin {name!r}" + (f": {reason}" if reason else "")
        data: dict[str, Any] = {"plugin": name, "by": who}
        if reason:
            data["reason"] = reason
        await rooms.publish_event(
            room, encode(RoomEvent(room=room, event=f"plugin_{verb}", detail=detail, data=data))
        )

    def _apply(self, toggle: PluginToggle) -> None:
        self._enabled.setdefault(toggle.room, {})[toggle.plugin] = toggle.enabled
        self._failures.pop((toggle.room, toggle.plugin), None)

    def _on_control(self, data: bytes) -> None:
        try:
            message = _control_decoder.decode(data)
        except msgspec.ValidationError:
            return  # another kind of control message; not ours
        except msgspec.DecodeError:
            log.warning("undecodable control message: %r", data[:200])
            return
        if isinstance(message, PluginToggle):
            self._apply(message)
        elif self._services is not None and message.origin != self.instance_id:
            self._services.spawn(self._follow_reload(), name="plugins-reload")

    async def _follow_reload(self) -> None:
        """Another replica reloaded: do the same here, and log what came of it."""
        report = await self.reload(broadcast=False)
        log.info("plugins reloaded (another replica asked): %s", "; ".join(report.lines()))

    # ------------------------------------------------------------ isolated calls

    async def _call(
        self, fn: Callable[..., Any], impl: Any, kwargs: dict[str, Any], plugin: str, hook: str
    ) -> Any:
        """Call one implementation with a timeout; raise :class:`PluginFailure` on trouble."""
        args = [kwargs.get(a) for a in impl.argnames] if impl is not None else kwargs["args"]
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                if inspect.iscoroutinefunction(fn):
                    result = await fn(*args)
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(
                        self._executor, functools.partial(fn, *args)
                    )
                    result = await await_me_maybe(result)
        except CommandError:
            raise
        except TimeoutError:
            raise PluginFailure(plugin, hook, f"timed out after {self.timeout:g} s") from None
        except Exception as exc:
            log.error("plugin %r raised in %s", plugin, hook, exc_info=True)
            raise PluginFailure(plugin, hook, self.scrub(f"{type(exc).__name__}: {exc}")) from exc
        finally:
            if self.settings.trace_hooks:
                log.info(
                    "trace: %s.%s took %.1f ms", plugin, hook, (time.perf_counter() - start) * 1e3
                )
        if self.settings.trace_hooks:
            log.info("trace: %s.%s returned %r", plugin, hook, result)
        return result

    def scrub(self, text: str) -> str:
        """Remove secret values from a text shown to users; cap its length."""
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text[:300]

    async def _failed(self, room: str, failure: PluginFailure) -> None:
        """Tell the room, count, and switch the plugin off there after too many failures."""
        log.error("%s (room %s)", failure, room)
        key = (room, failure.plugin)
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        event = RoomEvent(
            room=room,
            event="plugin_error",
            detail=str(failure),
            data={"plugin": failure.plugin, "hook": failure.hook, "failures": count},
        )
        await self.services.rooms.publish_event(room, encode(event))
        if count == self.max_failures:  # exactly once, even with failures in flight
            await self.set_enabled(
                room,
                failure.plugin,
                False,
                by="hub",
                reason=f"switched off after {count} consecutive failures; admins: "
                f"/plugins enable {failure.plugin} turns it back on",
            )

    def _succeeded(self, room: str, plugin: str) -> None:
        self._failures.pop((room, plugin), None)

    # ------------------------------------------------------------ room hooks

    async def transform(self, text: str, room: str, author: UserRef, hub: HubAPI) -> str:
        """Run the ``lydian_transform_message`` chain of the plugins enabled in ``room``."""
        hook = "lydian_transform_message"
        for impl in self._impls(hook):
            name = impl.plugin_name
            if not self.is_enabled(room, name):
                continue
            kwargs = {"text": text, "room": room, "author": author, "hub": hub}
            try:
                result = await self._call(impl.function, impl, kwargs, name, hook)
                if result is not None and not isinstance(result, str):
                    raise PluginFailure(
                        name, hook, f"returned {type(result).__name__}, expected str or None"
                    )
                if result is not None and len(result) > self.settings.max_text_chars:
                    raise PluginFailure(name, hook, "returned a text over the size limit")
            except PluginFailure as failure:
                await self._failed(room, failure)
                continue
            self._succeeded(room, name)
            if result is not None:
                text = result
        return text

    def observes(self, room: str) -> bool:
        """Whether any plugin enabled in ``room`` implements ``lydian_message``."""
        return any(self.is_enabled(room, i.plugin_name) for i in self._impls("lydian_message"))

    async def observe(self, message: Any, hub: HubAPI) -> None:
        """Run every enabled ``lydian_message`` hook concurrently, each isolated."""

        async def one(impl: Any) -> None:
            name = impl.plugin_name
            try:
                kwargs = {"message": message, "hub": hub}
                await self._call(impl.function, impl, kwargs, name, "lydian_message")
            except PluginFailure as failure:
                await self._failed(message.room, failure)
            else:
                self._succeeded(message.room, name)

        impls = [
            i for i in self._impls("lydian_message") if self.is_enabled(message.room, i.plugin_name)
        ]
        if impls:
            await asyncio.gather(*(one(i) for i in impls))

    # ------------------------------------------------------------ commands

    async def run_command(
        self, hub: HubAPI, identity: Identity, room: str, text: str, ref: str | None = None
    ) -> Frame:
        """Parse and run a ``/command`` in ``room``; return the reply frame."""
        try:
            name, rest = split_command(text)
        except UsageError as exc:
            return Error(code=ErrorCode.USAGE, detail=exc.detail, id=ref, room=room)
        found = self.command(name)
        if found is None:
            return Error(
                code=ErrorCode.UNKNOWN_COMMAND,
                detail=f"unknown command /{name}; /help lists the commands",
                id=ref,
                room=room,
            )
        spec, owner = found
        if owner != CORE and not self.is_enabled(room, owner):
            return Error(
                code=ErrorCode.UNKNOWN_COMMAND,
                detail=f"/{name} comes from plugin {owner!r}, which is not enabled in this room"
                f" (an admin can run /plugins enable {owner})",
                id=ref,
                room=room,
            )
        if spec.admin_only and not identity.is_admin:
            return Error(
                code=ErrorCode.FORBIDDEN, detail=f"/{name} is for admins only", id=ref, room=room
            )
        ctx = CommandContext(hub, room, identity, name, owner, ref, host=self)
        try:
            args = spec.parse(rest)
            if owner == CORE:
                result = await await_me_maybe(spec.handler(ctx, args))
            else:
                result = await self._call(
                    spec.handler, None, {"args": [ctx, args]}, owner, f"/{name}"
                )
                if result is not None and not isinstance(result, str):
                    raise PluginFailure(
                        owner, f"/{name}", f"returned {type(result).__name__}, expected str"
                    )
                self._succeeded(room, owner)
        except CommandError as exc:
            code = _error_code(exc)
            retry_after = getattr(exc, "retry_after", None)  # hub.limits.ModelRefused
            return Error(code=code, detail=exc.detail, id=ref, room=room, retry_after=retry_after)
        except PluginFailure as failure:
            await self._failed(room, failure)
            return Error(code=ErrorCode.PLUGIN_ERROR, detail=str(failure), id=ref, room=room)
        return CommandResult(room=room, command=name, text=result or "", id=ref)


def encode_control(message: PluginToggle | PluginsReload) -> bytes:
    return msgspec.json.encode(message)


def _error_code(exc: CommandError) -> ErrorCode:
    try:
        return ErrorCode(exc.code)
    except ValueError:
        return ErrorCode.USAGE


# --------------------------------------------------------------------------- hot reload
# Python reads the ``.pth`` files of its site directories once, at start. ``pip install -e``
# into a running hub's environment writes a new one (a path: hatchling, setuptools' plain
# mode; an ``import`` line that installs a finder: setuptools' and ``editables``' finder
# modes), so a rescan processes the ``.pth`` files the way a restart would.


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _pth_files(sitedir: str) -> dict[str, int]:
    """``{path: mtime_ns}`` of the ``.pth`` files in ``sitedir``."""
    out: dict[str, int] = {}
    try:
        names = sorted(os.listdir(sitedir))
    except OSError:
        return out
    for name in names:
        if name.endswith(".pth") and not name.startswith("."):
            path = os.path.join(sitedir, name)
            try:
                out[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue
    return out


_PTH_SEEN: dict[str, int] = {p: m for d in _site_dirs() for p, m in _pth_files(d).items()}
"""The ``.pth`` files that ``site`` processed at start (as of this module's import), and
those processed by :func:`refresh_import_paths` since; their ``import`` lines ran already."""


def refresh_import_paths(site_dirs: list[str] | None = None) -> list[str]:
    """Process ``.pth`` files as a restart would; return the path entries added.

    Path lines of every ``.pth`` file are added to ``sys.path`` if missing and existing;
    ``import`` lines run only for ``.pth`` files that are new or changed since they were
    last processed. Import caches (and importlib.metadata's) are invalidated. Under
    ``python -S`` (no ``site`` at start) no ``.pth`` file is read here either.
    """
    importlib.invalidate_caches()
    if sys.flags.no_site and site_dirs is None:
        return []
    known = {os.path.normcase(os.path.abspath(p)) for p in sys.path if isinstance(p, str)}
    added: list[str] = []
    for sitedir in _site_dirs() if site_dirs is None else site_dirs:
        key = os.path.normcase(os.path.abspath(sitedir))
        if key not in known and os.path.isdir(sitedir):  # e.g. a user site made since
            sys.path.append(sitedir)
            known.add(key)
            added.append(sitedir)
        for path, mtime in _pth_files(sitedir).items():
            fresh = _PTH_SEEN.get(path) != mtime
            _PTH_SEEN[path] = mtime
            added.extend(_process_pth(sitedir, path, known, run_imports=fresh))
    importlib.invalidate_caches()
    return added


def _process_pth(sitedir: str, path: str, known: set[str], *, run_imports: bool) -> list[str]:
    """One ``.pth`` file, line by line, as :func:`site.addpackage` does."""
    added: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return added
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(("import ", "import\t")):
            if run_imports:
                try:
                    exec(line)  # what site does at start for this line
                except Exception as exc:
                    log.warning("%s: %r failed: %s: %s", path, line, type(exc).__name__, exc)
                    break  # like site: the rest of this file is skipped
            continue
        entry = os.path.join(sitedir, line.rstrip())
        key = os.path.normcase(os.path.abspath(entry))
        if key not in known and os.path.exists(entry):
            sys.path.append(entry)
            known.add(key)
            added.append(entry)
            log.info("%s: added %s to the import path", path, entry)
    return added


def forget_modules(module: str) -> None:
    """Drop ``module`` and its submodules from ``sys.modules`` so the next import re-reads
    them (after a failed import, a submodule that did load would otherwise stay stale)."""
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        del sys.modules[name]


def prime_imports(modules: list[str]) -> None:
    """Import ``modules`` (ignoring failures, which the caller reports when it imports)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except (Exception, SystemExit):
            continue


def one_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, capped at ``limit`` characters."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
