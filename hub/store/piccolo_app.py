"""Piccolo app for the hub's tables; migrations live in the top-level ``migrations/``."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from hub.store.tables import TABLES


def migrations_folder() -> Path:
    """``migrations/`` beside the package in a checkout, or its copy inside a wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "migrations", here / "_migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("lydian migrations folder not found")


APP_CONFIG = AppConfig(
    app_name="lydian",
    migrations_folder_path=str(migrations_folder()),
    table_classes=TABLES,
)
