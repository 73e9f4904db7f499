"""Database engines from URLs, and binding the hub's tables to one of them."""

from __future__ import annotations

from typing import Any

from piccolo.apps.migrations.tables import Migration
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine


def engine_for_url(url: str, server_settings: dict[str, str] | None = None) -> Engine:
    """``sqlite:///path`` or ``postgresql://...`` to a Piccolo engine (not yet connected)."""
    if url.startswith("sqlite:///"):
        return SQLiteEngine(path=url.removeprefix("sqlite:///"), timeout=30)
    if url.startswith(("postgres://", "postgresql://")):
        config: dict[str, Any] = {"dsn": url}
        if server_settings:
            config["server_settings"] = server_settings
        return PostgresEngine(config=config)
    raise ValueError(f"unsupported DATABASE_URL {url!r}: use sqlite:///PATH or postgresql://...")


def bind(engine: Engine) -> None:
    """Point every hub table, Piccolo's migration table and ``PICCOLO_CONF`` at ``engine``."""
    import hub.piccolo_conf as conf
    from hub.store.tables import TABLES

    conf.DB = engine
    for table in [*TABLES, Migration]:
        table._meta.db = engine
