"""The ``lydian`` command line: serve, migrate, tokens, plugins, config and doctor."""

from hub.cli.main import main

__all__ = ["main"]
