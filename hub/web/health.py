"""Liveness and readiness for orchestrators and load balancers; 503 while the store is away.

``/livez`` says the process runs (no dependency is asked). ``/readyz`` says it can serve:
the database answers within ``readyz_timeout``, Redis too when configured, and every
migration is applied; otherwise 503 with a JSON body naming what failed. ``/healthz`` (in
``hub.api``) stays as it was: process details, no dependency checks.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import Request, Response, get
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from hub.core import Hub
from hub.store.errors import StoreUnavailable

NO_STORE = {"Cache-Control": "no-store"}


@get("/livez", exclude_from_auth=True, tags=["ops"], cache=False)
async def livez() -> Response[dict[str, str]]:
    """The process is alive (answers without asking the database or Redis)."""
    return Response({"status": "ok"}, headers=NO_STORE)


async def _check(name: str, probe: Any, timeout: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            detail = await probe()
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {timeout:g} s"}
    except Exception as exc:  # any failure makes the check fail; its text says which
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result: dict[str, Any] = {"ok": True, "ms": round((time.perf_counter() - start) * 1000, 1)}
    if detail:
        result.update(detail)
    return result


@get("/readyz", exclude_from_auth=True, tags=["ops"], cache=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Ready to serve: database, Redis (when configured) and migrations; 503 names failures."""
    hub: Hub = request.app.state.hub
    timeout = hub.settings.readyz_timeout

    async def database() -> None:
        await hub.store.ping()

    async def migrations() -> dict[str, Any] | None:
        pending = await hub.store.pending_migrations()
        if pending:
            raise RuntimeError(f"not applied: {', '.join(pending)}")
        return None

    probes: dict[str, Any] = {"database": database, "migrations": migrations}
    redis = getattr(hub.broker, "redis", None)
    if hub.settings.redis_url and redis is not None:

        async def redis_ping() -> None:
            await redis.ping()

        probes["redis"] = redis_ping
    results = await asyncio.gather(*(_check(n, p, timeout) for n, p in probes.items()))
    checks = dict(zip(probes, results, strict=True))
    failed = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "unavailable" if failed else "ok", "failed": failed, "checks": checks}
    status = HTTP_503_SERVICE_UNAVAILABLE if failed else 200
    headers = dict(NO_STORE)
    if failed:
        headers["Retry-After"] = str(max(1, round(hub.settings.store_retry_after)))
    return Response(body, status_code=status, headers=headers)


def store_unavailable_handler(
    request: Request[Any, Any, Any], exc: StoreUnavailable
) -> Response[dict[str, Any]]:
    """Any REST call that met an unavailable database: 503 with ``Retry-After``."""
    retry = request.app.state.hub.settings.store_retry_after
    return Response(
        {
            "status_code": 503,
            "detail": "the database did not answer in time; retry later",
            "code": "store_unavailable",
            "retry_after": retry,
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(max(1, round(retry))), **NO_STORE},
    )
