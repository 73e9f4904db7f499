"""Built-in cache strategies, registered through ``lydian_cache_strategies`` like any plugin."""

from __future__ import annotations

from hub.sdk import CacheStrategy, hookimpl
from lydian_plugins.cache_strategies.strategies import (
    AdaptiveStrategy,
    LruStrategy,
    NoCacheStrategy,
    PerUserStrategy,
    TtlStrategy,
)

__all__ = [
    "AdaptiveStrategy",
    "LruStrategy",
    "NoCacheStrategy",
    "PerUserStrategy",
    "TtlStrategy",
    "lydian_cache_strategies",
]


@hookimpl
def lydian_cache_strategies() -> list[CacheStrategy]:
    """Fresh instances per hub (``adaptive`` keeps per-key counters)."""
    return [TtlStrategy(), LruStrategy(), AdaptiveStrategy(), PerUserStrategy(), NoCacheStrategy()]
