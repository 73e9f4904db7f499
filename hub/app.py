"""The Litestar application: REST API, WebSocket gateway, OpenAPI at ``/schema``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.security.jwt import JWTAuth, Token

from hub import __version__
from hub.api import RoomController, guest_token, healthz
from hub.attachments import attachment_routes
from hub.auth import ISSUER, Identity
from hub.cache.http import http_cache_middleware
from hub.cache.routes import cache_routes
from hub.config import Settings, load_settings
from hub.core import running_hub
from hub.gateway import ws_endpoint
from hub.limits import check_settings, limits_first, rest_limits_middleware
from hub.plugin_api import plugin_routes
from hub.plugins import PluginHost
from hub.stream_api import stream_routes

GC_GEN0_THRESHOLD = 20_000


async def _identity_from_token(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    roles = token.extras.get("roles") or []
    return Identity(
        id=token.sub,
        name=str(token.extras.get("name") or token.sub),
        roles=tuple(str(r) for r in roles),
    )


def _cors(settings: Settings) -> CORSConfig | None:
    """Sites allowed to call the HTTP API from a browser (``LYDIAN_CORS_ORIGINS=a,b``), e.g.
    the web widget embedded elsewhere uploading attachments. Tokens are bearer headers,
    never cookies, so no credentials are allowed."""
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )


def _logging(settings: Settings) -> LoggingConfig:
    """The root logger at ``LYDIAN_LOG_LEVEL``, written through Litestar's queue handler (off
    the event loop). The HTTP client's line per upstream request is left out: every stream
    logs its own line with its metrics."""
    return LoggingConfig(
        root={"handlers": ["queue_listener"], "level": settings.log_level.upper()},
        loggers={name: {"level": "WARNING"} for name in ("httpx", "httpx2")},
        log_exceptions="always",
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; the hub's services start in the lifespan and live in ``app.state.hub``."""
    settings = settings or load_settings()
    check_settings(settings)  # a bad limit spec stops here, with one line naming it

    plugins = PluginHost(settings)  # loaded now: plugin routes must be known to build the app

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with running_hub(settings, plugins) as hub:
            app.state.hub = hub
            # Fan-out allocates a small dict per frame per socket; the default threshold (700)
            # runs a collection every few hundred deliveries. Collect less often.
            gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
            yield

    jwt_auth = JWTAuth[Identity, Token](
        retrieve_user_handler=_identity_from_token,
        token_secret=settings.resolved_secret(),
        accepted_issuers=[ISSUER],
        exclude=["^/schema", "^/ws$"],
    )
    return Litestar(
        route_handlers=[
            RoomController,
            guest_token,
            healthz,
            ws_endpoint,
            *attachment_routes(settings),
            *plugin_routes,
            *stream_routes,
            *plugins.routes(),
            *cache_routes,
        ],
        lifespan=[lifespan],
        on_app_init=[jwt_auth.on_app_init, limits_first],  # address limit before auth
        # both run after JWT auth, so they know the user; limits first (a 429 is not cached)
        middleware=[rest_limits_middleware, http_cache_middleware],
        openapi_config=OpenAPIConfig(title="Lydian hub", version=__version__, path="/schema"),
        cors_config=_cors(settings),
        logging_config=_logging(settings),
        debug=False,
    )
