"""Multi-tier caching: L1 memory, L2 Redis, L3 the caller's loader; see ``manager``."""

from hub.cache.errors import (
    CacheError,
    CacheLoaderError,
    CacheLoaderTimeout,
    CacheValueError,
    CacheValueTooLarge,
)
from hub.cache.manager import BoundNamespace, CacheManager, Namespace
from hub.cache.strategy import CacheStrategy, StrategyRegistry

__all__ = [
    "BoundNamespace",
    "CacheError",
    "CacheLoaderError",
    "CacheLoaderTimeout",
    "CacheManager",
    "CacheStrategy",
    "CacheValueError",
    "CacheValueTooLarge",
    "Namespace",
    "StrategyRegistry",
]
