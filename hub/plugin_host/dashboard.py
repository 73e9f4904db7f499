"""What ``lydian_dashboard_pages()`` returns: one admin dashboard page per object."""

from __future__ import annotations

from typing import Any

import msgspec


class DashboardPage(msgspec.Struct, frozen=True):
    """A page of the admin dashboard, served by the plugin's own route at ``path``."""

    title: str
    path: str
    handler: Any = None
    """The route handler serving the page (also returned from ``lydian_routes``), if any."""
    description: str = ""
