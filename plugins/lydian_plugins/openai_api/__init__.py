"""Built-in ``openai_api`` plugin: the hub's agents behind an OpenAI-compatible API.

``GET /v1/models`` lists the agents; ``POST /v1/chat/completions`` runs one (``model`` is
the agent's name), streamed as OpenAI's SSE chunks ending with ``data: [DONE]`` or as one
JSON answer. Any OpenAI client works: ``OpenAI(base_url="http://hub/v1", api_key=TOKEN)``
with a hub token as the key. Nothing here is cached (``Cache-Control: no-store``); a
client that disconnects closes the upstream request.

Image content parts (``images.py``) are passed on when the agent's model takes images
(``vision_models`` of the provider), else read offline (OCR, face count) and given to the
model as text; the response says which (``Lydian-Images`` header, ``lydian_images`` field,
and a one-line note opening an offline answer). A part the hub cannot use is a 400.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import ClientException, HTTPException
from litestar.params import JSONBody
from litestar.response import Stream

from hub.sdk import (
    IMAGE_TOKENS,
    INT64_MAX,
    NO_STORE,
    Agent,
    ChatTurn,
    HubAPI,
    LLMError,
    ModelRefused,
    RouteHandler,
    StreamMetrics,
    estimate_tokens,
    hookimpl,
    hub_of,
    openai_error,
    retry_header,
    role_of,
)

from .images import (
    OFFLINE_NOTE,
    PLUGIN,
    BadImagePart,
    CheckedImage,
    ContentPart,
    ImageURLPart,
    OfflineReading,
    OpenAIAPISettings,
    TextPart,
    VisionUnavailable,
    as_part,
    check_image,
    check_request_totals,
    describe,
    read_offline,
    report,
)


class InMessage(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatRequest(msgspec.Struct):
    """The body of ``POST /v1/chat/completions`` (the subset of OpenAI's the hub reads;
    other fields are ignored). Declared on the route, so ``/schema`` documents it."""

    model: str
    messages: list[InMessage]
    stream: bool = False
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)] | None = None
    temperature: float | None = None
    stream_options: StreamOptions | None = None


_encode = msgspec.json.encode


def _text(content: str | list[ContentPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.text for p in content if isinstance(p, TextPart))


def _images(
    messages: list[InMessage], settings: OpenAIAPISettings
) -> list[tuple[int, CheckedImage]]:
    """Every image part, checked, with the index of its message (:class:`BadImagePart`)."""
    found: list[tuple[int, CheckedImage]] = []
    for m, message in enumerate(messages):
        if message.content is None or isinstance(message.content, str):
            continue
        for p, part in enumerate(message.content):
            if not isinstance(part, ImageURLPart):
                continue
            where = f"messages[{m}].content[{p}]"
            if message.role != "user":
                raise BadImagePart(f"{where}: only user messages may carry images")
            found.append((m, check_image(part, where, settings)))
    check_request_totals([image for _, image in found], settings)
    return found


_offline_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="v1-images")
"""Offline readings run two at once, off the event loop (Tesseract runs as a child process
held to one thread, OpenCV releases the GIL)."""


async def _read_all(
    images: list[tuple[int, CheckedImage]], settings: OpenAIAPISettings
) -> list[tuple[int, OfflineReading]]:
    async def one(index: int, image: CheckedImage) -> OfflineReading:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_offline_pool, read_offline, image, index, settings)

    readings = await asyncio.gather(*(one(i + 1, image) for i, (_, image) in enumerate(images)))
    return [(m, reading) for (m, _), reading in zip(images, readings, strict=True)]


def _model(agent: Agent) -> dict[str, Any]:
    return {"id": agent.name, "object": "model", "created": 0, "owned_by": "lydian"}


@get("/v1/models", tags=["openai"])
async def list_models(request: Request[Any, Any, Any]) -> Response[Any]:
    """The hub's agents, as OpenAI models."""
    agents = hub_of(request).list_agents()
    data = [_model(a) for _, a in sorted(agents.items())]
    return Response({"object": "list", "data": data}, headers=NO_STORE)


def _client_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A body that does not match :class:`ChatRequest` (or is not JSON) gets OpenAI's error
    shape; other client errors keep theirs."""
    if exc.status_code == 400:
        extra = getattr(exc, "extra", None)
        detail = f"{exc.detail}: {extra}" if extra else exc.detail
        return openai_error(400, f"invalid request: {detail}", "invalid_request_error")
    body = {"status_code": exc.status_code, "detail": exc.detail}
    return Response(body, status_code=exc.status_code, headers=exc.headers)


@post(
    "/v1/chat/completions",
    tags=["openai"],
    status_code=200,
    exception_handlers={ClientException: _client_error},
)
async def chat_completions(
    request: Request[Any, Any, Any], data: JSONBody[ChatRequest]
) -> Response[Any]:
    """Run an agent on a conversation (``model`` = agent name), streamed or not."""
    hub = hub_of(request)
    body = data
    agent = hub.agent(body.model)
    if agent is None:
        known = ", ".join(sorted(hub.list_agents())) or "none"
        return openai_error(
            404,
            f"no model {body.model!r}; models: {known}",
            "invalid_request_error",
            "model_not_found",
        )
    turns = [ChatTurn(role=m.role, content=_text(m.content)) for m in body.messages]
    if not any(t.role == "user" for t in turns):
        return openai_error(400, "messages need at least one user message", "invalid_request_error")
    settings: OpenAIAPISettings = hub.plugin_settings(PLUGIN) or OpenAIAPISettings()
    try:
        images = _images(body.messages, settings)
    except BadImagePart as bad:
        return openai_error(400, bad.message, "invalid_request_error", bad.code)
    role = role_of(request.user)
    try:  # the caller's model use: guests only where the hub allows them;
        # checked before any image is read offline, which costs CPU
        await hub.check_model(role, request.user.id)
    except ModelRefused as refused:
        if refused.retry_after is None:
            return openai_error(403, refused.detail, "permission_error", refused.code)
        wait = {"Retry-After": retry_header(refused.retry_after)}
        return openai_error(429, refused.detail, "rate_limit_error", "rate_limit_exceeded", wait)
    readings: list[OfflineReading] = []
    image_mode: str | None = None
    if images and hub.accepts_images(agent):  # a vision model: the parts go on as they are
        image_mode = "vision_model"
        for m, image in images:
            turns[m].images.append(as_part(image))
    elif images:  # none: read offline, never dropped
        image_mode = "offline"
        remote = next((image for _, image in images if not image.data), None)
        if remote is not None:
            return openai_error(
                400,
                f"{remote.where}: a remote image URL needs a vision model, and model "
                f"{agent.name!r} has none; the hub never fetches URLs: send the image inline "
                "as a data: URL",
                "invalid_request_error",
                "remote_image_refused",
            )
        try:
            read = await _read_all(images, settings)
        except BadImagePart as bad:
            return openai_error(400, bad.message, "invalid_request_error", bad.code)
        except VisionUnavailable as exc:
            return openai_error(
                501,
                f"model {agent.name!r} has no vision model and this hub cannot read images "
                f"offline: {exc}",
                "server_error",
                "images_unavailable",
            )
        for m, reading in read:
            turns[m].content = "\n\n".join(filter(None, [turns[m].content, describe(reading)]))
            readings.append(reading)
    pieces = hub.complete(
        agent,
        turns,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
    )
    run = _Run(hub, agent, pieces)
    prompt = sum(estimate_tokens(t.content) + IMAGE_TOKENS * len(t.images) for t in turns)
    run.charge_to = (role, request.user.id, prompt)
    run.include_usage = bool(body.stream_options and body.stream_options.include_usage)
    headers = dict(NO_STORE)
    if image_mode is not None:
        run.images = report(readings, len(images))
        headers[IMAGES_HEADER] = f"{image_mode}; count={len(images)}"
        if readings and settings.offline_note:
            run.note = OFFLINE_NOTE
    if body.stream:
        return Stream(run.sse(), media_type="text/event-stream", headers=headers)
    try:
        text = "".join([piece async for piece in run.pieces()])
    except LLMError as exc:
        return openai_error(502, exc.detail, "upstream_error", exc.code)
    return Response(run.completion(run.note + text), headers=headers)


IMAGES_HEADER = "Lydian-Images"
"""How the request's images were used: ``vision_model`` or ``offline``, and their count."""


class _Run:
    """One completion: OpenAI-shaped output and the same metrics as room streams."""

    def __init__(self, hub: HubAPI, agent: Agent, pieces: AsyncIterator[str]) -> None:
        self.hub = hub
        self.agent = agent
        self.source = pieces
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.tokens = 0
        self.error: str | None = None
        self.include_usage = False
        self.charge_to: tuple[str, str, int] | None = None  # role, user, prompt tokens
        self.images: dict[str, Any] | None = None  # the ``lydian_images`` field
        self.note = ""  # opens the answer (offline image readings)

    async def pieces(self) -> AsyncIterator[str]:
        start = time.monotonic()
        first: float | None = None
        finished = False
        try:
            async for piece in self.source:
                if first is None:
                    first = time.monotonic()
                self.tokens += 1
                yield piece
            finished = True
        except LLMError as exc:
            self.error = exc.code
            raise
        finally:
            if self.charge_to is not None:
                role, user, prompt = self.charge_to
                await self.hub.charge_model_tokens(role, user, prompt + self.tokens)
            end = time.monotonic()
            rate = None
            if first is not None and self.tokens > 1 and end > first:
                rate = round((self.tokens - 1) / (end - first), 1)
            self.hub.record_stream(
                StreamMetrics(
                    stream_id=self.id,
                    room="/v1",
                    agent=self.agent.user.id,
                    started_at=time.time() - (end - start),
                    duration_ms=round((end - start) * 1000, 2),
                    tokens=self.tokens,
                    deltas=self.tokens,
                    cancelled=not finished and self.error is None,
                    ttft_ms=round((first - start) * 1000, 2) if first is not None else None,
                    tokens_per_s=rate,
                    error=self.error,
                )
            )

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, extra: dict[str, Any] | None = None
    ) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.agent.name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **(extra or {}),
        }
        return b"data: " + _encode(chunk) + b"\n\n"

    async def sse(self) -> AsyncIterator[bytes]:
        extra = {"lydian_images": self.images} if self.images is not None else {}
        yield self._chunk({"role": "assistant", "content": self.note}, extra=extra)
        try:
            async for piece in self.pieces():
                yield self._chunk({"content": piece})
        except LLMError as exc:
            error = {"error": {"message": exc.detail, "type": "upstream_error", "code": exc.code}}
            yield b"data: " + _encode(error) + b"\n\n"
            return
        yield self._chunk({}, "stop")
        if self.include_usage:  # OpenAI's stream_options: a last chunk with no choices
            usage = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.agent.name,
                "choices": [],
                "usage": self.usage(),
            }
            yield b"data: " + _encode(usage) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def usage(self) -> dict[str, int]:
        """Completion tokens as counted in pieces; prompt tokens are not counted here."""
        return {"prompt_tokens": 0, "completion_tokens": self.tokens, "total_tokens": self.tokens}

    def completion(self, text: str) -> dict[str, Any]:
        extra = {"lydian_images": self.images} if self.images is not None else {}
        return {
            **extra,
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.agent.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage(),
        }


@hookimpl
def lydian_plugin_settings() -> type[msgspec.Struct]:
    return OpenAIAPISettings


@hookimpl
def lydian_routes() -> list[RouteHandler]:
    return [list_models, chat_completions]
