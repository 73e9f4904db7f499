"""Building and starting the hub's cache from :class:`~hub.config.Settings`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from hub.base.config import Settings
from hub.cache.manager import CacheManager

log = logging.getLogger(__name__)


def cache_prefix(settings: Settings) -> str:
    """``cache_redis_prefix``, else one derived from the database: replicas sharing a
    database share the cache; hubs on other databases never see each other's entries."""
    if settings.cache_redis_prefix:
        return settings.cache_redis_prefix
    db = hashlib.sha256(settings.resolved_database_url().encode()).hexdigest()[:12]
    return f"{settings.redis_prefix}:cache:{db}:"


def build_cache(settings: Settings) -> CacheManager:
    """L1 always; L2 and cross-replica invalidation when ``REDIS_URL`` is set."""
    return CacheManager(
        max_entries=settings.cache_max_entries,
        max_bytes=settings.cache_max_bytes,
        default_ttl=settings.cache_default_ttl,
        max_value_bytes=settings.cache_max_value_bytes,
        loader_timeout=settings.cache_loader_timeout,
        redis_url=settings.redis_url,
        prefix=cache_prefix(settings),
    )


async def start_cache(
    cache: CacheManager, settings: Settings, strategies: Callable[[], list[tuple[str, Any]]]
) -> None:
    """After the plugins started: register their strategies (``strategies()`` gives the
    ``(plugin, strategy)`` pairs of ``lydian_cache_strategies``), then warm (before ready)."""
    for plugin, strategy in strategies():
        try:
            cache.register_strategy(strategy)
        except TypeError as exc:
            log.error("plugin %r: invalid cache strategy: %s", plugin, exc)
    cache.strategy_source = lambda: [s for _, s in strategies() if hasattr(s, "name")]
    await cache.start()
    loaded = await cache.warm(settings.cache_warm_hottest)
    if loaded:
        log.info("cache: warmed %d keys", loaded)
