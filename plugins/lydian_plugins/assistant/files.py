"""Files in the prompt: the chunks the ``documents`` handler (and the speech plugin's
``transcript`` handler, for voice messages) stored for the attachments a question is about,
chosen by lexical relevance (BM25) within a token budget, with their citations, so that the
answer can cite "report.pdf, p. 12" (or "note.ogg, 0:00-1:00").

Which attachments: those of the message asked, of the message it replies to, then those of
the room's recent messages (newest first), up to ``max_files``. Only results that exist are
used: the assistant waits for the jobs on the asked message's own files first (``file_wait``,
through ``hub.wait_attachment_results``); a file still being extracted after that is named in
the prompt (:func:`pending_turn`) instead. The chunks come from the handler's
``data["chunks"]`` (``text``, ``citation``, ``tokens``, ``page``...): nothing is computed
here but the choice. An image is one excerpt made of what the vision handlers stored for
it: the ``describe`` handler's description and objects, and the ``ocr`` handler's text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hub.sdk import Attachment, ChatMessage, ChatTurn, HubAPI, estimate_tokens

HANDLERS = ("documents", "transcript")
"""The attachment handlers whose ``data["chunks"]`` are read: extracted documents, and the
speech plugin's voice-message transcripts (cited by file name and time)."""
DESCRIBE, OCR = "describe", "ocr"
"""The vision handlers whose results make an image's excerpt."""
MAX_IMAGE_TEXT = 4000
"""Characters of an image's OCR text put in its excerpt at most."""

INSTRUCTION = (
    "Excerpts of files shared in this room follow, each headed by its source in square "
    "brackets. When your answer uses one, cite its source in parentheses exactly as given, "
    'e.g. "(report.pdf, p. 12)". If the excerpts do not hold the answer, say so.'
)

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    "a an and are as at be by do does for from has have how i in is it its of on or that the "
    "this to was what when where which who why will with you your me my we our "
    "about tell say says said please can could would should file document pdf page".split()
)
K1, B = 1.5, 0.75


def terms(text: str) -> list[str]:
    """Lower-case words of ``text``, without stop words and one-letter words."""
    return [w for w in (m.group().lower() for m in _WORD.finditer(text)) if len(w) > 1]


def rank(question: str, texts: Sequence[str]) -> list[float]:
    """BM25 score of each text for ``question`` (0 when they share no word)."""
    query = {t for t in terms(question) if t not in _STOP}
    docs = [Counter(terms(t)) for t in texts]
    if not query or not docs:
        return [0.0] * len(texts)
    n = len(docs)
    avg = sum(sum(d.values()) for d in docs) / n or 1.0
    df = {q: sum(1 for d in docs if q in d) for q in query}
    scores = []
    for d in docs:
        length = sum(d.values())
        score = 0.0
        for q in query:
            tf = d.get(q, 0)
            if tf:
                idf = math.log(1 + (n - df[q] + 0.5) / (df[q] + 0.5))
                score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avg))
        scores.append(score)
    return scores


def select(
    question: str, chunks: Sequence[dict[str, Any]], budget: int, *, fallback: bool
) -> list[dict[str, Any]]:
    """The most relevant chunks within ``budget`` tokens, in document order. With no word
    in common (``summarise this``) and ``fallback``, the document's first chunks."""
    scores = rank(question, [str(c.get("text", "")) for c in chunks])
    order = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: -scores[i])
    if not order and fallback:
        order = list(range(len(chunks)))
    chosen: list[int] = []
    used = 0
    for i in order:
        cost = _tokens(chunks[i])
        if used + cost > budget:
            continue
        chosen.append(i)
        used += cost
    return [chunks[i] for i in sorted(chosen)]


PENDING = (
    "Still being processed, so not readable yet: {names}. The asker has been told so; do "
    "not guess what {pronoun} contain{s}."
)


def pending_turn(names: Sequence[str]) -> ChatTurn:
    """A ``system`` turn naming the files whose extraction had not ended in time."""
    one = len(names) == 1
    return ChatTurn(
        role="system",
        content=PENDING.format(
            names=", ".join(names), pronoun="it" if one else "they", s="s" if one else ""
        ),
    )


def excerpts_turn(chosen: Sequence[dict[str, Any]]) -> ChatTurn:
    """One ``system`` turn: the citing instruction, then each excerpt under its source."""
    parts = [INSTRUCTION]
    for c in chosen:
        parts.append(f"[{c.get('citation', '?')}]\n{c.get('text', '')}")
    return ChatTurn(role="system", content="\n\n".join(parts))


def image_chunk(name: str, results: Sequence[Any]) -> dict[str, Any] | None:
    """One excerpt for an image: its description and objects (``describe``, when a model
    made one) and the text read in it (``ocr``); None when neither says anything."""
    seen: list[str] = []
    read: list[str] = []
    for result in results:
        if result.status != "done":
            continue
        if result.handler == DESCRIBE and result.data.get("available") is not False:
            description = str(result.data.get("description") or "").strip()
            objects = [o for o in result.data.get("objects") or [] if isinstance(o, str)]
            if description:
                seen.append(f"Image description: {description}")
            if objects:
                seen.append("Objects seen: " + ", ".join(objects))
        elif result.handler == OCR and result.markdown.strip():
            text = result.markdown.strip()[:MAX_IMAGE_TEXT]
            read.append(f"Text read in the image (OCR): {text}")
    if not seen and not read:
        return None
    text = "\n".join(seen + read)
    citation = f"{name}, image"
    return {
        "text": text,
        "citation": citation,
        "filename": name,
        "kind": "image",
        "tokens": estimate_tokens(text) + estimate_tokens(citation),
    }


def _tokens(c: dict[str, Any]) -> int:
    tokens = c.get("tokens")
    return tokens if isinstance(tokens, int) else estimate_tokens(str(c.get("text", "")))


async def attachments_for(
    hub: HubAPI, message: ChatMessage, *, scan: int, max_files: int
) -> list[tuple[Attachment, bool]]:
    """The attachments a question is about: ``(attachment, direct)``, direct for the
    message's own and the replied-to message's, then the room's last ``scan`` messages'."""
    history = await hub.history(message.room, before=message.offset, limit=scan) if scan else []
    found: list[tuple[Attachment, bool]] = [(a, True) for a in message.attachments]
    if message.reply_to:
        for m in history:
            if m.id == message.reply_to:
                found.extend((a, True) for a in m.attachments)
    for m in reversed(history):
        found.extend((a, False) for a in m.attachments)
    seen: set[str] = set()
    unique = []
    for a, direct in found:
        if a.id not in seen:
            seen.add(a.id)
            unique.append((a, direct))
    return unique[:max_files]


async def document_context(
    hub: HubAPI, message: ChatMessage, question: str, *, budget: int, scan: int, max_files: int
) -> list[ChatTurn]:
    """The ``system`` turn of excerpts for ``question`` asked in ``message`` (none if no
    attachment has chunks, or none is relevant)."""
    if budget <= 0:
        return []
    chunks: list[dict[str, Any]] = []
    direct_chunks: list[dict[str, Any]] = []
    for attachment, direct in await attachments_for(hub, message, scan=scan, max_files=max_files):
        try:
            results = await hub.attachment_results(attachment.id)
        except LookupError:  # the upload is gone (retention)
            continue
        image = image_chunk(attachment.name, results)
        if image is not None:
            chunks.append(image)
            if direct:
                direct_chunks.append(image)
        for result in results:
            if result.handler not in HANDLERS or result.status != "done":
                continue
            found = [c for c in result.data.get("chunks", []) if isinstance(c, dict)]
            # the same bytes under another name: cite the name this room knows
            name = result.attachment_id != attachment.id and attachment.name
            for c in found:
                citation, original = c.get("citation"), c.get("filename")
                if name and isinstance(citation, str) and isinstance(original, str):
                    if citation.startswith(original):
                        c = {**c, "citation": name + citation[len(original) :], "filename": name}
                chunks.append(c)
                if direct:
                    direct_chunks.append(c)
    if not chunks:
        return []
    chosen = select(question, chunks, budget, fallback=False)
    if not chosen and direct_chunks:  # "summarise this": the file asked about, from its start
        chosen = select(question, direct_chunks, budget, fallback=True)
    return [excerpts_turn(chosen)] if chosen else []
