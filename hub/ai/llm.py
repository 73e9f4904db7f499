"""LLM providers as the hub sees them: a chat request in, a stream of text pieces out.

A provider is any object with a ``name``, ``configured(hub)``, ``models(hub)`` and
``stream(request, hub)`` (an async iterator of text pieces); ``hub`` is the hub as plugins
see it (``HubAPI``, defined on a higher floor, hence typed ``Any`` here). Plugins register
them with ``lydian_llm_providers``. Closing the iterator (or cancelling the task that reads
it) must close the upstream request: that is how a cancelled answer stops costing tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

CHARS_PER_TOKEN = 4
"""Rough size of a token for budgets: English text averages about four characters."""


class ImagePart(msgspec.Struct, frozen=True, kw_only=True):
    """An image a user turn carries for a vision model (OpenAI's ``image_url`` part).

    ``url`` is a ``data:`` URL (checked by whoever built the turn: decoded, sniffed, within
    limits) or, where the operator allows it, an ``http(s)`` URL the model server fetches;
    ``detail`` is OpenAI's ``auto``/``low``/``high``."""

    url: str
    media_type: str = ""
    detail: str | None = None


IMAGE_TOKENS = 765
"""What one image counts for in token budgets (OpenAI's cost of a 1024 px image, high detail)."""


class ChatTurn(msgspec.Struct):
    """One message of a conversation: ``role`` is ``system``, ``user`` or ``assistant``.

    ``images`` go to the model after ``content``, only through a provider that accepts them
    (:meth:`Provider.accepts_images`): a turn with images is never sent to one that does not.
    """

    role: str
    content: str
    images: list[ImagePart] = []


class CompletionRequest(msgspec.Struct, kw_only=True):
    messages: list[ChatTurn]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


class LLMError(Exception):
    """A provider failed in a way worth telling the room; ``code`` is stable, ``detail`` human."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


NO_PROVIDER = "no_provider"
UPSTREAM_ERROR = "upstream_error"
UPSTREAM_TIMEOUT = "upstream_timeout"
BAD_RESPONSE = "bad_response"


@runtime_checkable
class Provider(Protocol):
    """What the hub needs from an LLM provider."""

    name: str

    def configured(self, hub: Any) -> bool:
        """Whether the provider has what it needs (URL, key, model) on this hub."""
        ...

    def models(self, hub: Any) -> list[str]: ...

    def stream(self, request: CompletionRequest, hub: Any) -> AsyncIterator[str]:
        """Yield the answer piece by piece; raise :class:`LLMError` on upstream trouble."""
        ...


IMAGES_UNSUPPORTED = "images_unsupported"


def accepts_images(provider: Any, model: str | None, hub: Any) -> bool:
    """Whether ``provider`` passes image parts to ``model`` (``None``: its default model).

    Optional for providers: one without an ``accepts_images(model, hub)`` method takes none.
    """
    check = getattr(provider, "accepts_images", None)
    return bool(check is not None and check(model, hub))


def estimate_tokens(text: str) -> int:
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def fit_to_budget(turns: Sequence[ChatTurn], budget: int) -> list[ChatTurn]:
    """The newest turns whose estimated tokens fit in ``budget`` (oldest dropped first)."""
    kept: list[ChatTurn] = []
    used = 0
    for turn in reversed(turns):
        cost = estimate_tokens(turn.content) + 4  # role and separators
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    return kept
