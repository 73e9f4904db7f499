"""Persistence of the bridge: links, platform users, and platform copies of hub messages."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import msgspec

from lydian_adapters.bridge.tables import BridgeLink, BridgeMessage, BridgeUser


class Link(msgspec.Struct, frozen=True):
    """A room bridged to a platform channel."""

    room: str
    platform: str
    channel: str
    created_by: str = ""
    created_at: float = 0.0


class MessageCopy(msgspec.Struct, frozen=True):
    platform: str
    channel: str
    platform_msg: str
    hub_msg: str
    room: str
    origin: bool


class PlatformUser(msgspec.Struct, frozen=True):
    platform: str
    id: str
    name: str
    avatar: str | None = None
    hub_user: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | str | None) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return 0.0


class BridgeStore:
    """Async access to the bridge tables (bound to the hub's engine by the service)."""

    # ------------------------------------------------------------ links

    async def links(self) -> list[Link]:
        rows = await BridgeLink.select().order_by(BridgeLink.id)
        return [
            Link(r["room"], r["platform"], r["channel"], r["created_by"], _ts(r["created_at"]))
            for r in rows
        ]

    async def add_link(self, link: Link) -> bool:
        """Store ``link``; False if it existed already."""
        exists = await BridgeLink.exists().where(
            (BridgeLink.room == link.room)
            & (BridgeLink.platform == link.platform)
            & (BridgeLink.channel == link.channel)
        )
        if exists:
            return False
        await BridgeLink.insert(
            BridgeLink(
                room=link.room,
                platform=link.platform,
                channel=link.channel,
                created_by=link.created_by,
                created_at=datetime.fromtimestamp(link.created_at, UTC)
                if link.created_at
                else _now(),
            )
        )
        return True

    async def remove_links(self, room: str, platform: str, channel: str | None = None) -> int:
        """Remove the room's links to ``platform`` (one channel or all); return how many."""
        where = (BridgeLink.room == room) & (BridgeLink.platform == platform)
        if channel is not None:
            where = where & (BridgeLink.channel == channel)
        count = await BridgeLink.count().where(where)
        await BridgeLink.delete().where(where)
        return count

    # ------------------------------------------------------------ message copies

    async def add_copy(self, copy: MessageCopy) -> bool:
        """Record a platform copy; False if that platform message is known already."""
        if await self.copy_of(copy.platform, copy.channel, copy.platform_msg) is not None:
            return False
        try:
            await BridgeMessage.insert(
                BridgeMessage(
                    platform=copy.platform,
                    channel=copy.channel,
                    platform_msg=copy.platform_msg,
                    hub_msg=copy.hub_msg,
                    room=copy.room,
                    origin=copy.origin,
                    created_at=_now(),
                )
            )
        except Exception:
            # a concurrent insert of the same platform message won the unique index
            if await self.copy_of(copy.platform, copy.channel, copy.platform_msg) is not None:
                return False
            raise
        return True

    async def copy_of(self, platform: str, channel: str, platform_msg: str) -> MessageCopy | None:
        row = (
            await BridgeMessage.select()
            .where(
                (BridgeMessage.platform == platform)
                & (BridgeMessage.channel == channel)
                & (BridgeMessage.platform_msg == platform_msg)
            )
            .first()
        )
        return _copy(row) if row else None

    async def copies(self, hub_msg: str) -> list[MessageCopy]:
        rows = await BridgeMessage.select().where(BridgeMessage.hub_msg == hub_msg)
        return [_copy(r) for r in rows]

    async def forget_copies(self, hub_msg: str) -> None:
        await BridgeMessage.delete().where(BridgeMessage.hub_msg == hub_msg)

    # ------------------------------------------------------------ users

    async def remember_user(self, user: PlatformUser) -> PlatformUser:
        """Upsert the user's name and avatar; return it with its hub link (if any)."""
        where = (BridgeUser.platform == user.platform) & (BridgeUser.platform_user == user.id)
        row = await BridgeUser.select().where(where).first()
        if row is None:
            with contextlib.suppress(Exception):  # a concurrent first sighting inserted it
                await BridgeUser.insert(
                    BridgeUser(
                        platform=user.platform,
                        platform_user=user.id,
                        name=user.name,
                        avatar=user.avatar,
                        updated_at=_now(),
                    )
                )
            return user
        if row["name"] != user.name or row["avatar"] != user.avatar:
            await BridgeUser.update(
                {
                    BridgeUser.name: user.name,
                    BridgeUser.avatar: user.avatar,
                    BridgeUser.updated_at: _now(),
                }
            ).where(where)
        return msgspec.structs.replace(user, hub_user=row["hub_user"])

    async def link_user(self, platform: str, platform_user: str, hub_user: str | None) -> None:
        """Map a platform user to a hub identity (``None`` unlinks); creates the user row."""
        where = (BridgeUser.platform == platform) & (BridgeUser.platform_user == platform_user)
        if not await BridgeUser.exists().where(where):
            await self.remember_user(PlatformUser(platform, platform_user, platform_user))
        await BridgeUser.update({BridgeUser.hub_user: hub_user}).where(where)

    async def user(self, platform: str, platform_user: str) -> PlatformUser | None:
        row = (
            await BridgeUser.select()
            .where((BridgeUser.platform == platform) & (BridgeUser.platform_user == platform_user))
            .first()
        )
        if row is None:
            return None
        return PlatformUser(platform, platform_user, row["name"], row["avatar"], row["hub_user"])


def _copy(row: dict) -> MessageCopy:
    return MessageCopy(
        platform=row["platform"],
        channel=row["channel"],
        platform_msg=row["platform_msg"],
        hub_msg=row["hub_msg"],
        room=row["room"],
        origin=bool(row["origin"]),
    )
