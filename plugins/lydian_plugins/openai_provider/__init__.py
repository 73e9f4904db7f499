"""Built-in ``openai`` LLM provider: any OpenAI-compatible server, streamed.

One provider for OpenAI, Azure OpenAI (its ``/openai/v1`` endpoint), Ollama, vLLM and
llama.cpp's server: they all speak ``POST /v1/chat/completions`` with SSE. Settings
(``[plugins.openai_provider]``): ``base_url``, ``model``, ``timeout``, ``vision_models``
(the models that take image content parts: only turns to those carry images); the key comes only
from the environment (``LYDIAN_PLUGIN_OPENAI_PROVIDER_API_KEY``). It counts as configured
once ``base_url`` or the key is set; until then the offline provider answers.

Cancelling the task that reads :meth:`OpenAIProvider.stream` closes the HTTP response, so
the upstream server sees the connection go and stops generating. Nothing is retried: a
retried stream would repeat what the room has already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
import openai

try:
    from openai._constants import RAW_RESPONSE_HEADER
except ImportError:  # pragma: no cover - the header the client has always used
    RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"

from hub.sdk import (
    BAD_RESPONSE,
    UPSTREAM_ERROR,
    UPSTREAM_TIMEOUT,
    ChatTurn,
    CompletionRequest,
    HubAPI,
    LLMError,
    Secret,
    hookimpl,
)

PLUGIN = "openai_provider"


class OpenAISettings(msgspec.Struct):
    base_url: str = ""
    """e.g. ``http://127.0.0.1:11434/v1`` (Ollama); empty means OpenAI's own API."""
    api_key: Annotated[str, Secret] = ""
    model: str = "gpt-4o-mini"
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Seconds to connect and between two chunks before the answer fails as timed out."""
    temperature: float | None = None
    vision_models: list[str] = []
    """Models that take image content parts (``["gpt-4o-mini", "llava"]``; ``"*"``: all).
    Images are sent to no other model: ``/v1`` reads them offline instead."""


class OpenAIProvider:
    """Streams chat completions with the ``openai`` library's async client."""

    name = "openai"

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[Any, tuple[OpenAISettings, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def settings(self, hub: HubAPI) -> OpenAISettings:
        return hub.plugin_settings(PLUGIN) or OpenAISettings()

    def configured(self, hub: HubAPI) -> bool:
        settings = self.settings(hub)
        return bool(settings.base_url or settings.api_key)

    def models(self, hub: HubAPI) -> list[str]:
        return [self.settings(hub).model]

    def accepts_images(self, model: str | None, hub: HubAPI) -> bool:
        """Whether ``model`` (``None``: the configured one) is listed in ``vision_models``."""
        settings = self.settings(hub)
        vision = settings.vision_models
        return "*" in vision or (model or settings.model) in vision

    def client(self, hub: HubAPI) -> openai.AsyncOpenAI:
        settings = self.settings(hub)
        cached = self._clients.get(hub)
        if cached is not None and cached[0] == settings:
            return cached[1]
        client = openai.AsyncOpenAI(
            base_url=settings.base_url or None,
            api_key=settings.api_key or "not-needed",
            timeout=settings.timeout,
            max_retries=0,  # a retried stream would repeat what the room has seen
            # The client's aiohttp transport parses HTTP in C: ~20 µs of CPU per streamed
            # chunk against ~70 µs for the default httpx transport (bench/stream_bench.py).
            http_client=openai.DefaultAioHttpClient(),
        )
        self._clients[hub] = (settings, client)
        return client

    async def close(self, hub: HubAPI) -> None:
        cached = self._clients.pop(hub, None)
        if cached is not None:
            await cached[1].close()

    async def stream(self, request: CompletionRequest, hub: HubAPI) -> AsyncIterator[str]:
        """The answer's content pieces, as the server streams them.

        The ``openai`` client sends the request (base URL, key, timeouts, error statuses as
        exceptions); the SSE chunks are decoded here with msgspec, a fraction of the cost of
        building the library's pydantic objects for every token.
        """
        settings = self.settings(hub)
        extra: dict[str, Any] = {}
        if request.max_tokens is not None:
            extra["max_tokens"] = request.max_tokens
        temperature = request.temperature if request.temperature is not None else None
        if temperature is None:
            temperature = settings.temperature
        if temperature is not None:
            extra["temperature"] = temperature
        payload: dict[str, Any] = {
            "model": request.model or settings.model,
            "messages": [_message(t) for t in request.messages],
            "stream": True,
            **extra,
        }
        try:
            # ``post`` is the client's documented way to send a body as is: the typed
            # ``chat.completions.create`` re-validates every parameter (~0.5-1 ms per answer,
            # all of it on the time to first token). The raw-response header keeps the body
            # unread so the SSE lines can be decoded here.
            response = await self.client(hub).post(
                "/chat/completions",
                body=payload,
                cast_to=object,
                options={"headers": {RAW_RESPONSE_HEADER: "stream"}},
                stream=True,
            )
        except Exception as exc:
            raise _llm_error(exc) from exc
        try:  # leaving closes the response: the upstream sees the connection go
            lines = response.iter_lines()
            async for line in lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    await _drain(lines)
                    return
                chunk = _chunk_decoder.decode(data)
                if chunk.error is not None:
                    detail = str(chunk.error.get("message") or chunk.error)[:300]
                    raise LLMError(UPSTREAM_ERROR, f"the model server reported: {detail}")
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        yield choice.delta.content
        except LLMError:
            raise
        except Exception as exc:
            raise _llm_error(exc) from exc
        finally:
            await response.close()


def _message(turn: ChatTurn) -> dict[str, Any]:
    """A turn in OpenAI's shape: its images as ``image_url`` parts after its text."""
    if not turn.images:
        return {"role": turn.role, "content": turn.content}
    parts: list[dict[str, Any]] = []
    if turn.content:
        parts.append({"type": "text", "text": turn.content})
    for image in turn.images:
        url: dict[str, Any] = {"url": image.url}
        if image.detail is not None:
            url["detail"] = image.detail
        parts.append({"type": "image_url", "image_url": url})
    return {"role": turn.role, "content": parts}


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read the little left after ``[DONE]`` so the connection goes back to the pool (a
    new TLS handshake to a hosted model costs more than the whole hub), but never wait."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in lines:
                pass


DRAIN_SECONDS = 0.25


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    """The part of an OpenAI ``chat.completion.chunk`` the hub reads."""

    choices: list[_Choice] = []
    error: dict[str, Any] | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


def _llm_error(exc: Exception) -> LLMError:
    if isinstance(exc, openai.APITimeoutError):
        return LLMError(UPSTREAM_TIMEOUT, "the model server timed out")
    if isinstance(exc, openai.APIStatusError):
        return LLMError(
            UPSTREAM_ERROR, f"the model server answered {exc.status_code}: {exc.message}"
        )
    if isinstance(exc, openai.APIConnectionError):
        return LLMError(UPSTREAM_ERROR, "lost the connection to the model server")
    if isinstance(exc, openai.APIError):
        return LLMError(UPSTREAM_ERROR, f"the model server reported an error: {exc.message}")
    if isinstance(exc, (msgspec.DecodeError, ValueError, AttributeError, TypeError, KeyError)):
        return LLMError(BAD_RESPONSE, f"unreadable chunk from the model server: {exc}"[:300])
    if "timeout" in type(exc).__name__.lower():  # the HTTP library's read/connect timeouts
        return LLMError(UPSTREAM_TIMEOUT, "the model server timed out")
    if "protocol" in type(exc).__name__.lower() or isinstance(exc, OSError):
        return LLMError(UPSTREAM_ERROR, "lost the connection to the model server")
    return LLMError(UPSTREAM_ERROR, f"{type(exc).__name__}: {exc}"[:300])


_provider = OpenAIProvider()


@hookimpl
def lydian_plugin_settings() -> type[msgspec.Struct]:
    return OpenAISettings


@hookimpl
def lydian_llm_providers() -> list[OpenAIProvider]:
    return [_provider]


@hookimpl
async def lydian_shutdown(hub: HubAPI) -> None:
    await _provider.close(hub)
