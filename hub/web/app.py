"""The Litestar application: REST API, WebSocket gateway, OpenAPI at ``/schema``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.security.jwt import JWTAuth, Token

from hub import __version__
from hub.access.limits import check_settings, limits_first, rest_limits_middleware
from hub.base.auth import ISSUER, Identity, identity_of
from hub.base.config import Settings, load_settings
from hub.base.errors import MessageRefused, RoomNotVisible
from hub.cache.http import http_cache_middleware
from hub.core import running_hub
from hub.media.attachments import attachment_routes
from hub.media.pipeline import ROUTES as ATTACHMENT_PIPELINE_ROUTES
from hub.plugin_host.host import PluginHost
from hub.store.errors import StoreUnavailable
from hub.web.admin import plugin_routes
from hub.web.cache_routes import cache_routes
from hub.web.gateway import ws_endpoint
from hub.web.guards import json_depth_middleware
from hub.web.health import livez, readyz, store_unavailable_handler
from hub.web.refusals import exception_logging_handler
from hub.web.rest import (
    RoomController,
    guest_token,
    healthz,
    message_refused_handler,
    room_not_visible_handler,
)
from hub.web.stream_routes import stream_routes
from hub.web.tokens import token_routes

GC_GEN0_THRESHOLD = 20_000


async def _identity_from_token(
    token: Token, connection: ASGIConnection[Any, Any, Any, Any]
) -> Identity:
    """The request's identity; a revoked token is refused (401) on every replica, and a
    user's first request (per process and hour) records them as known."""
    identity = identity_of(token)
    hub = connection.app.state.hub
    if hub.revocations.is_revoked(identity.jti):
        raise NotAuthorizedException("the token was revoked")
    hub.users.seen_soon(identity)
    return identity


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
        expose_headers=["Retry-After"],  # the widget waits as long as a 429 says
    )


def _logging(settings: Settings) -> LoggingConfig:
    """The root logger at ``LYDIAN_LOG_LEVEL``, written through Litestar's queue handler (off
    the event loop). The HTTP client's line per upstream request is left out: every stream
    logs its own line with its metrics."""
    return LoggingConfig(
        root={"handlers": ["queue_listener"], "level": settings.log_level.upper()},
        loggers={name: {"level": "WARNING"} for name in ("httpx", "httpx2")},
        log_exceptions="always",
        exception_logging_handler=exception_logging_handler,  # refusals: one short line
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
            livez,
            readyz,
            ws_endpoint,
            *attachment_routes(settings),
            *ATTACHMENT_PIPELINE_ROUTES,
            *plugin_routes,
            *stream_routes,
            *plugins.routes(),
            *cache_routes,
            *token_routes,
        ],
        lifespan=[lifespan],
        on_app_init=[jwt_auth.on_app_init, limits_first],  # address limit before auth
        # after JWT auth, so they know the user; limits first (a 429 is not cached)
        middleware=[rest_limits_middleware, http_cache_middleware, json_depth_middleware],
        openapi_config=OpenAPIConfig(title="Lydian hub", version=__version__, path="/schema"),
        cors_config=_cors(settings),
        exception_handlers={
            StoreUnavailable: store_unavailable_handler,  # 503 + Retry-After
            RoomNotVisible: room_not_visible_handler,  # 404 / 403
            MessageRefused: message_refused_handler,  # 400 / 413, the hub's one message rule
        },
        logging_config=_logging(settings),
        debug=False,
    )
