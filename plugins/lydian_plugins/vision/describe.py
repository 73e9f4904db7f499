"""Image description and objects through an OpenAI-compatible vision model (the ``describe``
handler), or a plain "unavailable" when the hub has none.

Unlike the other vision handlers this one does no pixel work: it sends the image, as an
image content part (:class:`hub.sdk.ImagePart`), to a **vision-capable agent** through the
hub (``hub.complete``) and waits for the answer, so it runs in the hub process as an
``async`` handler (``AttachmentHandler(run_async=...)``), not in a child process.

Which agent: the room's ``describe_agent`` setting (an agent's name) if set, else the first
agent enabled in the room whose model takes images (``hub.accepts_images``: for the
``openai`` provider, a model listed in ``vision_models``). With none, the job ends ``done``
with the summary ``image description unavailable: no vision model is configured``,
``data["available"] = False`` and nothing in ``markdown`` (never taken for a description),
and no model request; such a result is not reused for the same bytes later
(``HandlerResult.reusable=False``), so configuring a model takes effect on the next upload.

The model is asked for JSON (``{"description": ..., "objects": [...]}``) and its answer is
read leniently (:func:`parse_answer`): code fences and text around the object are ignored;
an answer that is not that JSON is kept whole as the description, with no objects and a
warning. The tokens (prompt, image, answer; estimated) are charged to the upload's owner,
whose model limits are checked first, like any other model use on the hub.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

from hub.sdk import (
    IMAGE_TOKENS,
    Agent,
    AttachmentInfo,
    ChatTurn,
    HandlerError,
    HandlerResult,
    HubAPI,
    ImagePart,
    LLMError,
    ModelRefused,
    estimate_tokens,
)

log = logging.getLogger(__name__)

NAME = "describe"
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""What OpenAI-compatible vision models take (BMP and TIFF are not sent)."""
MAX_BYTES = 20 * 1024 * 1024
"""OpenAI's limit for one image; larger files fail at once."""
TIMEOUT = 120.0
"""The whole job; the provider's own ``timeout`` (between two chunks) usually fires first."""
MAX_TOKENS = 500
MAX_DESCRIPTION = 4000
MAX_OBJECTS = 50
MAX_OBJECT_CHARS = 100
UNAVAILABLE = "image description unavailable: no vision model is configured"

SYSTEM = (
    "You describe images for the people of a chat room and for assistants that cannot see "
    "them. Answer with one JSON object and nothing else."
)
PROMPT = (
    'Describe this image. Answer with JSON only, exactly in this shape: {"description": '
    '"one to three sentences saying what the image shows", "objects": ["each distinct '
    'object or kind of thing visible, a short noun phrase", "..."]}. Do not identify people.'
)


def choose_agent(hub: HubAPI, room: str, name: str) -> tuple[Agent | None, str]:
    """The agent to ask, or ``None`` and the plain reason there is none."""
    if name:
        agent = hub.agent(name)
        if agent is None:
            return None, f"{UNAVAILABLE} (describe_agent {name!r} is not an agent of this hub)"
        if not hub.accepts_images(agent):
            return None, f"{UNAVAILABLE} for agent {name!r} (describe_agent)"
        return agent, ""
    for agent in hub.enabled_agents(room):
        if hub.accepts_images(agent):
            return agent, ""
    if any(hub.accepts_images(a) for a in hub.list_agents().values()):
        return None, f"{UNAVAILABLE} for the agents enabled in this room"
    return None, UNAVAILABLE


def unavailable(reason: str, code: str) -> HandlerResult:
    """The plain "no description" result: stored and shown, never reused for the bytes."""
    return HandlerResult(summary=reason, data={"available": False, "reason": code}, reusable=False)


_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def parse_answer(text: str) -> tuple[str, list[str], list[str]]:
    """``(description, objects, warnings)`` from the model's answer, whatever it looks
    like: the JSON asked for (in a code fence or with words around it), or else the whole
    text as the description with no objects and a warning."""
    answer = text.strip()
    fenced = _FENCE.match(answer)
    body = fenced.group(1).strip() if fenced else answer
    found: Any = None
    start, end = body.find("{"), body.rfind("}")
    if start != -1 and end > start:
        try:
            found = json.loads(body[start : end + 1])
        except ValueError:
            found = None
    if not isinstance(found, dict):
        return (
            answer[:MAX_DESCRIPTION],
            [],
            [
                "the vision model did not answer with the JSON asked for: its text is kept "
                "as the description, without objects"
            ],
        )
    warnings: list[str] = []
    description = found.get("description")
    if not isinstance(description, str) or not description.strip():
        description = ""
        warnings.append("the vision model's JSON has no description")
    raw = found.get("objects", [])
    if not isinstance(raw, list):
        warnings.append("the vision model's objects are not a list: left out")
        raw = []
    objects: list[str] = []
    for item in raw:
        if isinstance(item, dict):  # {"name": "cat", ...} or {"label": "cat"}
            item = item.get("name") or item.get("label") or item.get("object")
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            name = " ".join(str(item).split())[:MAX_OBJECT_CHARS]
            if name and name.lower() not in (o.lower() for o in objects):
                objects.append(name)
    if len(objects) > MAX_OBJECTS:
        warnings.append(f"{len(objects)} objects named: the first {MAX_OBJECTS} are kept")
        objects = objects[:MAX_OBJECTS]
    return description.strip()[:MAX_DESCRIPTION], objects, warnings


def summary_of(description: str, objects: list[str]) -> str:
    """One line for the room: the description's start, then the objects."""
    line = " ".join(description.split())
    if len(line) > 160:
        line = line[:159].rstrip() + "…"
    if objects:
        shown = ", ".join(objects[:8]) + (", …" if len(objects) > 8 else "")
        line = f"{line} (objects: {shown})" if line else f"objects: {shown}"
    return line or "no description"


def markdown_of(description: str, objects: list[str]) -> str:
    """What agents and "copy text" get."""
    parts = [description] if description else []
    if objects:
        parts.append("Objects: " + ", ".join(objects))
    return "\n\n".join(parts)


async def describe_image(
    data: bytes, info: AttachmentInfo, hub: HubAPI, agent_name: str = ""
) -> HandlerResult:
    """Ask the room's vision-capable agent about the image (the module docstring)."""
    agent, reason = choose_agent(hub, info.room, agent_name)
    if agent is None:
        return unavailable(reason, "no_vision_model")
    payer = info.uploaded_by
    role = hub.model_role(payer) if payer else ""
    if payer:
        try:
            await hub.check_model(role, payer)
        except ModelRefused as refused:
            return unavailable(
                f"image description unavailable: the uploader's model use is refused "
                f"({refused.detail})",
                refused.code,
            )
    url = f"data:{info.media_type};base64,{base64.b64encode(data).decode()}"
    turns = [
        ChatTurn(role="system", content=SYSTEM),
        ChatTurn(
            role="user", content=PROMPT, images=[ImagePart(url=url, media_type=info.media_type)]
        ),
    ]
    pieces: list[str] = []
    stream = hub.complete(agent, turns, max_tokens=MAX_TOKENS, temperature=0.0)
    try:
        async for piece in stream:
            pieces.append(piece)
    except LLMError as exc:
        failed = f"the vision model (agent {agent.name!r}) failed: {exc.detail}"
        raise HandlerError(failed) from None
    finally:
        close: Any = getattr(stream, "aclose", None)
        if close is not None:
            await close()
        if payer:  # what was used, answered or not
            tokens = estimate_tokens(SYSTEM + PROMPT) + IMAGE_TOKENS + len(pieces)
            try:
                await hub.charge_model_tokens(role, payer, tokens)
            except Exception:
                log.exception("counting %d model tokens of %s failed", tokens, payer)
    answer = "".join(pieces)
    if not answer.strip():
        raise HandlerError(f"the vision model (agent {agent.name!r}) gave an empty answer")
    description, objects, warnings = parse_answer(answer)
    return HandlerResult(
        summary=summary_of(description, objects),
        markdown=markdown_of(description, objects),
        data={
            "available": True,
            "description": description,
            "objects": objects,
            "agent": agent.name,
            "model": agent.model or "",
        },
        warnings=warnings,
    )
