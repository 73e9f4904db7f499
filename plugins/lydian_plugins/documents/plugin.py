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
Scanned pages (no text layer) are rendered and read by OCR with the vision library when it
is installed. Images embedded in PDF, DOCX and PPTX files are returned as ``embedded``
derived files (:func:`embedded_files`, within :data:`EMBEDDED_MAX_FILES`,
:data:`EMBEDDED_MAX_BYTES` each, :data:`EMBEDDED_MAX_TOTAL` together and
:data:`EMBEDDED_MAX_PIXELS`): the hub keeps them and runs the room's image handlers on them
(OCR, faces, moderation when the vision plugin is enabled there).
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import msgspec

from hub.sdk import (
    AttachmentHandler,
    AttachmentInfo,
    CommandSpec,
    DerivedFile,
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
    Block,
    Document,
    DocumentError,
    EncryptedDocument,
    Image,
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
OCR_MAX_PAGES = 20
OCR_DPI = 300
OCR_MAX_SIDE = 4_000  # pixels: a page larger than A3 is rendered below OCR_DPI
NO_TEXT = "*(no text layer: OCR needed)*\n"
MEDIA_TYPES = (PDF, DOCX, XLSX, PPTX, CSV, HTML, MARKDOWN, TEXT)
LABELS = {PDF: "PDF", DOCX: "DOCX", XLSX: "XLSX", PPTX: "PPTX", CSV: "CSV", HTML: "HTML"}
CHUNK_TOKENS = 400
"""Tokens (estimated) per chunk stored for agents: a few chunks fit any prompt budget."""
CHUNK_OVERLAP = 40
MAX_CHUNKS = 2000
"""Chunks stored at most (about 800k tokens of text); the rest is left out with a warning."""
EMBEDDED_MAX_FILES = 20
"""Embedded images returned per document (each gets the room's image handlers' jobs)."""
EMBEDDED_MAX_BYTES = 5 * 1024 * 1024
EMBEDDED_MAX_TOTAL = 40 * 1024 * 1024
EMBEDDED_MAX_PIXELS = 25_000_000
EMBEDDED_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""The image formats the hub keeps as uploads (what its upload sniffing recognises)."""


def run(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """Extract one file (in the pipeline's child process); typed errors become clear ones."""
    started = time.monotonic()
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
    markdown, read, warnings = document.markdown, {}, list(document.warnings)
    if document.media_type == PDF and document.needs_ocr:
        markdown, read, more = ocr_scanned(data, document, deadline=started + TIMEOUT - 15)
        warnings.extend(more)
    fields = details(document)
    fields["ocr_pages"] = sorted(read)
    chunks = chunks_for(with_ocr_blocks(document, read), info, ocr_pages=set(read))
    if len(chunks) > MAX_CHUNKS:
        warnings.append(f"only the first {MAX_CHUNKS} of {len(chunks)} chunks are kept")
        chunks = chunks[:MAX_CHUNKS]
    fields["chunks"] = chunks
    files, notes = embedded_files(document.images, skip_pages=set(read))
    warnings.extend(notes)
    fields["embedded"] = [
        {"name": f.name, "media_type": f.media_type, "page": f.meta.get("page")} for f in files
    ]
    return HandlerResult(
        summary=summary(document, ocr_pages=len(read), markdown=markdown, images=len(files)),
        markdown=markdown,
        data=fields,
        warnings=warnings,
        files=files,
    )


def embedded_files(
    images: list[Image], *, skip_pages: set[int] | None = None
) -> tuple[list[DerivedFile], list[str]]:
    """The document's embedded images as ``embedded`` derived files, within the limits (the
    rest are named in warnings). Images of pages already read by OCR (whole-page scans) are
    left out: their text is in the markdown, and reading them twice would double the cost."""
    files: list[DerivedFile] = []
    left: dict[str, int] = {}
    total = 0
    for image in images:
        if image.page is not None and image.page in (skip_pages or set()):
            continue
        pixels = _pixels(image)
        why = ""
        if image.media_type not in EMBEDDED_TYPES:
            why = f"in a format not processed ({image.media_type})"
        elif len(files) >= EMBEDDED_MAX_FILES:
            why = f"beyond the first {EMBEDDED_MAX_FILES}"
        elif len(image.data) > EMBEDDED_MAX_BYTES:
            why = f"larger than {EMBEDDED_MAX_BYTES:,} bytes"
        elif total + len(image.data) > EMBEDDED_MAX_TOTAL:
            why = f"beyond {EMBEDDED_MAX_TOTAL:,} bytes of images"
        elif pixels is None or pixels > EMBEDDED_MAX_PIXELS:
            why = f"over {EMBEDDED_MAX_PIXELS:,} pixels or unreadable"
        if why:
            left[why] = left.get(why, 0) + 1
            continue
        total += len(image.data)
        meta: dict[str, Any] = {"page": image.page} if image.page is not None else {}
        files.append(
            DerivedFile(
                name=image.name,
                media_type=image.media_type,
                data=image.data,
                role="embedded",
                meta=meta,
            )
        )
    warnings = [f"{n} embedded image(s) not processed: {why}" for why, n in left.items()]
    return files, warnings


def _pixels(image: Image) -> int | None:
    """Width x height from the file's dictionary, else from the image's header (no decode)."""
    if image.width and image.height:
        return image.width * image.height
    try:
        from PIL import Image as Pillow

        with Pillow.open(io.BytesIO(image.data)) as opened:
            width, height = opened.size
    except Exception:
        return None
    return int(width) * int(height)


def chunks_for(
    document: Document, info: AttachmentInfo, *, ocr_pages: set[int] | frozenset[int] = frozenset()
) -> list[dict[str, Any]]:
    """The document cut for agents (``data["chunks"]``), computed here in the child process
    so that agents only select: text, citation ("report.pdf, p. 12"), page(s), section;
    ``ocr: true`` on the chunks of pages read by OCR (``ocr_pages``)."""
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
            **({"ocr": True} if c.page in ocr_pages else {}),
        }
        for c in chunk(
            document,
            max_tokens=CHUNK_TOKENS,
            overlap_tokens=CHUNK_OVERLAP,
            attachment_id=info.id,
            filename=info.filename,
        )
    ]


def ocr_scanned(
    data: bytes, document: Document, *, deadline: float
) -> tuple[str, dict[int, str], list[str]]:
    """The markdown with the scanned pages' text read by OCR, the text per page read, and
    warnings. Uses the vision library's ``ocr`` (Tesseract, orientation corrected, one
    thread) when it is installed: a library call, not the vision plugin (which need not be
    enabled here); at most :data:`OCR_MAX_PAGES` pages, within the handler's time."""
    try:
        from lydian_plugins.vision import VisionError, ocr
    except ImportError:
        return (
            document.markdown,
            {},
            [
                "scanned pages were not read: OCR needs the vision extra "
                "(pip install 'lydian-hub[vision]') and Tesseract"
            ],
        )
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    markdown, read, warnings = document.markdown, {}, []
    pages = document.needs_ocr
    pdf = pdfium.PdfDocument(data)
    try:
        for number in pages[:OCR_MAX_PAGES]:
            if time.monotonic() > deadline:
                warnings.append(f"OCR stopped at page {number}: out of time")
                break
            page = pdf[number - 1]
            width, height = page.get_size()  # points
            scale = min(OCR_DPI / 72, OCR_MAX_SIDE / max(width, height, 1))
            image = page.render(scale=scale, grayscale=True).to_pil()
            png = io.BytesIO()
            image.save(png, format="PNG", compress_level=1)
            try:
                text = ocr(png.getvalue()).text
            except VisionError as exc:
                warnings.append(f"page {number}: OCR failed: {exc}")
                if exc.code in ("missing_tool", "missing_language"):
                    break
                continue
            read[number] = text
            marker = f"<!-- page {number} -->\n\n"
            shown = f"{text}\n" if text else "*(scanned page: no text found)*\n"
            markdown = markdown.replace(marker + NO_TEXT, marker + shown, 1)
    finally:
        pdf.close()
    if len(pages) > OCR_MAX_PAGES:
        warnings.append(f"only the first {OCR_MAX_PAGES} of {len(pages)} scanned pages were read")
    return markdown, read, warnings


def with_ocr_blocks(document: Document, read: dict[int, str]) -> Document:
    """``document`` with the text OCR read on scanned pages (``read``: page -> text) as
    paragraph blocks of those pages, in page order, so that chunks carry it with its page
    (a scanned page has no block of its own). A paragraph is a run of lines of the OCR
    text; its section is the heading trail in force where the page starts."""
    if not any(text.strip() for text in read.values()):
        return document
    blocks: list[Block] = []
    pending = sorted((n, t) for n, t in read.items() if t.strip())
    section: str | None = None
    for block in document.blocks:
        while pending and block.page is not None and block.page > pending[0][0]:
            blocks.extend(_ocr_paragraphs(*pending.pop(0), section))
        blocks.append(block)
        section = block.section
    for number, text in pending:
        blocks.extend(_ocr_paragraphs(number, text, section))
    return msgspec.structs.replace(document, blocks=blocks)


def _ocr_paragraphs(page: int, text: str, section: str | None) -> list[Block]:
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [
        Block(kind="paragraph", markdown=p, page=page, section=section) for p in paragraphs if p
    ]


def summary(
    document: Document, *, ocr_pages: int = 0, markdown: str | None = None, images: int = 0
) -> str:
    """One line for the room: kind, size, tables, outline, scanned pages, words."""
    parts = [LABELS.get(document.media_type, "text")]
    if document.pages:
        n = len(document.pages)
        parts.append(f"{n} page{'s' * (n != 1)}")
    if document.tables:
        n = len(document.tables)
        parts.append(f"{n} table{'s' * (n != 1)}")
    if document.outline:
        parts.append(f"outline of {len(document.outline)}")
    if ocr_pages:
        parts.append(f"{ocr_pages} scanned page(s) read by OCR")
    if images:
        parts.append(f"{images} image{'s' * (images != 1)}")
    if unread := len(document.needs_ocr) - ocr_pages:
        parts.append(f"{unread} scanned page(s) without text")
    words = len((document.markdown if markdown is None else markdown).split())
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
