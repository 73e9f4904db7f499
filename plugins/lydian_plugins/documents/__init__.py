"""Documents: PDF, DOCX, XLSX, PPTX, CSV, HTML, text and markdown to structured markdown,
and chunking of the result for AI prompts (issue 15).

This package is the self-contained heart of the documents handler: pure functions of bytes
with no hub imports, picklable inputs, results (msgspec Structs) and errors, so they run in
a process pool. It is **not registered as a plugin yet** (no entry point): the lead wires it
as an attachment handler once the attachment pipeline (process pool, jobs, storage by
content hash, events) exists.

- ``extract(data, media_type, filename, *, limits, password=None) -> Document``: the type is
  sniffed from the content (the name and declared type only choose between text formats).
  Errors are typed: ``EncryptedDocument`` (a password is needed), ``WrongPassword``,
  ``BadDocument`` (corrupt, truncated or unsupported) and ``LimitExceeded`` (pages, size,
  cells, zip-bomb ratio, object count...). Office archives are checked for zip bombs
  before any parser opens them.
- ``chunk(document, *, max_tokens, overlap_tokens, attachment_id, filename) -> list[Chunk]``.

Time is the caller's to bound: run ``extract`` in a subprocess (the pipeline's process pool)
with a timeout and kill it when the timeout passes; C parsers (pdfium, lxml) cannot be
interrupted from inside. ``Limits.max_seconds`` adds a cooperative check between PDF pages.
Needs the ``documents`` extra: ``pip install 'lydian-hub[documents]'``.
"""

from __future__ import annotations

from .chunking import chunk, estimate_tokens
from .model import (
    BadDocument,
    Block,
    Chunk,
    Document,
    DocumentError,
    EncryptedDocument,
    Image,
    LimitExceeded,
    Limits,
    OutlineItem,
    Page,
    Table,
    WrongPassword,
    short,
)
from .sniff import CSV, DOCX, HTML, MARKDOWN, PDF, PPTX, TEXT, XLSX, check_zip, sniff

__all__ = [
    "CSV",
    "DOCX",
    "HTML",
    "MARKDOWN",
    "PDF",
    "PPTX",
    "TEXT",
    "XLSX",
    "BadDocument",
    "Block",
    "Chunk",
    "Document",
    "DocumentError",
    "EncryptedDocument",
    "Image",
    "LimitExceeded",
    "Limits",
    "OutlineItem",
    "Page",
    "Table",
    "WrongPassword",
    "chunk",
    "estimate_tokens",
    "extract",
    "sniff",
]


def extract(
    data: bytes,
    media_type: str,
    filename: str,
    *,
    limits: Limits,
    password: str | None = None,
) -> Document:
    """Extracts ``data`` into a ``Document``; raises a ``DocumentError`` subclass on bad input.

    ``password`` opens an encrypted PDF; it is used for this call only and never kept.
    """
    if len(data) > limits.max_bytes:
        raise LimitExceeded(
            "max_bytes", f"the file has {len(data):,} bytes (limit {limits.max_bytes:,})"
        )
    kind = sniff(data, media_type, filename)
    try:
        document = _dispatch(kind, data, filename, limits, password)
    except DocumentError:
        raise
    except RecursionError:
        raise BadDocument(f"corrupt {_label(kind)}: its structure nests without end") from None
    except MemoryError:
        raise LimitExceeded(
            "memory", f"the {_label(kind)} needs more memory than allowed"
        ) from None
    except Exception as exc:  # parsers raise many types (KeyError, lxml, zlib...) on bad files
        raise BadDocument(
            f"corrupt or unreadable {_label(kind)}: {type(exc).__name__}: {short(exc)}"
        ) from None
    declared = media_type.split(";", 1)[0].strip().lower()
    if (
        declared
        and declared not in (kind, "application/octet-stream")
        and not (declared.startswith("text/") and kind.startswith("text/"))
    ):
        document.warnings.append(f"declared as {declared}, but the content is {_label(kind)}")
    return document


def _dispatch(
    kind: str, data: bytes, filename: str, limits: Limits, password: str | None
) -> Document:
    if kind == PDF:
        from .pdf import extract_pdf

        return extract_pdf(data, filename, limits, password)
    if kind in (DOCX, XLSX, PPTX):
        check_zip(data, limits)
        from . import office

        reader = {DOCX: office.extract_docx, XLSX: office.extract_xlsx, PPTX: office.extract_pptx}
        return reader[kind](data, filename, limits)
    from . import text

    if kind == CSV:
        return text.extract_csv(data, filename, limits)
    if kind == HTML:
        return text.extract_html(data, filename)
    return text.extract_text(data, filename, kind)


def _label(kind: str) -> str:
    return {PDF: "PDF", DOCX: "DOCX", XLSX: "XLSX", PPTX: "PPTX", CSV: "CSV", HTML: "HTML"}.get(
        kind, "text"
    )
