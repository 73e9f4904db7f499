"""Helpers for the adapter tests: configure the Slack/Discord plugins against the fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

SIGNING_SECRET = "fake-signing-secret-0123456789"
SLACK_TOKEN = "xoxb-fake"
DISCORD_TOKEN = "fake.discord.token"


def slack_env(monkeypatch: Any) -> None:
    monkeypatch.setenv("LYDIAN_PLUGIN_SLACK_BOT_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("LYDIAN_PLUGIN_SLACK_SIGNING_SECRET", SIGNING_SECRET)


def discord_env(monkeypatch: Any) -> None:
    monkeypatch.setenv("LYDIAN_PLUGIN_DISCORD_BOT_TOKEN", DISCORD_TOKEN)


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``check`` until it returns something truthy (bounded by ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)
