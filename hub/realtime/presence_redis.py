"""Presence shared by every replica, kept in Redis with expiry.

Per room: a sorted set ``<prefix>:pr:<room>`` of user ids scored by when they expire, and per
user a sorted set ``<prefix>:pc:<room>:<user>`` of that user's connections scored the same way,
plus a hash of user details. Each replica refreshes the scores of its own connections every
``ttl / 3`` seconds. If a replica dies, its entries expire, and the first replica whose reaper
removes them (atomically, in Lua) announces those users offline, so exactly one replica does.
Because everything is re-added on refresh, presence also rebuilds itself after Redis restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

import msgspec
from redis.asyncio import Redis

from hub.base.protocol import PresenceEntry, UserRef

log = logging.getLogger(__name__)

_CONNECT = """
-- KEYS: rooms-set, room-zset, user-zset, users-hash
-- ARGV: room, user_id, conn, exp, now, user_json
redis.call('SADD', KEYS[1], ARGV[1])
local before = redis.call('ZCOUNT', KEYS[3], ARGV[5], '+inf')
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
return before == 0 and 1 or 0
"""

_DISCONNECT = """
-- KEYS: room-zset, user-zset, users-hash ; ARGV: user_id, conn, now
local removed = redis.call('ZREM', KEYS[2], ARGV[2])
if removed == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

_REAP = """
-- KEYS: rooms-set ; ARGV: prefix, now. Returns {room, user_json, room, user_json, ...}
local gone = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rkey = ARGV[1] .. ':pr:' .. room
  local hkey = ARGV[1] .. ':pu:' .. room
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', rkey, '-inf', ARGV[2])) do
    local ukey = ARGV[1] .. ':pc:' .. room .. ':' .. user
    redis.call('ZREMRANGEBYSCORE', ukey, '-inf', ARGV[2])
    if redis.call('ZCARD', ukey) == 0 then
      redis.call('ZREM', rkey, user)
      local details = redis.call('HGET', hkey, user)
      redis.call('HDEL', hkey, user)
      table.insert(gone, room)
      table.insert(gone, details or '')
    end
  end
  if redis.call('ZCARD', rkey) == 0 then redis.call('SREM', KEYS[1], room) end
end
return gone
"""

_user_encoder = msgspec.json.Encoder()
_user_decoder = msgspec.json.Decoder(UserRef)


class RedisPresence:
    """:class:`hub.presence.Presence` over Redis; refresh and reap are driven by the Hub."""

    def __init__(self, redis: Redis, prefix: str = "lydian", ttl: float = 15.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self._local: dict[tuple[str, str], UserRef] = {}  # (room, conn) -> user, for refresh
        self._connect = redis.register_script(_CONNECT)
        self._disconnect = redis.register_script(_DISCONNECT)
        self._reap = redis.register_script(_REAP)

    def _keys(self, room: str, user_id: str) -> tuple[str, str, str]:
        p = self.prefix
        return f"{p}:pr:{room}", f"{p}:pc:{room}:{user_id}", f"{p}:pu:{room}"

    async def connect(self, room: str, user: UserRef, conn_id: str) -> bool:
        self._local[(room, conn_id)] = user
        now = time.time()
        rkey, ukey, hkey = self._keys(room, user.id)
        came = await self._connect(
            keys=[f"{self.prefix}:rooms", rkey, ukey, hkey],
            args=[room, user.id, conn_id, now + self.ttl, now, _user_encoder.encode(user)],
        )
        return bool(came)

    async def disconnect(self, room: str, user_id: str, conn_id: str) -> bool:
        self._local.pop((room, conn_id), None)
        rkey, ukey, hkey = self._keys(room, user_id)
        gone = await self._disconnect(keys=[rkey, ukey, hkey], args=[user_id, conn_id, time.time()])
        return bool(gone)

    async def snapshot(self, room: str) -> list[PresenceEntry]:
        rkey, _, hkey = self._keys(room, "")
        users = await self.redis.zrangebyscore(rkey, time.time(), "+inf")
        if not users:
            return []
        # members only (no scores asked): a list of names
        details = await self.redis.hmget(hkey, cast("list[bytes]", users))
        entries = [PresenceEntry(user=_user_decoder.decode(d)) for d in details if d]
        return sorted(entries, key=lambda e: e.user.id)

    async def refresh(self) -> None:
        """Push this replica's connections' expiry forward (and re-add them after a Redis reset)."""
        if not self._local:
            return
        now = time.time()
        exp = now + self.ttl
        async with self.redis.pipeline(transaction=False) as pipe:
            for (room, conn_id), user in self._local.items():
                rkey, ukey, hkey = self._keys(room, user.id)
                pipe.sadd(f"{self.prefix}:rooms", room)
                pipe.zadd(ukey, {conn_id: exp})
                pipe.zadd(rkey, {user.id: exp}, gt=True)
                pipe.hset(hkey, user.id, _user_encoder.encode(user))
            await pipe.execute()

    async def keep(self, offline: Callable[[str, UserRef], Awaitable[None]]) -> None:
        """Forever: refresh this replica's entries every ``ttl / 3`` seconds and call
        ``offline(room, user)`` for each user of a dead replica that :meth:`reap` took off."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.refresh()
                for room_id, user in await self.reap():
                    await offline(room_id, user)
            except Exception as exc:  # Redis away: entries expire; rebuilt on the next refresh
                log.debug("presence refresh failed: %s", exc)

    async def reap(self) -> list[tuple[str, UserRef]]:
        """Remove expired users (dead replicas); return those this call took offline."""
        flat = await self._reap(keys=[f"{self.prefix}:rooms"], args=[self.prefix, time.time()])
        out = []
        for room, details in zip(flat[::2], flat[1::2], strict=True):
            room_id = room.decode() if isinstance(room, bytes) else room
            if details:
                out.append((room_id, _user_decoder.decode(details)))
        return out
