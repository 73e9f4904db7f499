"""Helpers for the adapter tests: configure the Slack/Discord plugins against the fakes."""

from __future__ import annotations

from typing import Any

from tests.support import eventually as eventually  # re-exported: the adapter tests use it

SIGNING_SECRET = "fake-signing-secret-0123456789"
SLACK_TOKEN = "xoxb-fake"
DISCORD_TOKEN = "fake.discord.token"


def slack_env(monkeypatch: Any) -> None:
    monkeypatch.setenv("LYDIAN_PLUGIN_SLACK_BOT_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("LYDIAN_PLUGIN_SLACK_SIGNING_SECRET", SIGNING_SECRET)


def discord_env(monkeypatch: Any) -> None:
    monkeypatch.setenv("LYDIAN_PLUGIN_DISCORD_BOT_TOKEN", DISCORD_TOKEN)
