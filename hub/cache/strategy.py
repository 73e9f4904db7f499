"""Cache strategies: how a namespace picks keys, TTLs and invalidation tags.

A strategy is any object with the attributes of :class:`CacheStrategy`; plugins return
them from the ``lydian_cache_strategies()`` hook and the hub registers them by ``name``.
:class:`CacheStrategy` itself is the fixed-TTL behaviour every namespace falls back to,
so the core works even when no strategy plugin is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

DEFAULT_STRATEGY = "default"


class CacheStrategy:
    """Base strategy: cache everything for the namespace's TTL, shared by all users.

    Subclasses override what they need:

    - ``cacheable`` False: never store (every read calls the loader).
    - ``scoped_key(key, user)``: the key actually stored (e.g. per user).
    - ``events(key, user)``: events whose ``invalidate(event=…)`` drops the entry.
    - ``ttl(full_key, default)``: seconds to keep (``None`` = until evicted or invalidated).
    - ``observe_read(full_key, hit)`` / ``observe_change(full_key)``: usage feedback.
    """

    name: str = DEFAULT_STRATEGY
    cacheable: bool = True

    def scoped_key(self, key: str, user: str | None) -> str:
        return key

    def events(self, key: str, user: str | None) -> tuple[str, ...]:
        return ()

    def ttl(self, full_key: str, default: float | None) -> float | None:
        return default

    def observe_read(self, full_key: str, hit: bool) -> None:
        return None

    def observe_change(self, full_key: str) -> None:
        return None


class StrategyRegistry:
    """Strategies by name; a later registration of the same name replaces the earlier one."""

    def __init__(self, strategies: Iterable[CacheStrategy] = ()) -> None:
        self._by_name: dict[str, CacheStrategy] = {DEFAULT_STRATEGY: CacheStrategy()}
        self._warned: set[str] = set()
        for strategy in strategies:
            self.register(strategy)

    def register(self, strategy: CacheStrategy) -> None:
        name = getattr(strategy, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"cache strategy {strategy!r} has no name")
        for attr in ("scoped_key", "events", "ttl", "observe_read", "observe_change"):
            if not callable(getattr(strategy, attr, None)):
                raise TypeError(f"cache strategy {name!r} lacks {attr}()")
        if name in self._by_name and name != DEFAULT_STRATEGY:
            log.info("cache strategy %r replaced by %r", name, strategy)
        self._by_name[name] = strategy

    def get(self, name: str) -> CacheStrategy:
        strategy = self._by_name.get(name)
        if strategy is None:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("cache strategy %r is not registered; using fixed TTL", name)
            return self._by_name[DEFAULT_STRATEGY]
        return strategy

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return sorted(self._by_name)
