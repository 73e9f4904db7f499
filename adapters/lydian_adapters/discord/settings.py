"""``[plugins.discord]`` settings; the bot token comes only from the environment."""

from __future__ import annotations

from typing import Annotated

import msgspec

from hub.sdk import Secret


class DiscordSettings(msgspec.Struct, kw_only=True):
    """The adapter stays idle until ``LYDIAN_PLUGIN_DISCORD_BOT_TOKEN`` is set."""

    bot_token: Annotated[str, Secret] = ""
    api_url: str = "https://discord.com/api/v10"
    edit_interval: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    admins: list[str] = []
    guild_id: str = ""
    """Register the ``/lydian`` application command in this guild (instant) instead of
    globally (Discord may take up to an hour to show global commands)."""
    sync_commands: bool = True
    command: str = "lydian"
    stop_emoji: str = "🛑"
    public_url: str = ""
    max_ratelimit_wait: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Longer 429 waits are handed back to the bridge's outbox instead of discord.py's sleep."""
    use_webhooks: bool = True
    """Post copies through a channel webhook, under the author's name and avatar (needs the
    Manage Webhooks permission; without it the bot posts ``**Name**: text`` itself)."""
    guild_ready_timeout: Annotated[float, msgspec.Meta(ge=0)] = 2.0
