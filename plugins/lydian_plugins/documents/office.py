"""DOCX (python-docx), XLSX (openpyxl, read-only) and PPTX (python-pptx) to markdown.

``check_zip`` has already refused zip bombs when these run.
"""

from __future__ import annotations

import io
import re
from typing import Any

from .markdown import Builder, cell_text, summary_caption
from .model import Document, Image, LimitExceeded, Limits, Page
from .sniff import DOCX, PPTX, XLSX

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp")


class _Images:
    """Collects embedded images up to the limits, counting the rest."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.images: list[Image] = []
        self.skipped = 0
        self._seen: set[int] = set()

    def add(self, blob: bytes, media_type: str, name: str, page: int | None = None) -> None:
        key = hash(blob)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.images) >= self.limits.max_images or len(blob) > self.limits.max_image_bytes:
            self.skipped += 1
            return
        self.images.append(Image(data=blob, media_type=media_type, name=name, page=page))


# --- DOCX ---------------------------------------------------------------------------------


def extract_docx(data: bytes, filename: str, limits: Limits) -> Document:
    """Body paragraphs and tables in order: heading styles, list styles/numbering, images."""
    import docx
    from docx.table import Table as DocxTable
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    b = Builder()
    for el in document.element.body.iterchildren():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "p":
            _docx_paragraph(b, Paragraph(el, document))
        elif tag == "tbl":
            table = DocxTable(el, document)
            rows = [[cell_text(c.text) for c in row.cells] for row in table.rows]
            b.table(rows)
    images = _Images(limits)
    for rel in document.part.rels.values():
        if "image" in rel.reltype and not rel.is_external:
            part = rel.target_part
            if part.content_type in _IMAGE_TYPES:
                images.add(part.blob, part.content_type, part.partname.rsplit("/", 1)[-1])
    props = document.core_properties
    meta = {k: str(v) for k, v in (("title", props.title), ("author", props.author)) if v}
    return Document(
        media_type=DOCX,
        filename=filename,
        markdown=b.markdown(),
        blocks=b.blocks,
        tables=b.tables,
        images=images.images,
        images_skipped=images.skipped,
        metadata=meta,
    )


def _docx_paragraph(b: Builder, p: Any) -> None:
    text = p.text.strip()
    if not text:
        return
    style = (p.style.name if p.style is not None else "") or ""
    heading = _HEADING_STYLE.match(style)
    if heading:
        b.heading(text, int(heading.group(1)))
        return
    if style.lower() == "title":
        b.heading(text, 1)
        return
    num_pr = p._p.pPr.numPr if p._p.pPr is not None else None
    if style.lower().startswith("list") or num_pr is not None:
        level = 0
        if num_pr is not None and num_pr.ilvl is not None:
            level = int(num_pr.ilvl.val)
        else:
            digits = re.search(r"(\d)$", style)
            level = int(digits.group(1)) - 1 if digits else 0
        marker = "1. " if "number" in style.lower() else "- "
        b.add("list", "  " * max(level, 0) + marker + text)
        return
    b.add("paragraph", text)


# --- XLSX ---------------------------------------------------------------------------------


def extract_xlsx(data: bytes, filename: str, limits: Limits) -> Document:
    """Each sheet a table (cached values of formulas); a large one summarised from its first
    ``limits.sheet_rows`` rows and its stored dimension."""
    import openpyxl  # type: ignore[import-untyped]

    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    b = Builder()
    cells = 0
    try:
        for ws in wb.worksheets:
            b.section_override = None
            b.heading(f"Sheet: {ws.title}", 2)
            b.section_override = ws.title
            shown: list[list[str]] = []
            n_rows = 0
            n_cols = 0
            # a large sheet with a declared dimension is summarised from its first rows only;
            # without one, every row is read (and counted against max_cells)
            declared_rows, declared_cols = _declared(ws)
            stop = limits.sheet_rows if declared_rows > limits.sheet_rows else None
            for row in ws.iter_rows(values_only=True, max_row=stop):
                n_rows += 1
                cells += len(row)
                if cells > limits.max_cells:
                    raise LimitExceeded(
                        "max_cells",
                        f"the workbook has more than {limits.max_cells:,} cells "
                        f"(sheet {ws.title!r}, row {n_rows:,})",
                    )
                if len(shown) < limits.sheet_rows:
                    shown.append([cell_text(v) for v in row])
                if any(v is not None for v in row):
                    n_cols = max(n_cols, _last_filled(row))
            if stop is not None:
                n_rows, n_cols = declared_rows, max(n_cols, declared_cols)
            n_rows = _last_row(shown, n_rows)
            if not shown or n_rows == 0:
                b.add("paragraph", "*(empty sheet)*")
                continue
            rows = [r[:n_cols] for r in shown]
            b.table(
                rows,
                total_rows=n_rows,
                total_cols=n_cols,
                caption=summary_caption(f"Sheet {ws.title}", n_rows, n_cols, len(rows)),
            )
    finally:
        wb.close()
    b.section_override = None
    return Document(
        media_type=XLSX,
        filename=filename,
        markdown=b.markdown(),
        blocks=b.blocks,
        tables=b.tables,
        metadata={"sheets": str(len(wb.sheetnames)), "cells_read": str(cells)},
    )


def _declared(ws: Any) -> tuple[int, int]:
    """Rows and columns from the sheet's stored dimension (0, 0 when it has none)."""
    try:
        return int(ws.max_row or 0), int(ws.max_column or 0)
    except (TypeError, ValueError):
        return 0, 0


def _last_filled(row: tuple[Any, ...]) -> int:
    for i in range(len(row), 0, -1):
        if row[i - 1] is not None and row[i - 1] != "":
            return i
    return 0


def _last_row(shown: list[list[str]], n_rows: int) -> int:
    """Row count without trailing empty rows (only the shown rows can be trimmed exactly)."""
    if n_rows > len(shown):
        return n_rows
    while shown and not any(shown[-1]):
        shown.pop()
    return len(shown)


# --- PPTX ---------------------------------------------------------------------------------


def extract_pptx(data: bytes, filename: str, limits: Limits) -> Document:
    """One page per slide: title as heading, body as bullets, tables, pictures, notes."""
    import pptx

    prs = pptx.Presentation(io.BytesIO(data))
    slides = list(prs.slides)
    if len(slides) > limits.max_pages:
        raise LimitExceeded(
            "max_pages", f"the presentation has {len(slides):,} slides (limit {limits.max_pages:,})"
        )
    b = Builder()
    images = _Images(limits)
    pages: list[Page] = []
    for n, slide in enumerate(slides, start=1):
        first = len(b.blocks)
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None else ""
        b.heading(f"Slide {n}: {title}" if title else f"Slide {n}", 2, page=n)
        n_tables = len(b.tables)
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            _pptx_shape(b, shape, n, images, depth=0)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            text = notes.text.strip() if notes is not None else ""
            if text:
                b.add("notes", "> **Notes:** " + text.replace("\n", "\n> "), n)
        pages.append(
            Page(
                number=n,
                markdown="\n\n".join(x.markdown for x in b.blocks[first:]) + "\n",
                tables=len(b.tables) - n_tables,
            )
        )
    return Document(
        media_type=PPTX,
        filename=filename,
        markdown=b.markdown(),
        blocks=b.blocks,
        pages=pages,
        tables=b.tables,
        images=images.images,
        images_skipped=images.skipped,
        metadata={"slides": str(len(slides))},
    )


def _pptx_shape(b: Builder, shape: Any, page: int, images: _Images, depth: int) -> None:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    if depth > 8:
        return
    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        for child in shape.shapes:
            _pptx_shape(b, child, page, images, depth + 1)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = [[cell_text(c.text) for c in row.cells] for row in shape.table.rows]
        b.table(rows, page)
        return
    if shape.shape_type == MSO_SHAPE_TYPE.PICTURE:
        image = shape.image
        images.add(image.blob, image.content_type, f"slide{page}-{image.filename}", page)
        return
    if not getattr(shape, "has_text_frame", False) or not shape.has_text_frame:
        return
    is_body = shape.is_placeholder
    for para in shape.text_frame.paragraphs:
        text = "".join(run.text for run in para.runs).strip() or para.text.strip()
        if not text:
            continue
        if is_body or para.level > 0:
            b.add("list", "  " * para.level + "- " + text, page)
        else:
            b.add("paragraph", text, page)
