"""The documents plugin's types: limits, the extracted document, chunks, and typed errors.

Everything here is a msgspec Struct or a picklable exception, so results and errors cross a
process-pool boundary unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec

MiB = 1024 * 1024


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on what one extraction may read; exceeding one raises ``LimitExceeded``.

    Wall-clock time is the caller's to enforce: run ``extract`` in a subprocess (a process
    pool) and kill it at its timeout, since a C parser stuck on one page cannot be
    interrupted from Python. ``max_seconds`` is only a cooperative check between pages.
    """

    max_bytes: int = 50 * MiB  # size of the uploaded file
    max_pages: int = 2_000  # PDF pages, PPTX slides
    max_objects: int = 500_000  # PDF objects (cross-reference entries)
    max_cells: int = 2_000_000  # spreadsheet/CSV cells read in total
    sheet_rows: int = 200  # rows of a sheet or CSV shown before it is summarised
    max_zip_entries: int = 10_000
    max_unzipped_bytes: int = 500 * MiB  # sum of declared uncompressed sizes
    max_zip_ratio: float = 200.0  # per entry, for entries above 1 MiB uncompressed
    max_images: int = 50  # embedded images returned (the rest are counted, not kept)
    max_image_bytes: int = 10 * MiB  # per image
    max_image_pixels: int = 50_000_000  # per image, checked before decoding
    max_stream_bytes: int = 100 * MiB  # a PDF content stream inflated (images excepted)
    max_seconds: float | None = None  # cooperative check between pages, see above


BlockKind = Literal["heading", "paragraph", "list", "table", "code", "notes"]


class Block(msgspec.Struct, frozen=True, kw_only=True):
    """One structural unit in reading order; the document's markdown is their join."""

    kind: BlockKind
    markdown: str
    page: int | None = None  # 1-based page or slide number, None where a format has none
    section: str | None = None  # heading trail, e.g. "Results > Costs", or a sheet name
    level: int = 0  # heading level (1-6) for headings


class Table(msgspec.Struct, frozen=True, kw_only=True):
    """A table as rows of cell strings; ``rows`` holds at most ``Limits.sheet_rows`` rows."""

    rows: list[list[str]]
    markdown: str
    page: int | None = None
    section: str | None = None
    total_rows: int = 0  # rows in the source (may exceed len(rows) when summarised)
    total_cols: int = 0
    truncated: bool = False


class OutlineItem(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    level: int  # 1 for top-level bookmarks
    page: int | None = None


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """An embedded image, raw bytes as stored in the file (JPEG passes through unchanged)."""

    data: bytes
    media_type: str
    name: str
    page: int | None = None
    width: int | None = None
    height: int | None = None


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """A page (PDF) or slide (PPTX); ``needs_ocr`` marks a page without a text layer."""

    number: int
    markdown: str
    needs_ocr: bool = False
    tables: int = 0
    images: int = 0


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """What ``extract`` returns.

    ``markdown`` is the whole document; for a PDF each page starts with ``<!-- page N -->``.
    ``blocks`` are the same content in reading order with page and section, for ``chunk``.
    """

    media_type: str  # sniffed from the content, not taken from the name
    filename: str
    markdown: str
    blocks: list[Block]
    pages: list[Page] = []
    tables: list[Table] = []
    outline: list[OutlineItem] = []
    images: list[Image] = []
    images_skipped: int = 0  # beyond max_images, too large, or undecodable
    metadata: dict[str, str] = {}
    warnings: list[str] = []

    @property
    def needs_ocr(self) -> list[int]:
        """Numbers of the pages that have no text layer."""
        return [p.number for p in self.pages if p.needs_ocr]


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of a document for an AI prompt, with what a citation needs."""

    text: str
    index: int
    attachment_id: str
    filename: str
    kind: Literal["text", "table"]
    tokens: int  # estimate from the counter given to ``chunk``
    page: int | None = None
    page_end: int | None = None
    section: str | None = None
    # "report.pdf, p. 12", "report.pdf, pp. 3-4", "deck.pptx, slide 2", "data.xlsx, sheet Log"
    citation: str


def short(exc: BaseException, limit: int = 300) -> str:
    """An exception's text, cut to ``limit`` characters (hostile files make long ones)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class DocumentError(Exception):
    """Base of the typed extraction errors; ``code`` is stable, the message is for people."""

    code = "document_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.message,))


class BadDocument(DocumentError):
    """Corrupt, truncated, or unsupported content."""

    code = "bad_document"


class EncryptedDocument(DocumentError):
    """The document needs a password (none was given)."""

    code = "encrypted"


class WrongPassword(EncryptedDocument):
    """A password was given and does not open the document."""

    code = "wrong_password"


class LimitExceeded(DocumentError):
    """A bound in ``Limits`` was hit; ``limit`` names the field."""

    code = "limit_exceeded"

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # type: ignore[override]
        return (type(self), (self.limit, self.message))
