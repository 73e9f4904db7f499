"""The documents library as an attachment handler: PDF, Office files, CSV, HTML and text
become markdown (for agents and "copy text") with a one-line summary for the room.

Enable it in a room with ``/plugins enable documents``; from then on every PDF, DOCX, XLSX,
PPTX, CSV, HTML, text or markdown file a message carries there is extracted in a child
process (see ``docs/multimodal.md`` for the limits), and cut into chunks with citations
(``data["chunks"]``) that agents choose from. ``/extract``, ``/ocr`` and ``/summarize``
act on the room's attachments (``commands.py``). An encrypted PDF fails with "password
required"; its uploader (or an admin) then gives it with ``/password ATTACHMENT_ID PASSWORD``
or ``POST /api/rooms/{room}/attachments/{id}/password``, which runs this handler again with
``info.password`` for that job only.
"""

from __future__ import annotations

from typing import Any

from hub.sdk import (
    AttachmentHandler,
    AttachmentInfo,
    CommandSpec,
    HandlerError,
    HandlerResult,
    hookimpl,
)

from . import (
    CSV,
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    PPTX,
    TEXT,
    XLSX,
    Document,
    DocumentError,
    EncryptedDocument,
    Limits,
    WrongPassword,
    chunk,
    extract,
)
from .commands import COMMANDS

NAME = "documents"
TIMEOUT = 120.0
MEMORY_MB = 2048
MAX_BYTES = 50 * 1024 * 1024
MEDIA_TYPES = (PDF, DOCX, XLSX, PPTX, CSV, HTML, MARKDOWN, TEXT)
LABELS = {PDF: "PDF", DOCX: "DOCX", XLSX: "XLSX", PPTX: "PPTX", CSV: "CSV", HTML: "HTML"}
CHUNK_TOKENS = 400
"""Tokens (estimated) per chunk stored for agents: a few chunks fit any prompt budget."""
CHUNK_OVERLAP = 40
MAX_CHUNKS = 2000
"""Chunks stored at most (about 800k tokens of text); the rest is left out with a warning."""


def run(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """Extract one file (in the pipeline's child process); typed errors become clear ones."""
    limits = Limits(max_bytes=MAX_BYTES, max_seconds=TIMEOUT - 10)
    try:
        document = extract(
            data, info.media_type, info.filename, limits=limits, password=info.password
        )
    except WrongPassword as exc:
        raise HandlerError(
            f"wrong password: {exc.message}; the uploader may try again with "
            f"/password {info.id} PASSWORD"
        ) from None
    except EncryptedDocument as exc:
        raise HandlerError(
            f"password required: {exc.message}; the uploader gives it with "
            f"/password {info.id} PASSWORD"
        ) from None
    except DocumentError as exc:
        raise HandlerError(exc.message) from None
    fields = details(document)
    warnings = list(document.warnings)
    chunks = chunks_for(document, info)
    if len(chunks) > MAX_CHUNKS:
        warnings.append(f"only the first {MAX_CHUNKS} of {len(chunks)} chunks are kept")
        chunks = chunks[:MAX_CHUNKS]
    fields["chunks"] = chunks
    return HandlerResult(
        summary=summary(document), markdown=document.markdown, data=fields, warnings=warnings
    )


def chunks_for(document: Document, info: AttachmentInfo) -> list[dict[str, Any]]:
    """The document cut for agents (``data["chunks"]``), computed here in the child process
    so that agents only select: text, citation ("report.pdf, p. 12"), page(s), section."""
    return [
        {
            "text": c.text,
            "citation": c.citation,
            "filename": c.filename,
            "kind": c.kind,
            "tokens": c.tokens,
            "page": c.page,
            "page_end": c.page_end,
            "section": c.section,
        }
        for c in chunk(
            document,
            max_tokens=CHUNK_TOKENS,
            overlap_tokens=CHUNK_OVERLAP,
            attachment_id=info.id,
            filename=info.filename,
        )
    ]


def summary(document: Document) -> str:
    """One line for the room: kind, size, tables, outline, words."""
    parts = [LABELS.get(document.media_type, "text")]
    if document.pages:
        n = len(document.pages)
        parts.append(f"{n} page{'s' * (n != 1)}")
    if document.tables:
        n = len(document.tables)
        parts.append(f"{n} table{'s' * (n != 1)}")
    if document.outline:
        parts.append(f"outline of {len(document.outline)}")
    if scanned := document.needs_ocr:
        parts.append(f"{len(scanned)} scanned page(s) without text")
    words = len(document.markdown.split())
    parts.append(f"{words:,} words")
    return ", ".join(parts)


def details(document: Document) -> dict[str, Any]:
    """The structured part of the result: outline, tables' shapes, pages, metadata."""
    return {
        "media_type": document.media_type,
        "pages": len(document.pages),
        "outline": [{"title": o.title, "level": o.level, "page": o.page} for o in document.outline],
        "tables": [
            {
                "page": t.page,
                "section": t.section,
                "rows": t.total_rows or len(t.rows),
                "cols": t.total_cols or max((len(r) for r in t.rows), default=0),
                "truncated": t.truncated,
            }
            for t in document.tables
        ],
        "needs_ocr": document.needs_ocr,
        "images": len(document.images) + document.images_skipped,
        "metadata": dict(document.metadata),
    }


@hookimpl
def lydian_attachment_handlers() -> list[AttachmentHandler]:
    return [
        AttachmentHandler(
            name=NAME,
            media_types=MEDIA_TYPES,
            run=run,
            timeout=TIMEOUT,
            memory_mb=MEMORY_MB,
            max_bytes=MAX_BYTES,
            description="PDF, DOCX, XLSX, PPTX, CSV, HTML, text and markdown to markdown",
        )
    ]


@hookimpl
def lydian_commands() -> list[CommandSpec]:
    """``/extract``, ``/ocr``, ``/summarize`` (see ``commands.py``)."""
    return list(COMMANDS)
