"""The ``bridge`` plugin: ``/bridge`` and ``/unbridge`` commands and the bridges REST API.

``/bridge`` lists the room's bridges; ``/bridge slack C0123`` or ``/bridge discord 1234``
bridges the room to a channel; ``/unbridge slack [C0123]`` removes it (admins only).
REST: ``GET/POST /api/rooms/{room}/bridges``, ``DELETE .../bridges/{platform}/{channel}``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import FromPath, JSONBody

from hub.sdk import (
    Arg,
    CommandContext,
    CommandForbidden,
    CommandSpec,
    Identity,
    UsageError,
    hookimpl,
)
from lydian_adapters.bridge.service import bridge_for

LYDIAN_DEFAULT_ENABLED = True
"""``/bridge`` answers in every room (its mutations are for admins only)."""

PLATFORMS = ("slack", "discord")

Channel = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]


class BridgeIn(msgspec.Struct):
    platform: Annotated[str, msgspec.Meta(pattern="^(slack|discord)$")]
    channel: Channel


class BridgeOut(msgspec.Struct):
    room: str
    platform: str
    channel: str
    connected: bool
    created_by: str = ""


def _listing(hub: Any, room: str) -> list[BridgeOut]:
    service = bridge_for(hub)
    return [
        BridgeOut(
            lk.room, lk.platform, lk.channel, lk.platform in service.connectors, lk.created_by
        )
        for lk in service.links(room)
    ]


def _check_channel(channel: str) -> str:
    try:
        return msgspec.convert(channel, Channel)
    except msgspec.ValidationError:
        raise UsageError(f"{channel!r} is not a channel id (letters, digits, _.:-)") from None


# --------------------------------------------------------------------------- commands


async def bridge_command(ctx: CommandContext, args: dict[str, Any]) -> str:
    hub = ctx.hub
    platform, channel = args.get("platform"), args.get("channel")
    if platform is None:
        items = _listing(hub, ctx.room)
        if not items:
            return (
                "This room is not bridged. Admins: /bridge slack CHANNEL or /bridge discord CHANNEL"
            )
        lines = [
            f"{b.platform} {b.channel}" + ("" if b.connected else " (adapter not configured)")
            for b in items
        ]
        return "Bridged to:\n" + "\n".join(lines)
    if not ctx.is_admin:
        raise CommandForbidden("only admins can bridge a room")
    if channel is None:
        raise UsageError(f"missing CHANNEL; usage: /bridge {platform} CHANNEL")
    channel = _check_channel(channel)
    service = bridge_for(hub)
    added = await service.bridge(ctx.room, platform, channel, ctx.identity.id)
    if not added:
        return f"{ctx.room} is already bridged to {platform} {channel}"
    note = "" if platform in service.connectors else f" (the {platform} adapter is not configured)"
    return f"bridged {ctx.room} to {platform} {channel}{note}"


async def unbridge_command(ctx: CommandContext, args: dict[str, Any]) -> str:
    platform, channel = args["platform"], args.get("channel")
    removed = await bridge_for(ctx.hub).unbridge(ctx.room, platform, channel)
    if not removed:
        raise UsageError(f"{ctx.room} is not bridged to {platform} {channel or ''}".rstrip())
    return f"removed {removed} {platform} bridge(s) from {ctx.room}"


async def bridgeuser_command(ctx: CommandContext, args: dict[str, Any]) -> str:
    platform, user = args["platform"], _check_channel(args["user"])
    hub_user = args.get("hub_user")
    await bridge_for(ctx.hub).store.link_user(platform, user, hub_user)
    if hub_user is None:
        return f"{platform} user {user} is no longer linked; they post as {platform}:{user}"
    return f"{platform} user {user} now posts and runs commands as hub user {hub_user}"


@hookimpl
def lydian_commands() -> list[CommandSpec]:
    return [
        CommandSpec(
            name="bridge",
            help="list this room's Slack/Discord bridges; admins bridge it to a channel",
            handler=bridge_command,
            args=[
                Arg("platform", required=False, choices=PLATFORMS),
                Arg("channel", required=False, help="Slack channel id or Discord channel id"),
            ],
        ),
        CommandSpec(
            name="unbridge",
            help="remove this room's bridge to a platform (one channel or all)",
            handler=unbridge_command,
            admin_only=True,
            args=[Arg("platform", choices=PLATFORMS), Arg("channel", required=False)],
        ),
        CommandSpec(
            name="bridgeuser",
            help="map a Slack/Discord user to a hub identity (without HUB_USER: unlink)",
            handler=bridgeuser_command,
            admin_only=True,
            args=[
                Arg("platform", choices=PLATFORMS),
                Arg("user", help="the platform's user id, e.g. U0123 or 1234567890"),
                Arg("hub_user", required=False, help="the hub user id they act as"),
            ],
        ),
    ]


# --------------------------------------------------------------------------- REST


async def _room(request: Request[Identity, Any, Any], room_id: str) -> Any:
    """The hub, once ``hub.visible_room`` let this user see the room (else 404/403)."""
    hub = request.app.state.hub
    await hub.visible_room(room_id, request.user)
    return hub


@get("/api/rooms/{room_id:str}/bridges", tags=["bridges"])
async def list_bridges(
    request: Request[Identity, Any, Any], room_id: FromPath[str]
) -> list[BridgeOut]:
    """The room's bridges to platform channels."""
    return _listing(await _room(request, room_id), room_id)


@post("/api/rooms/{room_id:str}/bridges", tags=["bridges"], status_code=201)
async def add_bridge(
    request: Request[Identity, Any, Any], room_id: FromPath[str], data: JSONBody[BridgeIn]
) -> list[BridgeOut]:
    """Bridge the room to a Slack or Discord channel (admins only)."""
    if not request.user.is_admin:
        raise PermissionDeniedException("only admins can bridge a room")
    hub = await _room(request, room_id)
    await bridge_for(hub).bridge(room_id, data.platform, data.channel, request.user.id)
    return _listing(hub, room_id)


@delete("/api/rooms/{room_id:str}/bridges/{platform:str}/{channel:str}", tags=["bridges"])
async def remove_bridge(
    request: Request[Identity, Any, Any],
    room_id: FromPath[str],
    platform: FromPath[str],
    channel: FromPath[str],
) -> None:
    """Remove one bridge (admins only)."""
    if not request.user.is_admin:
        raise PermissionDeniedException("only admins can remove a bridge")
    hub = await _room(request, room_id)
    if not await bridge_for(hub).unbridge(room_id, platform, channel):
        raise NotFoundException(f"{room_id!r} is not bridged to {platform} {channel}")


@hookimpl
def lydian_routes() -> list[Any]:
    return [list_bridges, add_bridge, remove_bridge]


# --------------------------------------------------------------------------- lifecycle


@hookimpl
async def lydian_startup(hub: Any) -> None:
    await bridge_for(hub).start()


@hookimpl
async def lydian_shutdown(hub: Any) -> None:
    await bridge_for(hub).stop()
