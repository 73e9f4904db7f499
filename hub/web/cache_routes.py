"""Cache REST API (admins): ``GET /api/cache/stats``, ``GET /api/cache/keys``,
``POST /api/cache/invalidate``."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.params import FromQuery, JSONBody, Parameter

from hub.base.auth import Identity


class Invalidate(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of the fields names what to drop, on every replica."""

    key: str | None = None
    tag: str | None = None
    event: str | None = None
    namespace: str | None = None


def _cache(request: Request[Identity, Any, Any]) -> Any:
    if not request.user.is_admin:
        raise PermissionDeniedException("cache administration is for admins")
    return request.app.state.hub.cache


@get("/api/cache/stats", tags=["cache"])
async def cache_stats(request: Request[Identity, Any, Any]) -> dict[str, Any]:
    """Hits, misses, hit rate and latency histogram per tier, evictions, memory, top keys."""
    return _cache(request).stats()


@get("/api/cache/keys", tags=["cache"])
async def cache_keys(
    request: Request[Identity, Any, Any],
    prefix: FromQuery[str] = "",
    limit: Annotated[int, Parameter(ge=1, le=10_000)] = 1000,
) -> list[str]:
    """Keys currently in this replica's L1 (most recently used last)."""
    return [k for k in _cache(request).l1.keys() if k.startswith(prefix)][-limit:]


@post("/api/cache/invalidate", tags=["cache"], status_code=200)
async def cache_invalidate(
    request: Request[Identity, Any, Any], data: JSONBody[Invalidate]
) -> dict[str, int]:
    """Drop a key, tag, event or namespace from every tier on every replica."""
    cache = _cache(request)
    given = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
    if len(given) != 1:
        raise ValidationException("give exactly one of key, tag, event, namespace")
    return {"dropped_here": await cache.invalidate(**given)}


cache_routes = [cache_stats, cache_keys, cache_invalidate]
