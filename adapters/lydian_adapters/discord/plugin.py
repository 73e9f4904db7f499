"""The ``discord`` plugin: starts the Discord adapter when a bot token is configured."""

from __future__ import annotations

import logging
import weakref
from typing import Any

from hub.sdk import hookimpl
from lydian_adapters.discord.adapter import DiscordAdapter
from lydian_adapters.discord.settings import DiscordSettings

log = logging.getLogger(__name__)

_adapters: weakref.WeakKeyDictionary[Any, DiscordAdapter] = weakref.WeakKeyDictionary()


def adapter_for(hub: Any) -> DiscordAdapter | None:
    return _adapters.get(hub)


@hookimpl
def lydian_plugin_settings() -> type[DiscordSettings]:
    return DiscordSettings


@hookimpl
async def lydian_startup(hub: Any) -> None:
    settings: DiscordSettings | None = hub.plugin_settings("discord")
    if settings is None or not settings.bot_token:
        log.info("plugin 'discord' idle: LYDIAN_PLUGIN_DISCORD_BOT_TOKEN is not set")
        return  # not configured: stay idle
    adapter = DiscordAdapter(hub, settings)
    _adapters[hub] = adapter
    await adapter.start()


@hookimpl
async def lydian_shutdown(hub: Any) -> None:
    adapter = _adapters.pop(hub, None)
    if adapter is not None:
        await adapter.stop()
