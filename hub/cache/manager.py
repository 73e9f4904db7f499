"""The :class:`CacheManager`: L1 memory → L2 Redis → L3 loader, with single-flight loads.

Keys live in namespaces; each namespace names a strategy (registered by plugins through
``lydian_cache_strategies()``), a default TTL and the events that invalidate it. Values are
msgpack bytes in both tiers. Invalidations are published on a Redis channel so every
replica drops the key from its L1. Without ``redis_url`` the manager is L1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from hub.cache.errors import (
    CacheError,
    CacheLoaderError,
    CacheLoaderTimeout,
    CacheValueError,
    CacheValueTooLarge,
)
from hub.cache.stats import CacheStats
from hub.cache.strategy import DEFAULT_STRATEGY, CacheStrategy, StrategyRegistry
from hub.cache.tiers import MemoryTier, RedisTier, RedisUnavailable
from hub.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

Loader = Callable[[], Awaitable[Any]]
MAX_PENDING_INVALIDATIONS = 10_000


class Namespace(msgspec.Struct, frozen=True):
    """How keys of one namespace are cached."""

    name: str
    strategy: str = DEFAULT_STRATEGY
    ttl: float | None = 300.0
    events: tuple[str, ...] = ()
    """Events (``invalidate(event=…)``) that drop every key of the namespace."""
    l2: bool = True
    """Also keep values in Redis (False for values that only make sense per process)."""


class _Warmer(msgspec.Struct):
    key: str
    loader: Loader
    namespace: str
    user: str | None


class _Envelope(msgspec.Struct, array_like=True):
    """What L2 stores: absolute expiry (unix s, 0 = none), the entry's tags, the value."""

    expires: float
    tags: list[str]
    data: bytes


class CacheManager:
    """Multi-tier cache for one process; see the module docstring."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        default_ttl: float | None = 300.0,
        max_value_bytes: int = 1024 * 1024,
        loader_timeout: float = 10.0,
        redis_url: str | None = None,
        prefix: str = "lydian:cache:",
        redis_timeout: float = 0.5,
        strategies: Iterable[CacheStrategy] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = secrets.token_hex(6)
        self.default_ttl = default_ttl
        self.max_value_bytes = max_value_bytes
        self.loader_timeout = loader_timeout
        self.prefix = prefix
        self.channel = f"{prefix}invalidate"
        self.l1 = MemoryTier(max_entries, max_bytes, clock)
        self.l2: RedisTier | None = None
        self._redis_url = redis_url
        if redis_url:
            self.l2 = RedisTier(
                redis_url, prefix, op_timeout=redis_timeout, on_recover=self._l2_recovered
            )
        self.strategies = StrategyRegistry(strategies)
        self.strategy_source: Callable[[], Iterable[CacheStrategy]] | None = None
        """Asked for more strategies when a namespace names an unknown one."""
        self.stats_ = CacheStats()
        self._namespaces: dict[str, Namespace] = {}
        self._resolved: dict[str, tuple[Namespace, CacheStrategy]] = {}
        self._inflight: dict[str, tuple[int, asyncio.Task[bytes]]] = {}
        self._epoch = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
        self._env_decoder = msgspec.msgpack.Decoder(_Envelope)
        self._warmers: list[_Warmer] = []
        self._pending_keys: set[str] = set()
        self._pending_tags: set[str] = set()
        self._pending_overflow = False
        self._hot_delta: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, subscribe_timeout: float = 2.0) -> None:
        """Subscribe to cross-replica invalidations (waiting briefly) and start hot-key sync."""
        if self.l2 is not None and not self.started:
            self._tasks.append(asyncio.create_task(self._listen(), name="cache:invalidations"))
            self._tasks.append(asyncio.create_task(self._sync_hot(), name="cache:hot-keys"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), subscribe_timeout)
        self.started = True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.l2 is not None:
            with contextlib.suppress(RedisUnavailable):
                await self._flush_hot()
            await self.l2.close()
        self.started = False

    # ------------------------------------------------------------------ configuration

    def configure(
        self,
        name: str,
        *,
        strategy: str = DEFAULT_STRATEGY,
        ttl: float | None = ...,  # type: ignore[assignment]
        events: Iterable[str] = (),
        l2: bool = True,
    ) -> Namespace:
        """Declare (or redeclare) a namespace. ``ttl=None`` keeps values until evicted."""
        if ":" in name:
            raise ValueError(f"namespace {name!r} must not contain ':'")
        ns = Namespace(
            name=name,
            strategy=strategy,
            ttl=self.default_ttl if ttl is ... else ttl,
            events=tuple(events),
            l2=l2,
        )
        self._namespaces[name] = ns
        self._resolved.pop(name, None)
        return ns

    def register_strategy(self, strategy: CacheStrategy) -> None:
        self.strategies.register(strategy)
        self._resolved.clear()

    def namespace(self, name: str) -> BoundNamespace:
        """A view of one namespace: ``ns.get(key, loader)`` etc."""
        return BoundNamespace(self, name)

    def _resolve(self, namespace: str) -> tuple[Namespace, CacheStrategy]:
        resolved = self._resolved.get(namespace)
        if resolved is None:
            ns = self._namespaces.get(namespace)
            if ns is None:
                ns = self.configure(namespace)
            if ns.strategy not in self.strategies and self.strategy_source is not None:
                for strategy in self.strategy_source():  # e.g. a plugin loaded by a rescan
                    if getattr(strategy, "name", None) not in self.strategies:
                        with contextlib.suppress(TypeError):  # invalid: logged at startup
                            self.register_strategy(strategy)
            resolved = (ns, self.strategies.get(ns.strategy))
            if ns.strategy in self.strategies:  # a fallback is retried on the next call
                self._resolved[namespace] = resolved
        return resolved

    # ------------------------------------------------------------------ reads

    async def get(
        self,
        key: str,
        loader: Loader | None = None,
        *,
        namespace: str = "default",
        user: str | None = None,
        type: Any = Any,
        ttl: float | None = ...,  # type: ignore[assignment]
        tags: Iterable[str] = (),
        events: Iterable[str] = (),
    ) -> Any:
        """The value for ``key``: from L1, else L2, else ``loader()`` (once per key at a time).

        Returns None on a miss without a loader. ``tags``/``events`` attach to a value the
        loader produces, so ``invalidate(tag=…)`` / ``invalidate(event=…)`` drop it.
        """
        ns, strategy = self._resolve(namespace)
        full = f"{namespace}:{strategy.scoped_key(key, user)}"
        stats = self.stats_
        stats.read(full)
        if self.l2 is not None:
            self._hot_delta[full] = self._hot_delta.get(full, 0) + 1
        if strategy.cacheable:
            t0 = time.perf_counter_ns()
            data = self.l1.get(full)
            l1 = stats.tiers["l1"]
            if data is not None:
                l1.hits += 1
                l1.observe((time.perf_counter_ns() - t0) / 1000)
                strategy.observe_read(full, True)
                return self._decode(full, data, type)
            l1.misses += 1
            if self.l2 is not None and ns.l2:
                data = await self._l2_get(full, ns, strategy)
                if data is not None:
                    strategy.observe_read(full, True)
                    return self._decode(full, data, type)
        strategy.observe_read(full, False)
        if loader is None:
            return None
        epoch = self._epoch
        inflight = self._inflight.get(full)
        if inflight is None or inflight[0] != epoch:
            entry_ttl = strategy.ttl(full, ns.ttl) if ttl is ... else ttl
            entry_tags = self._tags_for(ns, strategy, key, user, tags, events)
            task = asyncio.ensure_future(
                self._fill(full, ns, strategy, loader, entry_ttl, entry_tags, epoch)
            )
            self._inflight[full] = (epoch, task)
            task.add_done_callback(functools.partial(self._fill_done, full))
        else:
            task = inflight[1]
        data = await asyncio.shield(task)
        return self._decode(full, data, type)

    async def _l2_get(self, full: str, ns: Namespace, strategy: CacheStrategy) -> bytes | None:
        assert self.l2 is not None
        l2 = self.stats_.tiers["l2"]
        epoch = self._epoch
        t0 = time.perf_counter_ns()
        try:
            raw = await self.l2.get(full)
        except RedisUnavailable:
            l2.errors += 1
            return None
        l2.observe((time.perf_counter_ns() - t0) / 1000)
        if raw is None:
            l2.misses += 1
            return None
        try:
            env = self._env_decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("cache: dropping undecodable L2 entry %r", full)
            l2.errors += 1
            return None
        left: float | None = None
        if env.expires:
            left = env.expires - time.time()
            if left <= 0:
                l2.misses += 1
                return None
        l2.hits += 1
        local_ttl = strategy.ttl(full, ns.ttl)
        if local_ttl is not None and left is not None:
            left = min(left, local_ttl)
        elif left is None:
            left = local_ttl
        if epoch == self._epoch:  # no invalidation raced the read
            self.l1.set(full, env.data, left, env.tags)
        return env.data

    def _tags_for(
        self,
        ns: Namespace,
        strategy: CacheStrategy,
        key: str,
        user: str | None,
        tags: Iterable[str],
        events: Iterable[str],
    ) -> list[str]:
        out = [f"n:{ns.name}"]
        out += (f"e:{e}" for e in ns.events)
        out += (f"e:{e}" for e in strategy.events(key, user))
        out += (f"e:{e}" for e in events)
        out += (f"t:{t}" for t in tags)
        return list(dict.fromkeys(out))

    async def _fill(
        self,
        full: str,
        ns: Namespace,
        strategy: CacheStrategy,
        loader: Loader,
        ttl: float | None,
        tags: list[str],
        epoch: int,
    ) -> bytes:
        l3 = self.stats_.tiers["l3"]
        t0 = time.perf_counter_ns()
        try:
            value = await asyncio.wait_for(loader(), self.loader_timeout)
        except StoreUnavailable:
            l3.errors += 1
            raise  # the database is away: the caller answers "retry later", not "bug"
        except TimeoutError:
            l3.errors += 1
            raise CacheLoaderTimeout(
                f"loader for cache key {full!r} did not finish within {self.loader_timeout} s"
            ) from None
        except Exception as exc:
            l3.errors += 1
            raise CacheLoaderError(f"loader for cache key {full!r} failed: {exc!r}") from exc
        l3.misses += 1  # every L3 call is a miss of the tiers above
        l3.observe((time.perf_counter_ns() - t0) / 1000)
        data = self._encode(full, value)
        if len(data) > self.max_value_bytes:
            self.stats_.rejected += 1
            log.warning(
                "cache: value for %r is %d bytes (limit %d); served uncached",
                full,
                len(data),
                self.max_value_bytes,
            )
            return data
        if strategy.cacheable and ttl != 0 and epoch == self._epoch:
            await self._store(full, ns, data, ttl, tags, epoch)
        return data

    def _fill_done(self, full: str, task: asyncio.Task[bytes]) -> None:
        current = self._inflight.get(full)
        if current is not None and current[1] is task:
            del self._inflight[full]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not logged twice

    async def _store(
        self,
        full: str,
        ns: Namespace,
        data: bytes,
        ttl: float | None,
        tags: list[str],
        epoch: int | None = None,
    ) -> None:
        self.stats_.sets += 1
        self.l1.set(full, data, ttl, tags)
        if self.l2 is None or not ns.l2:
            return
        expires = 0.0 if ttl is None else time.time() + ttl
        envelope = self._encoder.encode(_Envelope(expires, tags, data))
        try:
            await self.l2.set(full, envelope, ttl, tags)
            if epoch is not None and epoch != self._epoch:  # invalidated while we wrote
                self.l1.delete(full)
                await self.l2.invalidate([full], ())
        except RedisUnavailable:
            self.stats_.tiers["l2"].errors += 1

    # ------------------------------------------------------------------ writes

    async def set(
        self,
        key: str,
        value: Any,
        *,
        namespace: str = "default",
        user: str | None = None,
        ttl: float | None = ...,  # type: ignore[assignment]
        tags: Iterable[str] = (),
        events: Iterable[str] = (),
    ) -> None:
        """Store ``value`` in every tier and drop the key from other replicas' L1.

        Raises :class:`CacheValueError` (not serializable) or :class:`CacheValueTooLarge`.
        """
        ns, strategy, full, data = self._prepare(key, value, namespace, user)
        self._epoch += 1  # loads in flight for this key are now stale
        strategy.observe_change(full)
        if not strategy.cacheable:
            self.l1.delete(full)
            return
        entry_ttl = strategy.ttl(full, ns.ttl) if ttl is ... else ttl
        entry_tags = self._tags_for(ns, strategy, key, user, tags, events)
        await self._store(full, ns, data, entry_ttl, entry_tags)
        await self._broadcast([full], [], local=False)

    def _prepare(
        self, key: str, value: Any, namespace: str, user: str | None
    ) -> tuple[Namespace, CacheStrategy, str, bytes]:
        """Resolve the namespace and full key, and encode ``value`` within the size limit."""
        ns, strategy = self._resolve(namespace)
        full = f"{namespace}:{strategy.scoped_key(key, user)}"
        data = self._encode(full, value)
        if len(data) > self.max_value_bytes:
            self.stats_.rejected += 1
            raise CacheValueTooLarge(
                f"value for cache key {full!r} is {len(data)} bytes; "
                f"the limit is {self.max_value_bytes}"
            )
        return ns, strategy, full, data

    @property
    def epoch(self) -> int:
        """Changes on every invalidation; pass it to :meth:`put` to refuse stale fills."""
        return self._epoch

    async def put(
        self,
        key: str,
        value: Any,
        *,
        namespace: str = "default",
        user: str | None = None,
        ttl: float | None = ...,  # type: ignore[assignment]
        tags: Iterable[str] = (),
        events: Iterable[str] = (),
        if_epoch: int | None = None,
    ) -> bool:
        """Fill the cache from the source (not a change: other replicas keep their copies).

        With ``if_epoch``, nothing is stored if an invalidation happened since that epoch
        (the value may predate it). Returns whether the value was stored. Raises like
        :meth:`set`.
        """
        ns, strategy, full, data = self._prepare(key, value, namespace, user)
        epoch = self._epoch if if_epoch is None else if_epoch
        entry_ttl = strategy.ttl(full, ns.ttl) if ttl is ... else ttl
        if not strategy.cacheable or entry_ttl == 0 or epoch != self._epoch:
            return False
        entry_tags = self._tags_for(ns, strategy, key, user, tags, events)
        await self._store(full, ns, data, entry_ttl, entry_tags, epoch)
        return True

    async def delete(self, key: str, *, namespace: str = "default", user: str | None = None) -> int:
        _, strategy = self._resolve(namespace)
        return await self.invalidate(key=f"{namespace}:{strategy.scoped_key(key, user)}")

    async def invalidate(
        self,
        *,
        key: str | None = None,
        tag: str | None = None,
        event: str | None = None,
        namespace: str | None = None,
        events: Iterable[str] = (),
        everything: bool = False,
    ) -> int:
        """Drop entries from every tier on every replica; returns the L1 entries dropped here.

        ``key`` is a full key (``namespace:key``; use :meth:`delete` for a namespace key),
        ``tag`` a caller tag, ``event``/``events`` event names, ``namespace`` a whole
        namespace. Several at once cost one Redis round trip.
        """
        keys = [key] if key is not None else []
        tags = []
        if tag is not None:
            tags.append(f"t:{tag}")
        if event is not None:
            tags.append(f"e:{event}")
        tags += (f"e:{e}" for e in events)
        if namespace is not None:
            tags.append(f"n:{namespace}")
        self.stats_.invalidations += 1
        if everything:
            self._epoch += 1
            dropped = self.l1.clear()
            if self.l2 is not None:
                try:
                    await self.l2.flush(self.channel, self._message([], [], everything=True))
                except RedisUnavailable:
                    self._pending_overflow = True
            return dropped
        return await self._broadcast(keys, tags, local=True)

    async def _broadcast(self, keys: list[str], tags: list[str], *, local: bool) -> int:
        dropped = 0
        if local:
            self._epoch += 1
            dropped = self._drop_local(keys, tags)
        if self.l2 is None:
            return dropped
        try:
            if local:
                await self.l2.invalidate(keys, tags, self.channel, self._message(keys, tags))
            else:
                await self.l2.publish(self.channel, self._message(keys, tags))
        except RedisUnavailable:
            self._remember(keys, tags)
        return dropped

    def _drop_local(self, keys: Iterable[str], tags: Iterable[str]) -> int:
        dropped = 0
        for key in keys:
            if self.l1.delete(key):
                dropped += 1
            self._observe_change(key)
        for tag in tags:
            for key in self.l1.invalidate_tag(tag):
                dropped += 1
                self._observe_change(key)
        return dropped

    def _observe_change(self, full: str) -> None:
        namespace = full.split(":", 1)[0]
        if namespace in self._namespaces:
            self._resolve(namespace)[1].observe_change(full)

    def _remember(self, keys: Iterable[str], tags: Iterable[str]) -> None:
        """Keep invalidations made while Redis is down, to replay when it returns."""
        self._pending_keys.update(keys)
        self._pending_tags.update(tags)
        if len(self._pending_keys) + len(self._pending_tags) > MAX_PENDING_INVALIDATIONS:
            self._pending_overflow = True
            self._pending_keys.clear()
            self._pending_tags.clear()

    async def _l2_recovered(self) -> None:
        """Redis is back: replay invalidations it missed, so L2 serves nothing stale."""
        assert self.l2 is not None
        keys, tags = list(self._pending_keys), list(self._pending_tags)
        overflow = self._pending_overflow
        self._pending_keys.clear()
        self._pending_tags.clear()
        self._pending_overflow = False
        try:
            if overflow:
                await self.l2.flush(self.channel, self._message([], [], everything=True))
            elif keys or tags:
                await self.l2.invalidate(keys, tags, self.channel, self._message(keys, tags))
        except RedisUnavailable:
            self._remember(keys, tags)
            self._pending_overflow |= overflow

    def _message(self, keys: list[str], tags: list[str], everything: bool = False) -> bytes:
        return self._encoder.encode({"o": self.id, "k": keys, "t": tags, "all": everything})

    # ------------------------------------------------------------------ cross-replica

    async def _listen(self) -> None:
        """Apply other replicas' invalidations to L1; reconnect with backoff after failures."""
        assert self._redis_url is not None
        client = Redis.from_url(
            self._redis_url, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
        )
        backoff, lost = 0.2, False
        try:
            while True:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self.channel)
                    if lost:  # invalidations may have been missed meanwhile
                        self._epoch += 1
                        dropped = self.l1.clear()
                        log.info("cache: invalidation channel back; cleared %d L1 keys", dropped)
                    lost, backoff = False, 0.2
                    self._subscribed.set()
                    while True:
                        msg = await pubsub.get_message(timeout=None)
                        if msg is not None and msg.get("type") == "message":
                            self._apply_remote(msg["data"])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not lost:
                        log.info("cache: invalidation channel lost (%s); reconnecting", exc)
                    lost = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
        finally:
            await client.aclose()

    def _apply_remote(self, raw: bytes) -> None:
        try:
            msg = msgspec.msgpack.decode(raw)
        except msgspec.DecodeError:
            log.warning("cache: ignoring undecodable invalidation message")
            return
        if not isinstance(msg, dict) or msg.get("o") == self.id:
            return
        self.stats_.remote_invalidations += 1
        self._epoch += 1
        if msg.get("all"):
            self.l1.clear()
            return
        self._drop_local(msg.get("k") or (), msg.get("t") or ())

    # ------------------------------------------------------------------ warming

    def add_warmer(
        self, key: str, loader: Loader, *, namespace: str = "default", user: str | None = None
    ) -> None:
        """Declare a key to load by :meth:`warm` (plugins call this in ``lydian_startup``)."""
        self._warmers.append(_Warmer(key=key, loader=loader, namespace=namespace, user=user))

    async def warm(self, hottest: int = 100) -> int:
        """Load declared keys, then pull the previous run's hottest keys from L2 into L1."""
        loaded = 0
        for w in self._warmers:
            try:
                await self.get(w.key, w.loader, namespace=w.namespace, user=w.user)
                loaded += 1
            except CacheError as exc:
                log.warning("cache: warming %s:%s failed: %s", w.namespace, w.key, exc)
        if self.l2 is None or hottest <= 0:
            return loaded
        try:
            keys = [k for k in await self.l2.hottest(hottest) if self.l1.get(k) is None]
            raws = await self.l2.get_many(keys) if keys else []
        except RedisUnavailable:
            return loaded
        now = time.time()
        for key, raw in zip(keys, raws, strict=True):
            if raw is None:
                continue
            try:
                env = self._env_decoder.decode(raw)
            except msgspec.DecodeError:
                continue
            left = env.expires - now if env.expires else None
            if left is None or left > 0:
                self.l1.set(key, env.data, left, env.tags)
                loaded += 1
        return loaded

    async def _sync_hot(self, interval: float = 10.0) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(RedisUnavailable):
                await self._flush_hot()

    async def _flush_hot(self) -> None:
        if not self._hot_delta or self.l2 is None:
            return
        delta, self._hot_delta = self._hot_delta, {}
        top = sorted(delta.items(), key=lambda kv: kv[1], reverse=True)[:1000]
        await self.l2.record_hot(dict(top), keep=1000)

    # ------------------------------------------------------------------ codec and stats

    def _encode(self, full: str, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            self.stats_.rejected += 1
            raise CacheValueError(f"value for cache key {full!r} cannot be cached: {exc}") from exc

    def _decode(self, full: str, data: bytes, type: Any) -> Any:
        decoder = self._decoders.get(type)
        if decoder is None:
            decoder = self._decoders[type] = msgspec.msgpack.Decoder(type)
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise CacheValueError(f"cached value for {full!r} is not a {type!r}: {exc}") from exc

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for ``GET /api/cache/stats`` and the dashboard."""
        return self.stats_.snapshot(
            replica=self.id,
            l1={
                "entries": len(self.l1),
                "bytes": self.l1.bytes,
                "max_entries": self.l1.max_entries,
                "max_bytes": self.l1.max_bytes,
                "evictions": self.l1.evictions,
                "expirations": self.l1.expirations,
            },
            l2={
                "configured": self.l2 is not None,
                "available": self.l2.available if self.l2 is not None else False,
                "failures": self.l2.failures if self.l2 is not None else 0,
            },
            inflight=len(self._inflight),
            namespaces={
                n.name: {"strategy": n.strategy, "ttl": n.ttl, "events": list(n.events)}
                for n in self._namespaces.values()
            },
            strategies=self.strategies.names(),
        )


class BoundNamespace:
    """``manager.namespace(name)``: the manager's API with the namespace filled in."""

    def __init__(self, manager: CacheManager, name: str) -> None:
        self.manager = manager
        self.name = name

    async def get(self, key: str, loader: Loader | None = None, **kw: Any) -> Any:
        return await self.manager.get(key, loader, namespace=self.name, **kw)

    async def set(self, key: str, value: Any, **kw: Any) -> None:
        await self.manager.set(key, value, namespace=self.name, **kw)

    async def delete(self, key: str, user: str | None = None) -> int:
        return await self.manager.delete(key, namespace=self.name, user=user)

    async def clear(self) -> int:
        return await self.manager.invalidate(namespace=self.name)
