"""Built-in ``offline`` LLM provider: no network, deterministic, and says so plainly.

It answers ``[offline model] You said: <the last user message>`` word by word, so that
``lydian serve`` streams answers out of the box and tests can rely on the exact text. It
is the hub's fallback: any other configured provider is preferred to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec

from hub.sdk import OFFLINE, CompletionRequest, HubAPI, hookimpl

PREFIX = "[offline model] You said: "


class OfflineSettings(msgspec.Struct):
    """``[plugins.offline_provider]``: ``token_delay`` seconds between words (0 = none)."""

    token_delay: Annotated[float, msgspec.Meta(ge=0, le=5)] = 0.02


def offline_answer(request: CompletionRequest) -> str:
    """The full deterministic answer for ``request``."""
    said = next((t.content for t in reversed(request.messages) if t.role == "user"), "")
    return PREFIX + (" ".join(said.split()) or "(nothing)")


def words(text: str) -> list[str]:
    """Split into word tokens that join back to ``text`` exactly (spaces kept on the words)."""
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


class OfflineProvider:
    """Echoes the question as a stream of words."""

    name = OFFLINE

    def configured(self, hub: HubAPI) -> bool:
        return True

    def models(self, hub: HubAPI) -> list[str]:
        return ["offline"]

    async def stream(self, request: CompletionRequest, hub: HubAPI) -> AsyncIterator[str]:
        settings = hub.plugin_settings("offline_provider") or OfflineSettings()
        tokens = words(offline_answer(request))
        if request.max_tokens is not None:
            tokens = tokens[: request.max_tokens]
        for token in tokens:
            if settings.token_delay:
                await asyncio.sleep(settings.token_delay)
            yield token


@hookimpl
def lydian_plugin_settings() -> type[msgspec.Struct]:
    return OfflineSettings


@hookimpl
def lydian_llm_providers() -> list[OfflineProvider]:
    return [OfflineProvider()]
