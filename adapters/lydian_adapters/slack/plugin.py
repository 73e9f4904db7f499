"""The ``slack`` plugin: starts the Slack adapter when a bot token is configured and serves
``/slack/events``, ``/slack/commands`` and ``/slack/interactivity`` (see docs/adapters.md)."""

from __future__ import annotations

import logging
import weakref
from typing import Any

from litestar import Request, Response, post
from slack_bolt.async_app import AsyncBoltRequest

from hub.sdk import hookimpl
from lydian_adapters.slack.adapter import SlackAdapter
from lydian_adapters.slack.settings import SlackSettings

log = logging.getLogger(__name__)

_adapters: weakref.WeakKeyDictionary[Any, SlackAdapter] = weakref.WeakKeyDictionary()


def adapter_for(hub: Any) -> SlackAdapter | None:
    return _adapters.get(hub)


@post(
    ["/slack/events", "/slack/commands", "/slack/interactivity"],
    exclude_from_auth=True,
    status_code=200,
    include_in_schema=False,
)
async def slack_http(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Slack's Events API, slash commands and interactivity; bolt verifies the signature."""
    adapter = adapter_for(request.app.state.hub)
    if adapter is None or not adapter.settings.signing_secret:
        return Response(b"the Slack adapter is not configured", status_code=404)
    body = await request.body()
    try:
        bolt_request = AsyncBoltRequest(
            body=body.decode("utf-8"),
            query=dict(request.query_params),
            headers=dict(request.headers),
        )
    except ValueError:  # not UTF-8, or not the JSON / form body it claims to be
        return Response(b"malformed request body", status_code=400)
    reply = await adapter.app.async_dispatch(bolt_request)
    body_out = reply.body if isinstance(reply.body, bytes) else str(reply.body or "").encode()
    return Response(
        body_out, status_code=reply.status, headers=reply.first_headers_without_set_cookie()
    )


@hookimpl
def lydian_plugin_settings() -> type[SlackSettings]:
    return SlackSettings


@hookimpl
def lydian_routes() -> list[Any]:
    return [slack_http]


@hookimpl
async def lydian_startup(hub: Any) -> None:
    settings: SlackSettings | None = hub.plugin_settings("slack")
    if settings is None or not settings.bot_token:
        log.info("plugin 'slack' idle: LYDIAN_PLUGIN_SLACK_BOT_TOKEN is not set")
        return  # not configured: stay idle
    if not settings.signing_secret and not settings.app_token:
        log.warning(
            "plugin 'slack': no LYDIAN_PLUGIN_SLACK_SIGNING_SECRET (HTTP events) nor "
            "LYDIAN_PLUGIN_SLACK_APP_TOKEN (Socket Mode): it can post, but nothing from "
            "Slack reaches the hub"
        )
    adapter = SlackAdapter(hub, settings)
    _adapters[hub] = adapter
    await adapter.start()


@hookimpl
async def lydian_shutdown(hub: Any) -> None:
    adapter = _adapters.pop(hub, None)
    if adapter is not None:
        await adapter.stop()
