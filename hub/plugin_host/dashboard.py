"""What ``lydian_dashboard_pages()`` returns: one admin dashboard page per object."""

from __future__ import annotations

import msgspec
from litestar import Controller, Router
from litestar.handlers import BaseRouteHandler

RouteHandler = BaseRouteHandler | Router | type[Controller]
"""What ``lydian_routes`` returns a list of: Litestar handlers (``@get``, ``@post``,
``@websocket``...), routers and controller classes."""


class DashboardPage(msgspec.Struct, frozen=True):
    """A page of the admin dashboard, served by the plugin's own route at ``path``."""

    title: str
    path: str
    handler: RouteHandler | None = None
    """The route handler serving the page (also returned from ``lydian_routes``), if any."""
    description: str = ""
