"""``/extract``, ``/ocr`` and ``/summarize``: an attachment's extracted text, its OCR text,
and a summary by the room's agent, for an attachment id or the room's last attachment.

An attachment is looked up among the room's recent messages (``SCAN`` of them), so a
command only reaches files shared in its room. Results are the stored ones (the
``documents`` handler's, the vision plugin's ``ocr``); nothing is extracted here.
"""

from __future__ import annotations

from typing import Any

from hub.sdk import (
    Agent,
    Arg,
    Attachment,
    AttachmentResult,
    ChatTurn,
    CommandContext,
    CommandError,
    CommandSpec,
    HubAPI,
    UsageError,
    role_of,
)

HANDLER = "documents"
OCR_HANDLER = "ocr"
SCAN = 500
"""Recent messages of the room searched for the attachment."""
SHOW_CHARS = 3000
"""Characters of text a command shows; longer text is cut, with a note saying so."""
SUMMARY_TOKENS = 3000
"""Tokens of the document given to the agent to summarise (spread over the document)."""

SUMMARY_INSTRUCTION = (
    "Excerpts of {name} follow, in order, each headed by its source in square brackets"
    "{partial}. Summarise the document for the room: its purpose and main points, briefly. "
    'Cite sources in parentheses exactly as given, e.g. "({example})".'
)


async def find_attachment(hub: HubAPI, room: str, wanted: str | None) -> Attachment:
    """The attachment ``wanted`` (an id) of a recent message of ``room``, or the last one."""
    history = await hub.history(room, limit=SCAN)
    for message in reversed(history):
        for attachment in reversed(message.attachments):
            if wanted is None or attachment.id == wanted:
                return attachment
    if wanted is None:
        raise CommandError(f"no attachment in the last {SCAN} messages of this room")
    raise CommandError(f"no attachment {wanted!r} in the last {SCAN} messages of this room")


async def result_of(hub: HubAPI, attachment: Attachment, handler: str) -> AttachmentResult | None:
    try:
        results = await hub.attachment_results(attachment.id)
    except LookupError:
        raise CommandError(f"{attachment.name}: the file is no longer stored") from None
    return next((r for r in results if r.handler == handler), None)


def _failed(attachment: Attachment, result: AttachmentResult) -> CommandError:
    return CommandError(f"{attachment.name}: {result.handler} failed: {result.error}")


def shown(text: str, attachment: Attachment, what: str, room: str) -> str:
    """``text`` cut to ``SHOW_CHARS`` with a note saying how much was left out and where the
    rest is."""
    text = text.strip()
    if len(text) <= SHOW_CHARS:
        return text
    cut = text[:SHOW_CHARS].rsplit(" ", 1)[0]
    return (
        f"{cut}\n\n… ({what} truncated: {len(cut):,} of {len(text):,} characters shown; the "
        f"whole text: GET /api/rooms/{room}/attachments/{attachment.id}/results)"
    )


async def _done_result(
    ctx: CommandContext, args: dict[str, Any], handler: str, missing: str
) -> tuple[Attachment, AttachmentResult]:
    """The attachment named (or the room's last) and its finished ``handler`` result; a clear
    error (``{name}: `` + ``missing``) when there is none, the failure when it failed."""
    hub = ctx.hub
    assert hub is not None
    attachment = await find_attachment(hub, ctx.room, args.get("attachment"))
    result = await result_of(hub, attachment, handler)
    if result is None:
        raise CommandError(f"{attachment.name}: {missing}")
    if result.status != "done":
        raise _failed(attachment, result)
    return attachment, result


async def extract_command(ctx: CommandContext, args: dict[str, Any]) -> str:
    attachment, result = await _done_result(
        ctx,
        args,
        HANDLER,
        "not extracted (is the documents plugin enabled here? /plugins enable documents, "
        "then POST .../process to extract existing files)",
    )
    text = shown(result.markdown, attachment, "text", ctx.room)
    return f"{attachment.name} ({result.summary}):\n\n{text or '(no text)'}"


async def ocr_command(ctx: CommandContext, args: dict[str, Any]) -> str:
    attachment, result = await _done_result(
        ctx,
        args,
        OCR_HANDLER,
        "no OCR result: enable the vision plugin (/plugins enable vision), then have the file "
        "processed again",
    )
    text = shown(result.markdown, attachment, "OCR text", ctx.room)
    return f"{attachment.name}, OCR:\n\n{text or '(no text found)'}"


def spread(chunks: list[dict[str, Any]], budget: int) -> tuple[list[dict[str, Any]], bool]:
    """Chunks within ``budget`` tokens spread evenly over the document, in order; whether
    some were left out."""
    total = sum(int(c.get("tokens") or 0) for c in chunks)
    if total <= budget:
        return chunks, False
    step = total / budget
    chosen: list[dict[str, Any]] = []
    used = 0
    next_at = 0.0
    position = 0
    for c in chunks:
        cost = int(c.get("tokens") or 0)
        if position >= next_at and used + cost <= budget:
            chosen.append(c)
            used += cost
            next_at = position + cost * step
        position += cost
    return chosen, True


def pick_agent(hub: HubAPI, room: str, wanted: str | None) -> Agent:
    agents = {a.name: a for a in hub.enabled_agents(room)}
    if wanted:
        if wanted not in agents:
            known = ", ".join(sorted(agents)) or "none"
            raise UsageError(f"no agent {wanted!r} is enabled here (enabled: {known})")
        return agents[wanted]
    if not agents:
        raise CommandError("no agent is enabled in this room: /plugins enable assistant")
    return agents.get("assistant") or agents[sorted(agents)[0]]


async def summarize_command(ctx: CommandContext, args: dict[str, Any]) -> str:
    hub = ctx.hub
    assert hub is not None
    attachment = await find_attachment(hub, ctx.room, args.get("attachment"))
    agent = pick_agent(hub, ctx.room, args.get("agent"))
    result = await result_of(hub, attachment, HANDLER)
    if result is None:
        raise CommandError(f"{attachment.name}: not extracted (/plugins enable documents)")
    if result.status != "done":
        raise _failed(attachment, result)
    chunks = [c for c in result.data.get("chunks", []) if isinstance(c, dict)]
    if not chunks:
        raise CommandError(f"{attachment.name}: no text to summarise")
    chosen, partial = spread(chunks, SUMMARY_TOKENS)
    if result.attachment_id != attachment.id:  # the same bytes uploaded earlier, as another name
        chosen = [_renamed(c, attachment.name) for c in chosen]
    header = SUMMARY_INSTRUCTION.format(
        name=attachment.name,
        partial=" (a selection: the document is longer)" if partial else "",
        example=chosen[0].get("citation", attachment.name),
    )
    body = "\n\n".join(f"[{c.get('citation', attachment.name)}]\n{c.get('text')}" for c in chosen)
    await hub.check_model(role_of(ctx.identity), ctx.user.id)
    await hub.answer(
        agent,
        ctx.room,
        f"{ctx.user.name} asks: summarise {attachment.name}.",
        requested_by=ctx.user.id,
        limited=False,
        context=[ChatTurn(role="system", content=f"{header}\n\n{body}")],
    )
    return f"{agent.user.name} is summarising {attachment.name}…"


def _renamed(c: dict[str, Any], name: str) -> dict[str, Any]:
    citation, original = c.get("citation"), c.get("filename")
    if isinstance(citation, str) and isinstance(original, str) and citation.startswith(original):
        return {**c, "citation": name + citation[len(original) :]}
    return c


ATTACHMENT = Arg("attachment", required=False, help="an attachment id (default: the last one)")

COMMANDS = [
    CommandSpec(
        name="extract",
        help="show the text extracted from an attachment (default: the room's last one)",
        handler=extract_command,
        args=[ATTACHMENT],
    ),
    CommandSpec(
        name="ocr",
        help="show the OCR text of an image or scanned attachment (the vision plugin's)",
        handler=ocr_command,
        args=[ATTACHMENT],
    ),
    CommandSpec(
        name="summarize",
        help="have the room's agent summarise an attachment; the summary streams in",
        handler=summarize_command,
        args=[ATTACHMENT, Arg("agent", required=False, help="an agent enabled here")],
    ),
]
