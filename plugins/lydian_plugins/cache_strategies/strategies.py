"""The built-in cache strategies: ``ttl``, ``lru``, ``adaptive``, ``per-user``, ``none``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from hub.sdk import CacheStrategy

FALLBACK_TTL = 60.0


class TtlStrategy(CacheStrategy):
    """Keep every value for the namespace's TTL, then reload it."""

    name = "ttl"

    def ttl(self, full_key: str, default: float | None) -> float | None:
        return FALLBACK_TTL if default is None else default


class LruStrategy(CacheStrategy):
    """No expiry: values stay until evicted (least recently used first) or invalidated."""

    name = "lru"

    def ttl(self, full_key: str, default: float | None) -> float | None:
        return None


class NoCacheStrategy(CacheStrategy):
    """Never store: every read calls the loader (concurrent reads still share one call)."""

    name = "none"
    cacheable = False


class PerUserStrategy(CacheStrategy):
    """One entry per user, dropped by ``invalidate(event="user:<id>")``.

    The user is part of the key, so one user's value is never served to another; reading
    without a user is a programming error and raises ``ValueError``.
    """

    name = "per-user"

    def scoped_key(self, key: str, user: str | None) -> str:
        if not user:
            raise ValueError(f"the per-user cache strategy needs a user for key {key!r}")
        return f"u:{user}:{key}"

    def events(self, key: str, user: str | None) -> tuple[str, ...]:
        return (f"user:{user}",)

    def ttl(self, full_key: str, default: float | None) -> float | None:
        return FALLBACK_TTL if default is None else default


class _Activity:
    __slots__ = ("changes", "reads", "stamp")

    def __init__(self, stamp: float) -> None:
        self.reads = 0.0
        self.changes = 0.0
        self.stamp = stamp


class AdaptiveStrategy(CacheStrategy):
    """TTL that follows how a key is used.

    Rule: ``ttl = base * (1 + reads) / (1 + changes) ** 2``, clamped to
    ``[base / 8, base * 8]``, where ``base`` is the namespace TTL (60 s if none) and
    ``reads`` / ``changes`` (invalidations or writes) are counted per key with exponential
    decay (both halve every ``half_life`` seconds). A key read often and rarely changed
    climbs to 8 * base; a key that changes as often as it is read drops towards base / 8.
    """

    name = "adaptive"
    MIN_FACTOR = 1 / 8
    MAX_FACTOR = 8.0

    def __init__(
        self,
        half_life: float = 600.0,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.half_life = half_life
        self.max_keys = max_keys
        self._clock = clock
        self._keys: dict[str, _Activity] = {}

    def _activity(self, full_key: str) -> _Activity:
        now = self._clock()
        act = self._keys.get(full_key)
        if act is None:
            if len(self._keys) >= self.max_keys:  # forget the oldest half
                for key in list(self._keys)[: self.max_keys // 2]:
                    del self._keys[key]
            act = self._keys[full_key] = _Activity(now)
        elif now > act.stamp:
            decay = math.pow(0.5, (now - act.stamp) / self.half_life)
            act.reads *= decay
            act.changes *= decay
            act.stamp = now
        return act

    def observe_read(self, full_key: str, hit: bool) -> None:
        self._activity(full_key).reads += 1

    def observe_change(self, full_key: str) -> None:
        self._activity(full_key).changes += 1

    def factor(self, full_key: str) -> float:
        act = self._activity(full_key)
        raw = (1 + act.reads) / (1 + act.changes) ** 2
        return min(self.MAX_FACTOR, max(self.MIN_FACTOR, raw))

    def ttl(self, full_key: str, default: float | None) -> float | None:
        base = FALLBACK_TTL if default is None else default
        return base * self.factor(full_key)
