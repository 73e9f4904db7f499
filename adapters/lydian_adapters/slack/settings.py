"""``[plugins.slack]`` settings; tokens come only from the environment."""

from __future__ import annotations

from typing import Annotated

import msgspec

from hub.sdk import Secret


class SlackSettings(msgspec.Struct, kw_only=True):
    """The adapter stays idle until ``LYDIAN_PLUGIN_SLACK_BOT_TOKEN`` is set.

    HTTP mode needs the signing secret (Events API at ``/slack/events``); Socket Mode
    needs the app-level token (``xapp-…``) instead of a public URL.
    """

    bot_token: Annotated[str, Secret] = ""
    signing_secret: Annotated[str, Secret] = ""
    app_token: Annotated[str, Secret] = ""
    api_url: str = "https://slack.com/api/"
    edit_interval: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    native_streaming: bool = True
    admins: list[str] = []
    command: str = "/lydian"
    stop_reaction: str = "octagonal_sign"
    public_url: str = ""
    request_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
