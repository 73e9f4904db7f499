"""REST API: rooms, members, history pages, posting, guest tokens. OpenAPI at ``/schema``."""

from __future__ import annotations

import os
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import (
    HTTPException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_409_CONFLICT

from hub.access.identity import guest_name
from hub.access.limits import check_http, client_address, role_of
from hub.base.auth import Identity, guest_identity
from hub.base.errors import MessageRefused, Refusal, RoomNotVisible
from hub.base.protocol import INT64_MAX, ChatMessage, RoomId, UserRef
from hub.core import Hub
from hub.store.store import MemberInfo, ReservedRoomId, RoomExists, RoomInfo

AuthRequest = Request[Identity, Any, Any]


class CreateRoom(msgspec.Struct):
    id: RoomId
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    topic: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    private: bool = False


class AddMember(msgspec.Struct):
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class PostMessage(msgspec.Struct):
    """A message posted over HTTP; the hub's rules apply as on the socket (blank text only
    with attachments, at most ``max_text_chars``, attachment ids uploaded to this room)."""

    text: str = ""
    client_id: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    reply_to: str | None = None
    attachments: list[Annotated[str, msgspec.Meta(max_length=100)]] = []


class HistoryPage(msgspec.Struct):
    room: str
    messages: list[ChatMessage]
    has_more: bool


class GuestToken(msgspec.Struct):
    token: str
    user: UserRef


def room_not_visible_handler(
    request: Request[Any, Any, Any], exc: RoomNotVisible
) -> Response[dict[str, Any]]:
    """REST's form of :class:`RoomNotVisible`: 404 (no such room) or 403 (private)."""
    status = 404 if exc.missing else 403
    return Response(
        {"status_code": status, "detail": exc.detail, "code": str(exc.code)}, status_code=status
    )


def message_refused_handler(
    request: Request[Any, Any, Any], exc: MessageRefused
) -> Response[dict[str, Any]]:
    """REST's form of :class:`MessageRefused`: 413 for a text too long, else 400; the body
    carries the same ``code``, ``reason`` and ``detail`` the socket's ``error`` frame has."""
    status = 413 if exc.reason == Refusal.TOO_LONG else 400
    body = {"status_code": status, "detail": exc.detail, "code": str(exc.code)}
    return Response({**body, "reason": str(exc.reason)}, status_code=status)


class RoomController(Controller):
    path = "/api/rooms"
    tags = ["rooms"]

    @post("/", status_code=HTTP_201_CREATED)
    async def create_room(self, request: AuthRequest, data: JSONBody[CreateRoom]) -> RoomInfo:
        """Create a room; the creator becomes its owner."""
        hub: Hub = request.app.state.hub
        if request.user.is_guest:
            raise PermissionDeniedException("guests cannot create rooms")
        if hub.settings.room_creators == "admin" and not request.user.is_admin:
            raise PermissionDeniedException("only admins create rooms on this hub")
        await check_http(hub.limits, "rooms", role_of(request.user), request.user.id, "rooms")
        try:
            room = await hub.store.create_room(
                data.id,
                name=data.name,
                topic=data.topic,
                kind="private" if data.private else "public",
                created_by=request.user.id,
            )
        except RoomExists:
            raise HTTPException(
                status_code=HTTP_409_CONFLICT, detail=f"room {data.id!r} exists already"
            ) from None
        except ReservedRoomId:
            raise ValidationException(
                f"room id {data.id!r} is reserved: ids starting with 'dm:' are direct-message "
                "rooms, created by sending a direct message"
            ) from None
        await hub.store.add_member(room.id, request.user.id, request.user.name, role="owner")
        return room

    @get("/")
    async def list_rooms(self, request: AuthRequest) -> list[RoomInfo]:
        """Public rooms and the private rooms you are a member of."""
        hub: Hub = request.app.state.hub
        return await hub.queries.list_rooms(request.user.id)

    @get("/{room_id:str}")
    async def get_room(self, request: AuthRequest, room_id: FromPath[str]) -> RoomInfo:
        return await request.app.state.hub.visible_room(room_id, request.user)

    @get("/{room_id:str}/members")
    async def list_members(self, request: AuthRequest, room_id: FromPath[str]) -> list[MemberInfo]:
        hub: Hub = request.app.state.hub
        await hub.visible_room(room_id, request.user)
        return await hub.store.members(room_id)

    @post("/{room_id:str}/members", status_code=HTTP_201_CREATED)
    async def add_member(
        self, request: AuthRequest, room_id: FromPath[str], data: JSONBody[AddMember]
    ) -> MemberInfo:
        """Add a member (owners and admins only); needed for private rooms."""
        hub: Hub = request.app.state.hub
        room = await hub.visible_room(room_id, request.user)
        if not request.user.is_admin and room.created_by != request.user.id:
            raise PermissionDeniedException("only the room's owner or an admin can add members")
        if room.kind == "dm":
            raise PermissionDeniedException("a direct-message room has exactly its two users")
        await hub.store.add_member(room_id, data.user_id, data.name or data.user_id)
        return MemberInfo(user_id=data.user_id, user_name=data.name or data.user_id, role="member")

    @get("/{room_id:str}/messages")
    async def history(
        self,
        request: AuthRequest,
        room_id: FromPath[str],
        before: Annotated[
            int | None,
            Parameter(ge=0, le=INT64_MAX, description="page of messages before this offset"),
        ] = None,
        after: Annotated[
            int | None, Parameter(ge=0, le=INT64_MAX, description="messages after this offset")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
    ) -> HistoryPage:
        """A page of history, oldest first: before an offset (default newest), or after one."""
        hub: Hub = request.app.state.hub
        await hub.visible_room(room_id, request.user)
        limit = min(limit, hub.settings.history_page_max)
        if after is not None:
            page = await hub.queries.messages_after(room_id, after, limit + 1)
            has_more = len(page) > limit
            return HistoryPage(room=room_id, messages=page[:limit], has_more=has_more)
        page = await hub.queries.messages_before(room_id, before, limit + 1)
        has_more = len(page) > limit
        return HistoryPage(
            room=room_id, messages=page[-limit:] if has_more else page, has_more=has_more
        )

    @post("/{room_id:str}/messages", status_code=HTTP_201_CREATED)
    async def post_message(
        self, request: AuthRequest, room_id: FromPath[str], data: JSONBody[PostMessage]
    ) -> ChatMessage:
        """Post into a room over HTTP (bots, scripts); idempotent with ``client_id``."""
        hub: Hub = request.app.state.hub
        await hub.visible_room(room_id, request.user)
        author = UserRef(id=request.user.id, name=request.user.name, guest=request.user.is_guest)
        message, _ = await hub.post_message(  # MessageRefused: message_refused_handler
            room_id,
            author,
            data.text,
            client_id=data.client_id,
            reply_to=data.reply_to,
            attachments=data.attachments,
        )
        return message


@post("/api/guest-token", exclude_from_auth=True, status_code=HTTP_201_CREATED, tags=["auth"])
async def guest_token(
    request: Request[Any, Any, Any], name: Annotated[str | None, Parameter(max_length=40)] = None
) -> GuestToken:
    """A short-lived guest token, where the configuration allows guests."""
    hub: Hub = request.app.state.hub
    if not hub.settings.allow_guests:
        raise PermissionDeniedException("guests are not allowed on this hub")
    address = client_address(request.scope)
    await check_http(hub.limits, "guest_tokens", "guest", address, "guest tokens")
    identity = guest_identity(name)
    identity = msgspec.structs.replace(identity, name=await guest_name(hub.store, identity.name))
    return GuestToken(
        token=hub.token_for(identity, ttl_seconds=24 * 3600),
        user=UserRef(id=identity.id, name=identity.name, guest=True),
    )


@get("/healthz", exclude_from_auth=True, tags=["ops"])
async def healthz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    hub: Hub = request.app.state.hub
    return {
        "status": "ok",
        "store": hub.store.kind,
        "connections": len(hub.connections),
        # consumers dropped for falling behind since start, by kind (docs/protocol.md)
        "slow_consumers": {
            kind: hub.rooms.slow_consumers[kind] for kind in ("socket", "sse", "subscriber")
        },
        "pid": os.getpid(),
    }
