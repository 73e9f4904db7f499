"""Errors raised by the cache: each names the key and what went wrong."""

from __future__ import annotations


class CacheError(Exception):
    """Base of every cache error."""


class CacheValueError(CacheError, TypeError):
    """The value cannot be serialized with msgspec (msgpack); nothing was stored."""


class CacheValueTooLarge(CacheError, ValueError):
    """The serialized value exceeds ``cache_max_value_bytes``; nothing was stored."""


class CacheLoaderError(CacheError):
    """The loader (L3) raised; the original exception is the ``__cause__``."""


class CacheLoaderTimeout(CacheLoaderError, TimeoutError):
    """The loader did not finish within the loader timeout; nothing was stored."""
