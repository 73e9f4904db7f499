"""REST API for plugins: list them, rescan entry points, enable or disable one per room."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.exceptions import NotFoundException, PermissionDeniedException, ValidationException
from litestar.params import FromPath, JSONBody

from hub.base.auth import Identity
from hub.core import Hub
from hub.plugin_host.host import (
    PluginHost,
    PluginInfo,
    PluginUnavailable,
    UnknownPlugin,
    UnknownRoomError,
)

AuthRequest = Request[Identity, Any, Any]


class RoomPluginState(msgspec.Struct):
    room: str
    plugin: str
    enabled: bool
    kind: str  # plugin | agent


class SetEnabled(msgspec.Struct):
    enabled: bool


class ReloadResult(msgspec.Struct):
    """``POST /api/plugins/reload``: what the rescan on this replica did, then every plugin."""

    new: list[str]
    reloaded: list[str]
    failed: dict[str, str]
    plugins: list[PluginInfo]


class PluginSummary(msgspec.Struct):
    """A plugin as non-admins see it: what it offers, nothing of its configuration (settings,
    errors, which can name upstream URLs, source paths, the rooms it is on)."""

    name: str
    description: str = ""
    commands: list[str] = []
    agents: list[str] = []


def _summary(info: PluginInfo, plugins: PluginHost) -> PluginSummary:
    record = plugins._records.get(info.name)  # the plugin object's docstring, first line
    doc = (getattr(record and record.plugin, "__doc__", None) or "").strip().splitlines()
    return PluginSummary(
        name=info.name,
        description=doc[0] if doc else "",
        commands=info.commands,
        agents=info.agents,
    )


def _require_admin(request: AuthRequest) -> None:
    if not request.user.is_admin:
        raise PermissionDeniedException("only admins can change plugins")


async def _infos(hub: Hub) -> list[PluginInfo]:
    enabled = await hub.store.room_plugins()
    out = []
    for info in hub.plugins.infos():
        info.rooms = sorted(room for room, names in enabled.items() if names.get(info.name))
        out.append(info)
    return out


class PluginController(Controller):
    path = "/api/plugins"
    tags = ["plugins"]

    @get("/")
    async def list_plugins(self, request: AuthRequest) -> list[PluginInfo] | list[PluginSummary]:
        """Installed plugins. Admins: version, source, hooks, commands, settings (secrets
        masked), status and rooms where enabled; others: name, description and commands."""
        hub: Hub = request.app.state.hub
        if request.user.is_admin:
            return await _infos(hub)
        return [_summary(info, hub.plugins) for info in hub.plugins.infos()]

    @post("/reload", status_code=200)
    async def reload(self, request: AuthRequest) -> ReloadResult:
        """Rescan after a ``pip install`` (editable installs included); admins only.

        New ``.pth`` files are processed, failed imports retried, the ``lydian.plugins``
        entry points rescanned. New plugins start at once, on every replica; new HTTP
        routes need a restart. The answer says what is new, what loaded on a retry and
        what failed (with a one-line error), then lists every plugin.
        """
        _require_admin(request)
        hub: Hub = request.app.state.hub
        report = await hub.plugins.reload()
        return ReloadResult(
            new=report.new,
            reloaded=report.reloaded,
            failed=report.failed,
            plugins=await _infos(hub),
        )


class RoomPluginController(Controller):
    path = "/api/rooms/{room_id:str}/plugins"
    tags = ["plugins"]

    async def _room(self, request: AuthRequest, room_id: str) -> Hub:
        """The hub, once :meth:`Hub.visible_room` let this user see the room (else 404/403)."""
        hub: Hub = request.app.state.hub
        await hub.visible_room(room_id, request.user)
        return hub

    def _state(self, hub: Hub, room_id: str, name: str) -> RoomPluginState:
        plugins = hub.plugins
        if name not in plugins.names() and name not in plugins.agent_names():
            raise NotFoundException(f"no plugin or agent {name!r}")
        kind = "agent" if name in plugins.agent_names() else "plugin"
        return RoomPluginState(
            room=room_id, plugin=name, enabled=plugins.is_enabled(room_id, name), kind=kind
        )

    @get("/")
    async def list_room_plugins(
        self, request: AuthRequest, room_id: FromPath[str]
    ) -> list[RoomPluginState]:
        """Every plugin and agent with whether it is on in this room."""
        hub = await self._room(request, room_id)
        names = hub.plugins.names() + hub.plugins.agent_names()
        return [self._state(hub, room_id, name) for name in names]

    @get("/{name:str}")
    async def get_room_plugin(
        self, request: AuthRequest, room_id: FromPath[str], name: FromPath[str]
    ) -> RoomPluginState:
        hub = await self._room(request, room_id)
        return self._state(hub, room_id, name)

    @put("/{name:str}")
    async def set_room_plugin(
        self,
        request: AuthRequest,
        room_id: FromPath[str],
        name: FromPath[str],
        data: JSONBody[SetEnabled],
    ) -> RoomPluginState:
        """Enable or disable a plugin or agent in this room, at once, on every replica."""
        _require_admin(request)
        hub = await self._room(request, room_id)
        try:
            await hub.plugins.set_enabled(room_id, name, data.enabled, by=request.user)
        except (UnknownPlugin, UnknownRoomError) as exc:
            raise NotFoundException(exc.detail) from None
        except PluginUnavailable as exc:
            raise ValidationException(exc.detail) from None
        return self._state(hub, room_id, name)


plugin_routes = [PluginController, RoomPluginController]
