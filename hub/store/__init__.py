"""Persistence: Piccolo tables on SQLite (embedded default) or PostgreSQL."""

import os

# Piccolo resolves a table's engine through this module when the table class is created.
os.environ.setdefault("PICCOLO_CONF", "hub.store.piccolo_conf")
