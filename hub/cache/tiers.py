"""Cache tiers: L1 in-process memory (LRU bounded by entries and bytes, TTL) and L2 Redis.

Both tiers hold msgpack bytes, never live objects, so a caller mutating what it got back
cannot poison the cache. L3 is the caller's loader and lives in the manager.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

ENTRY_OVERHEAD = 96
"""Bytes charged per L1 entry on top of key and value (dict slot, entry object, tags)."""

T = TypeVar("T")


class _Entry:
    __slots__ = ("data", "expires", "size", "tags")

    def __init__(self, data: bytes, expires: float | None, size: int, tags: tuple[str, ...]):
        self.data = data
        self.expires = expires
        self.size = size
        self.tags = tags


class MemoryTier:
    """L1: an ``OrderedDict`` in least-recently-used order, bounded by entries and bytes."""

    def __init__(
        self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self.bytes = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        return list(self._data)

    def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires is not None and entry.expires <= self._clock():
            self._remove(key)
            self.expirations += 1
            return None
        self._data.move_to_end(key)
        return entry.data

    def set(self, key: str, data: bytes, ttl: float | None, tags: Iterable[str] = ()) -> bool:
        """Store ``data``; False (and nothing kept) if one entry alone exceeds the byte bound."""
        self._remove(key)
        size = len(data) + len(key) + ENTRY_OVERHEAD
        if size > self.max_bytes or self.max_entries <= 0:
            return False
        tags = tuple(tags)
        expires = None if ttl is None else self._clock() + ttl
        self._data[key] = _Entry(data, expires, size, tags)
        self.bytes += size
        for tag in tags:
            self._tags.setdefault(tag, set()).add(key)
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._remove(oldest)
            self.evictions += 1
        return True

    def delete(self, key: str) -> bool:
        return self._remove(key)

    def invalidate_tag(self, tag: str) -> list[str]:
        """Drop every entry carrying ``tag``; return their keys."""
        keys = tuple(self._tags.pop(tag, ()))
        return [k for k in keys if self._remove(k)]

    def clear(self) -> int:
        count = len(self._data)
        self._data.clear()
        self._tags.clear()
        self.bytes = 0
        return count

    def _remove(self, key: str) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        for tag in entry.tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]
        return True


_SET_SCRIPT = """
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
for i = 2, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  redis.call('SADD', KEYS[i], KEYS[1])
  if ttl == 0 then
    redis.call('PERSIST', KEYS[i])
  elseif left == -2 or (left >= 0 and left < ttl) then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
"""

_INVALIDATE_SCRIPT = """
local n = 0
local keys = {}
for i = 1, #KEYS do
  if string.sub(KEYS[i], 1, #ARGV[3]) == ARGV[3] then
    for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do table.insert(keys, member) end
  end
  table.insert(keys, KEYS[i])
end
for j = 1, #keys, 500 do
  n = n + redis.call('DEL', unpack(keys, j, math.min(j + 499, #keys)))
end
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n
"""


def _raw(value: bytes | str | None) -> bytes | None:
    """A Redis reply as bytes (the client does not decode responses; typed as it might)."""
    return value.encode() if isinstance(value, str) else value


class RedisUnavailable(Exception):
    """Internal: L2 is down or in its backoff window; callers fall back to L1/L3."""


class RedisTier:
    """L2: Redis through redis-py asyncio, with a circuit breaker.

    The first failure logs one warning and opens the breaker; while it is open every call
    returns at once (no request waits on a dead Redis). After a backoff (doubling up to
    ``max_backoff``) one call probes; success closes the breaker and logs the recovery.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        op_timeout: float = 0.5,
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
        on_recover: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.client = Redis.from_url(
            url,
            socket_timeout=op_timeout,
            socket_connect_timeout=op_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self.available = True
        self.failures = 0
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._backoff = min_backoff
        self._retry_at = 0.0
        self._probing = False
        self._on_recover = on_recover
        self._set = self.client.register_script(_SET_SCRIPT)
        self._invalidate = self.client.register_script(_INVALIDATE_SCRIPT)

    def k(self, key: str) -> str:
        return f"{self.prefix}k:{key}"

    def tag_key(self, tag: str) -> str:
        return f"{self.prefix}t:{tag}"

    @property
    def hot_key(self) -> str:
        return f"{self.prefix}hot"

    async def close(self) -> None:
        await self.client.aclose()

    async def _run(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` unless the breaker is open; raise :class:`RedisUnavailable` on failure."""
        probing = False
        if not self.available:
            if self._probing or time.monotonic() < self._retry_at:
                raise RedisUnavailable
            self._probing = probing = True
        try:
            result = await op()
        except (RedisError, OSError) as exc:
            self._trip(exc)
            raise RedisUnavailable from exc
        finally:
            if probing:
                self._probing = False
        if not self.available:
            self.available = True
            self._backoff = self._min_backoff
            log.info("cache: Redis L2 at %s is back", self.url)
            if self._on_recover is not None:
                await self._on_recover()
        return result

    def _trip(self, exc: BaseException) -> None:
        self.failures += 1
        if self.available:
            self.available = False
            log.warning("cache: Redis L2 unavailable (%s); serving from L1 until it returns", exc)
        else:
            self._backoff = min(self._backoff * 2, self._max_backoff)
        self._retry_at = time.monotonic() + self._backoff

    async def get(self, key: str) -> bytes | None:
        return _raw(await self._run(lambda: self.client.get(self.k(key))))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        values = await self._run(lambda: self.client.mget([self.k(k) for k in keys]))
        return [_raw(v) for v in values]

    async def set(self, key: str, data: bytes, ttl: float | None, tags: Iterable[str]) -> None:
        ttl_ms = 0 if ttl is None else max(1, int(ttl * 1000))
        keys = [self.k(key), *(self.tag_key(t) for t in tags)]
        await self._run(lambda: self._set(keys=keys, args=[data, ttl_ms]))

    async def publish(self, channel: str, message: bytes) -> None:
        await self._run(lambda: self.client.publish(channel, message))

    async def invalidate(
        self, keys: Iterable[str], tags: Iterable[str], channel: str = "", message: bytes = b""
    ) -> int:
        """Delete keys and every key under the tags, then publish ``message`` (one round trip)."""
        names = [self.k(k) for k in keys] + [self.tag_key(t) for t in tags]
        args: list[str | bytes] = [channel, message, f"{self.prefix}t:"]
        return await self._run(lambda: self._invalidate(keys=names, args=args))

    async def flush(self, channel: str = "", message: bytes = b"") -> int:
        """Delete every key under this prefix (used when invalidations were lost)."""

        async def op() -> int:
            n = 0
            async for name in self.client.scan_iter(match=f"{self.prefix}*", count=500):
                if name != self.hot_key.encode():
                    n += await self.client.delete(name)
            if channel:
                await self.client.publish(channel, message)
            return n

        return await self._run(op)

    async def record_hot(self, counts: dict[str, int], keep: int) -> None:
        async def op() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, count in counts.items():
                    pipe.zincrby(self.hot_key, count, key)
                pipe.zremrangebyrank(self.hot_key, 0, -keep - 1)
                return await pipe.execute()

        await self._run(op)

    async def hottest(self, n: int) -> list[str]:
        rows = await self._run(lambda: self.client.zrevrange(self.hot_key, 0, n - 1))
        return [r.decode() if isinstance(r, bytes) else str(r) for r in rows]
