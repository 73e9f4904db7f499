"""Built-in ``assistant`` agent: answers in rooms where it is enabled, streaming.

Enable it per room (``/plugins enable assistant``). It answers messages that mention it
(``@assistant …``) and the ``/ask QUESTION`` command; ``trigger`` chooses which
(``mention``, ``command`` or ``both``). The prompt is the system prompt, excerpts of the
files the question is about (the ``documents`` handler's chunks, most relevant first within
``document_tokens``, with an instruction to cite them: see ``files.py``), the room's recent
history, newest first within ``context_tokens`` (estimated), then the question. A question
posted with its files waits (at most ``file_wait`` seconds) for their handlers' jobs, so that
the excerpts are there; past it, the answer comes without them and the room is told the file
is still being processed. Every setting except the provider's secrets may be overridden per
room (``[plugins.assistant.rooms.ROOM]``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

import msgspec

from hub.sdk import (
    Agent,
    Arg,
    ChatMessage,
    ChatTurn,
    CommandContext,
    CommandSpec,
    HubAPI,
    ModelRefused,
    PerRoom,
    UsageError,
    hookimpl,
    role_of,
)

from .files import document_context, pending_turn

NAME = "assistant"


class AssistantSettings(msgspec.Struct):
    trigger: Annotated[Literal["mention", "command", "both"], PerRoom] = "both"
    mention: Annotated[str, msgspec.Meta(min_length=2), PerRoom] = "@assistant"
    provider: Annotated[str, PerRoom] = ""
    """An LLM provider's name (``openai``, ``offline``); empty: the hub's default."""
    model: Annotated[str, PerRoom] = ""
    system_prompt: Annotated[str, PerRoom] = (
        "You are Lydian's assistant, taking part in a team chat room. Answer briefly."
    )
    context_tokens: Annotated[int, msgspec.Meta(ge=100, le=200_000), PerRoom] = 2000
    history_messages: Annotated[int, msgspec.Meta(ge=0, le=500), PerRoom] = 30
    document_tokens: Annotated[int, msgspec.Meta(ge=0, le=100_000), PerRoom] = 1500
    """Tokens of file excerpts a prompt may carry (0: files are not used)."""
    document_messages: Annotated[int, msgspec.Meta(ge=0, le=500), PerRoom] = 50
    """How many recent messages are searched for attachments besides the one asked about."""
    document_files: Annotated[int, msgspec.Meta(ge=1, le=50), PerRoom] = 5
    file_wait: Annotated[float, msgspec.Meta(ge=0, le=600), PerRoom] = 60.0
    """Seconds a question posted with files waits for their extraction (0: not at all)."""


AGENT = Agent(
    name=NAME,
    display_name="Assistant",
    description="Answers questions in the room, with the room's recent history as context.",
)


def _settings(hub: HubAPI, room: str) -> AssistantSettings:
    return hub.plugin_settings(NAME, room) or AssistantSettings()


def _agent(settings: AssistantSettings) -> Agent:
    return msgspec.structs.replace(
        AGENT,
        system_prompt=settings.system_prompt,
        context_tokens=settings.context_tokens,
        history_messages=settings.history_messages,
        provider=settings.provider or None,
        model=settings.model or None,
    )


async def _files(
    hub: HubAPI, settings: AssistantSettings, message: ChatMessage, question: str
) -> list[ChatTurn]:
    return await document_context(
        hub,
        message,
        question,
        budget=min(settings.document_tokens, settings.context_tokens // 2),
        scan=settings.document_messages,
        max_files=settings.document_files,
    )


def addressed(text: str, mention: str) -> str | None:
    """The question if ``text`` mentions the assistant (mention removed), else None."""
    pattern = re.compile(rf"(?<![\w@]){re.escape(mention)}(?!\w)", re.IGNORECASE)
    if not pattern.search(text):
        return None
    question = pattern.sub("", text).strip(" ,:;")
    return question or "Hello!"


@hookimpl
async def lydian_message(message: ChatMessage, hub: HubAPI) -> None:
    if message.kind != "user" or message.meta.get("ask"):
        return
    settings = _settings(hub, message.room)
    if settings.trigger == "command":
        return
    question = addressed(message.text, settings.mention)
    if question is None:
        return
    if settings.file_wait > 0 and settings.document_tokens > 0 and _uploads(message):
        # its files' jobs started with it: wait for them, longer than a hook may take
        hub.spawn(_respond(hub, settings, message, question), name=f"assistant:{message.id}")
        return
    await _respond(hub, settings, message, question, wait=False)


def _uploads(message: ChatMessage) -> list[str]:
    """The message's own hub uploads (not platform links such as ``slack:F123``)."""
    return [a.id for a in message.attachments if ":" not in a.id]


async def files_pending(hub: HubAPI, message: ChatMessage, timeout: float) -> list[str]:
    """Wait (at most ``timeout`` s in all) for the handlers' jobs on the message's own
    uploads; the names of the files still being processed then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    late = []
    for attachment in message.attachments:
        if ":" in attachment.id:
            continue
        try:
            await hub.wait_attachment_results(attachment.id, max(0.0, deadline - loop.time()))
        except TimeoutError:
            late.append(attachment.name)
        except LookupError:  # gone (retention): nothing to wait for
            continue
    return late


async def _respond(
    hub: HubAPI,
    settings: AssistantSettings,
    message: ChatMessage,
    question: str,
    *,
    wait: bool = True,
) -> None:
    late = await files_pending(hub, message, settings.file_wait) if wait else []
    context = await _files(hub, settings, message, question)
    if late:
        it, is_ = ("it", "is") if len(late) == 1 else ("them", "are")
        await hub.post_message(
            message.room,
            AGENT.user,
            f"{', '.join(late)} {is_} still being processed: this answer does not use {it} "
            f"yet. Ask again once the room shows {it} done.",
            kind="system",
            reply_to=message.id,
            meta={"files_pending": late, "to": message.user.id},
        )
        context = [*context, pending_turn(late)]
    try:
        await hub.answer(
            _agent(settings),
            message.room,
            question,
            reply_to=message,
            requested_by=message.user.id,
            context=context,
        )
    except ModelRefused as refused:  # over the asker's model use, or a guest: say so
        meta: dict[str, Any] = {"refused": refused.code, "to": message.user.id}
        if refused.retry_after is not None:
            meta["retry_after"] = refused.retry_after
        await hub.post_message(
            message.room,
            AGENT.user,
            f"{message.user.name}: {refused.detail}",
            kind="system",
            reply_to=message.id,
            meta=meta,
        )


async def ask(ctx: CommandContext, args: dict[str, Any]) -> str | None:
    hub = ctx.hub
    assert hub is not None
    settings = _settings(hub, ctx.room)
    if settings.trigger == "mention":
        raise UsageError(f"here the assistant answers mentions: {settings.mention} QUESTION")
    question: str = args["question"]
    if len(question) > hub.settings.max_text_chars:
        raise UsageError(f"a question is at most {hub.settings.max_text_chars} characters")
    # checked before the question is posted: a refusal (error frame) leaves nothing behind
    await hub.check_model(role_of(ctx.identity), ctx.user.id)
    message, _ = await hub.post_message(ctx.room, ctx.user, question, meta={"ask": NAME})
    await hub.answer(
        _agent(settings),
        ctx.room,
        question,
        reply_to=message,
        requested_by=ctx.user.id,
        limited=False,
        context=await _files(hub, settings, message, question),
    )
    return None


@hookimpl
def lydian_plugin_settings() -> type[msgspec.Struct]:
    return AssistantSettings


@hookimpl
def lydian_agents() -> list[Agent]:
    return [AGENT]


@hookimpl
def lydian_commands() -> list[CommandSpec]:
    return [
        CommandSpec(
            name="ask",
            help="ask the assistant; the answer streams into the room",
            handler=ask,
            args=[Arg("question", greedy=True, help="your question")],
        )
    ]
