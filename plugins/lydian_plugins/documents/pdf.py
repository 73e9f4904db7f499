"""PDF to structured markdown.

Measured choice (see docs/benchmarks.md): pypdfium2 reads every page's text objects with
their font size and position (fast, C); headings come from font sizes relative to the body
size, paragraphs from line spacing, lists from bullet markers. pdfplumber, the only library
that got every table cell right, runs only on pages that draw ruling lines (a table
candidate), and the text inside its tables is replaced by a markdown table. pypdf supplies
the outline, the embedded images, the object count and decryption (AES with
``cryptography``).

Known limits: a table drawn without ruling lines stays text (pdfplumber's "text" strategy
found a "table" on every one of the 53 pages of two prose manuals in /usr/share/doc, so it
is not used); reading order is the content stream's, which is right for most generators
and for columns written one after the other.
"""

from __future__ import annotations

import ctypes
import io
import logging
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .markdown import Builder, cell_text, join_blocks
from .model import (
    BadDocument,
    Document,
    EncryptedDocument,
    Image,
    LimitExceeded,
    Limits,
    OutlineItem,
    Page,
    WrongPassword,
    short,
)
from .sniff import PDF

for _name in ("pypdf", "pdfminer"):
    logging.getLogger(_name).setLevel(logging.ERROR)  # hostile files make them chatty

_BULLET = re.compile(
    r"^\s*([\u2022\u25cf\u25e6\u25aa\u25a0\u2023\u2043\u2013\u2014*\-•·o])\s+(.*)$"
)
_NUMBERED = re.compile(r"^\s*(\d{1,3}|[a-zA-Z])[.)]\s+(.*)$")
_LEADER = re.compile(r"(?:\s*\.){4,}\s*(\S{1,8})$")  # dot leaders and a page label
_MIN_TABLE_SEGMENTS = 6  # path segments on a page before pdfplumber looks for tables


@dataclass
class _Item:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    size: float
    bold: bool
    mono: bool


@dataclass
class _Line:
    items: list[_Item]
    size: float
    bold: bool
    mono: bool
    y: float  # baseline-ish (bottom of the first item)
    top: float
    x0: float

    @property
    def text(self) -> str:
        out = ""
        prev: _Item | None = None
        for it in self.items:
            if prev is not None and out and not out.endswith(" ") and not it.text.startswith(" "):
                if it.x0 - prev.x1 > 0.2 * it.size:
                    out += " "
            out += it.text
            prev = it
        return out.strip()


@dataclass
class _PageScan:
    height: float = 792.0
    lines: list[_Line] = field(default_factory=list)
    images: int = 0
    segments: int = 0
    ruled: tuple[float, float, float, float] | None = None  # bounds of the drawn lines
    tables: list[tuple[float, float, list[list[str]]]] = field(
        default_factory=list
    )  # top, bottom, rows
    has_text: bool = False


def extract_pdf(data: bytes, filename: str, limits: Limits, password: str | None) -> Document:
    """Reads a PDF within ``limits``; see the module docstring for who does what."""
    started = time.monotonic()
    check_streams(data, limits)
    reader = _open_pypdf(data, password, limits)
    pdf = _open_pdfium(data, password)
    try:
        return _extract(data, filename, limits, password, reader, pdf, started)
    finally:
        pdf.close()


_STREAM = re.compile(rb"stream\r?\n")
_DICT_START = re.compile(rb"\d+\s+\d+\s+obj\b")


def check_streams(data: bytes, limits: Limits) -> None:
    """Refuses a Flate bomb: a small stream that inflates past ``limits.max_stream_bytes``.

    pdfium inflates a page's content streams whole when it loads the page (a 500 KB file
    took 1 GB of memory here), so each Flate stream outside images is inflated first in
    bounded steps, its output counted and dropped. Image streams are left alone: nothing
    here decodes an image larger than ``max_image_pixels``. Encrypted streams cannot be
    checked this way; the caller's memory limit on the worker process covers them.
    """
    pos = 0
    while True:
        m = _STREAM.search(data, pos)
        if m is None:
            return
        start = m.end()
        end = data.find(b"endstream", start)
        if end < 0:
            end = len(data)
        pos = end + len(b"endstream")
        head_start = max(0, m.start() - 4096)
        heads = list(_DICT_START.finditer(data, head_start, m.start()))
        head = data[heads[-1].end() if heads else head_start : m.start()]
        if b"/Fl" not in head or re.search(rb"/Subtype\s*/Image", head):
            continue
        inflater = zlib.decompressobj()
        total = 0
        chunk = data[start:end]
        try:
            out = inflater.decompress(chunk, 1 << 20)
            while True:
                total += len(out)
                if total > limits.max_stream_bytes:
                    raise LimitExceeded(
                        "max_stream_bytes",
                        f"a PDF stream of {end - start:,} bytes inflates past "
                        f"{limits.max_stream_bytes:,} bytes (a Flate bomb)",
                    )
                if not inflater.unconsumed_tail:
                    break
                out = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
        except zlib.error:
            continue  # encrypted or damaged: the parsers judge it


def _open_pypdf(data: bytes, password: str | None, limits: Limits) -> Any:
    import pypdf
    from pypdf.errors import FileNotDecryptedError, PdfReadError, WrongPasswordError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            if password is None:
                if reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
                    raise EncryptedDocument("the PDF is encrypted: a password is needed to open it")
            elif reader.decrypt(password) == pypdf.PasswordType.NOT_DECRYPTED:
                raise WrongPassword("the password does not open this PDF")
        objects = max(
            int(reader.trailer.get("/Size", 0) or 0),
            sum(len(v) for v in reader.xref.values()) + len(reader.xref_objStm),
        )
    except (WrongPasswordError, FileNotDecryptedError):
        raise WrongPassword("the password does not open this PDF") from None
    except NotImplementedError as exc:
        raise BadDocument(f"unsupported PDF encryption: {short(exc)}") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise BadDocument(f"corrupt or truncated PDF: {short(exc)}") from None
    except RecursionError:
        raise BadDocument("corrupt PDF: its structure nests without end") from None
    if objects > limits.max_objects:
        raise LimitExceeded(
            "max_objects", f"the PDF has {objects:,} objects (limit {limits.max_objects:,})"
        )
    return reader


def _open_pdfium(data: bytes, password: str | None) -> Any:
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    try:
        return pdfium.PdfDocument(data, password=password or None)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == 4:  # FPDF_ERR_PASSWORD
            if password:
                raise WrongPassword("the password does not open this PDF") from None
            raise EncryptedDocument(
                "the PDF is encrypted: a password is needed to open it"
            ) from None
        raise BadDocument(f"corrupt or truncated PDF: {short(exc)}") from None


def _extract(
    data: bytes,
    filename: str,
    limits: Limits,
    password: str | None,
    reader: Any,
    pdf: Any,
    started: float,
) -> Document:
    n_pages = len(pdf)
    if n_pages > limits.max_pages:
        raise LimitExceeded(
            "max_pages", f"the PDF has {n_pages:,} pages (limit {limits.max_pages:,})"
        )
    if n_pages == 0:
        raise BadDocument("corrupt PDF: it has no readable pages")
    warnings: list[str] = []
    scans: list[_PageScan] = []
    fonts: dict[int, tuple[bool, bool]] = {}  # font handle -> style, for this document only
    failed: list[str] = []
    for i in range(n_pages):
        _check_time(started, limits, i)
        try:
            scans.append(_scan_page(pdf, i, fonts))
        except Exception as exc:  # pdfium reports a broken page as a plain error
            failed.append(f"page {i + 1} cannot be read ({short(exc)})")
            scans.append(_PageScan())
    if len(failed) == n_pages:
        raise BadDocument(f"corrupt PDF: {failed[0]}")
    warnings.extend(failed)
    _drop_running_lines(scans)
    _find_tables(data, password, scans, warnings, started, limits)

    body, headings = _font_levels(scans)
    b = Builder()
    pages: list[Page] = []
    page_md: list[str] = []
    for i, scan in enumerate(scans):
        first = len(b.blocks)
        _page_blocks(b, scan, i + 1, body, headings)
        blocks = b.blocks[first:]
        md = join_blocks(blocks)
        needs_ocr = not scan.has_text and scan.images > 0
        pages.append(
            Page(
                number=i + 1,
                markdown=md,
                needs_ocr=needs_ocr,
                tables=len(scan.tables),
                images=scan.images,
            )
        )
        shown = "*(no text layer: OCR needed)*\n" if needs_ocr and not md else md
        page_md.append(f"<!-- page {i + 1} -->\n\n{shown}")
    images, skipped = _images(reader, scans, limits, warnings)
    return Document(
        media_type=PDF,
        filename=filename,
        markdown="\n".join(page_md),
        blocks=b.blocks,
        pages=pages,
        tables=b.tables,
        outline=_outline(reader, warnings),
        images=images,
        images_skipped=skipped,
        metadata=_metadata(reader, n_pages),
        warnings=warnings,
    )


def _check_time(started: float, limits: Limits, page: int) -> None:
    if limits.max_seconds is not None and time.monotonic() - started > limits.max_seconds:
        raise LimitExceeded(
            "max_seconds", f"extraction ran past {limits.max_seconds:g} s (at page {page + 1})"
        )


_BOLD_NAMES = ("bold", "black", "heavy", "semibold")
_MONO_NAMES = ("mono", "courier", "cmtt", "consol", "code", "fixed", "nimbusmon", "menlo", "monaco")


def _font_style(raw_obj: Any, cache: dict[int, tuple[bool, bool]]) -> tuple[bool, bool]:
    """(bold, monospaced) for a text object's font, cached per font handle."""
    import pypdfium2.raw as c  # type: ignore[import-untyped]

    font = c.FPDFTextObj_GetFont(raw_obj)
    key = ctypes.cast(font, ctypes.c_void_p).value or 0
    cached = cache.get(key)
    if cached is None:
        weight = c.FPDFFont_GetWeight(font)
        n = c.FPDFFont_GetBaseFontName(font, None, 0)
        buf = ctypes.create_string_buffer(max(n, 1))
        c.FPDFFont_GetBaseFontName(font, buf, n)
        name = buf.value.decode("latin-1").lower()
        fixed_pitch = bool(c.FPDFFont_GetFlags(font) & 1)
        cached = (
            weight >= 600 or any(w in name for w in _BOLD_NAMES),
            fixed_pitch or any(w in name for w in _MONO_NAMES),
        )
        cache[key] = cached
    return cached


def _scan_page(pdf: Any, index: int, fonts: dict[int, tuple[bool, bool]]) -> _PageScan:
    import pypdfium2.raw as c  # type: ignore[import-untyped]

    page = pdf[index]
    scan = _PageScan(height=page.get_height())
    textpage = page.get_textpage()
    items: list[_Item] = []
    try:
        for obj in page.get_objects(
            filter=(c.FPDF_PAGEOBJ_TEXT, c.FPDF_PAGEOBJ_PATH, c.FPDF_PAGEOBJ_IMAGE),
            textpage=textpage,
            max_depth=8,
        ):
            if obj.type == c.FPDF_PAGEOBJ_TEXT:
                text = (
                    obj.extract().replace("\r", " ").replace("\n", " ").replace("\x02", "-")
                )  # \x02: pdfium's line-end hyphen
                if not text.strip():
                    continue
                x0, y0, x1, y1 = obj.get_bounds()
                m = obj.get_matrix()
                scale = (m.b * m.b + m.d * m.d) ** 0.5 or 1.0
                size = round(obj.get_font_size() * scale, 1)
                bold, mono = _font_style(obj.raw, fonts)
                items.append(_Item(text, x0, y0, x1, y1, size, bold, mono))
            elif obj.type == c.FPDF_PAGEOBJ_PATH:
                n = c.FPDFPath_CountSegments(obj.raw)
                if n > 0:
                    scan.segments += n
                    scan.ruled = _union(scan.ruled, obj.get_bounds())
            else:
                scan.images += 1
    finally:
        textpage.close()
        page.close()
    scan.has_text = bool(items)
    scan.lines = _lines(items)
    return scan


_PAGE_NUMBER = re.compile(
    r"^[-\u2013(\[]?\s*(page\s*)?(#|[ivxlc]{1,7})(\s*(of|/)\s*#)?\s*[-\u2013)\]]?$", re.I
)


def _drop_running_lines(scans: list[_PageScan]) -> None:
    """Removes running headers and footers: page numbers in the top or bottom 7 % of a page,
    and margin lines that repeat (digits aside) on 3 pages, or on 2 when they carry a number
    at one end (a running header with its page number, alternating between odd and even
    pages)."""

    def margin(scan: _PageScan, line: _Line) -> bool:
        return line.top > scan.height * 0.93 or line.y < scan.height * 0.07

    def key(line: _Line) -> str:
        return re.sub(r"\d+", "#", line.text.strip().lower())

    pages_with: Counter[str] = Counter()
    for scan in scans:
        pages_with.update({key(line) for line in scan.lines if margin(scan, line)})

    def running(line: _Line) -> bool:
        k = key(line)
        if _PAGE_NUMBER.match(k):
            return True
        return pages_with[k] >= (2 if k.startswith("#") or k.endswith("#") else 3)

    for scan in scans:
        kept = [line for line in scan.lines if not (margin(scan, line) and running(line))]
        if len(kept) != len(scan.lines):
            scan.lines = kept
            scan.has_text = bool(kept)


def _union(
    a: tuple[float, float, float, float] | None, b: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    if a is None:
        return b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _only_chars_within(ppage: Any, box: tuple[float, float, float, float]) -> None:
    """Makes pdfplumber skip the characters outside the ruled area of its page.

    Turning every character into a dict is two thirds of pdfplumber's time on a text-heavy
    page, and a table found from ruling lines ("lines" strategy) lies inside those lines, so
    nothing it could find is lost. Relies on ``Page.iter_layout_objects`` (pdfplumber 0.11).
    """
    from pdfminer.layout import LTChar

    x0, y0, x1, y1 = box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2
    original = ppage.iter_layout_objects

    def within(objs: list[Any]) -> Any:
        kept = [
            o
            for o in objs
            if not isinstance(o, LTChar)
            or (x0 <= o.x0 and o.x1 <= x1 and y0 <= o.y0 and o.y1 <= y1)
        ]
        return original(kept)

    ppage.iter_layout_objects = within


def _lines(items: list[_Item]) -> list[_Line]:
    """Groups text objects (in content-stream order) into lines by their vertical position."""
    lines: list[_Line] = []
    for it in items:
        cur = lines[-1] if lines else None
        if (
            cur is not None
            and abs(it.y0 - cur.items[-1].y0) < 0.5 * max(it.size, 1)
            and it.x0 >= cur.items[-1].x1 - 1
        ):
            cur.items.append(it)
            cur.bold = cur.bold and it.bold
            cur.size = max(cur.size, it.size)
            cur.top = max(cur.top, it.y1)
        else:
            lines.append(_Line([it], it.size, it.bold, it.mono, it.y0, it.y1, it.x0))
    for line in lines:  # mostly monospaced characters
        chars = sum(len(it.text.strip()) for it in line.items)
        mono = sum(len(it.text.strip()) for it in line.items if it.mono)
        line.mono = chars > 0 and mono >= 0.8 * chars
    return lines


def _find_tables(
    data: bytes,
    password: str | None,
    scans: list[_PageScan],
    warnings: list[str],
    started: float,
    limits: Limits,
) -> None:
    """pdfplumber on the pages that draw enough lines to hold a table."""
    candidates = [
        i for i, s in enumerate(scans) if s.segments >= _MIN_TABLE_SEGMENTS and s.has_text
    ]
    if not candidates:
        return
    import pdfplumber

    try:
        plumber = pdfplumber.open(io.BytesIO(data), password=password or "")
    except Exception as exc:  # pdfminer raises many types on odd files; keep the text
        warnings.append(f"tables not extracted: {short(exc)}")
        return
    try:
        for i in candidates:
            _check_time(started, limits, i)
            try:
                ppage = plumber.pages[i]
                ruled = scans[i].ruled
                if ruled is not None:
                    _only_chars_within(ppage, ruled)
                top_y = float(ppage.mediabox[3]) if ppage.mediabox else float(ppage.height)
                for table in ppage.find_tables():
                    rows = [[cell_text(c) for c in row] for row in table.extract()]
                    if len(rows) < 2 and all(len(r) < 2 for r in rows):
                        continue  # a box around text, not a table
                    x0, top, x1, bottom = table.bbox
                    scans[i].tables.append((top_y - top, top_y - bottom, rows))
                    _drop_inside(scans[i], x0, top_y - bottom, x1, top_y - top)
            except Exception as exc:
                warnings.append(f"tables on page {i + 1} not extracted: {short(exc)}")
            finally:
                if i < len(plumber.pages):
                    plumber.pages[i].close()
    finally:
        plumber.close()


def _drop_inside(scan: _PageScan, x0: float, y0: float, x1: float, y1: float) -> None:
    """Removes the text that a table now carries from the page's lines."""
    kept: list[_Line] = []
    for line in scan.lines:
        items = [
            it
            for it in line.items
            if not (
                x0 - 1 <= (it.x0 + it.x1) / 2 <= x1 + 1 and y0 - 1 <= (it.y0 + it.y1) / 2 <= y1 + 1
            )
        ]
        if items:
            line.items = items
            kept.append(line)
    scan.lines = kept


def _font_levels(scans: list[_PageScan]) -> tuple[float, dict[float, int]]:
    """The body font size (most characters) and a heading level for each larger size."""
    chars: Counter[float] = Counter()
    for s in scans:
        for line in s.lines:
            for it in line.items:
                chars[it.size] += len(it.text)
    if not chars:
        return 10.0, {}
    body = chars.most_common(1)[0][0]
    bigger = sorted((size for size in chars if size >= body * 1.15), reverse=True)
    return body, {size: min(n + 1, 6) for n, size in enumerate(bigger)}


def _page_blocks(
    b: Builder, scan: _PageScan, page: int, body: float, headings: dict[float, int]
) -> None:
    tables = sorted(scan.tables, key=lambda t: -t[0])
    para: list[str] = []
    item: list[str] | None = None
    item_marker = ""
    item_x = 0.0
    code: list[_Line] = []
    prev: _Line | None = None

    def flush() -> None:
        nonlocal para, item, code
        if para:
            b.add("paragraph", _join(para), page)
            para = []
        if item is not None:
            b.add("list", item_marker + _join(item), page)
            item = None
        if code:
            b.add("code", "```\n" + _code_text(code) + "\n```", page)
            code = []

    deepest = min(len(headings) + 1, 6)
    for line in scan.lines:
        while tables and line.top <= tables[0][0] + 0.5:  # the first line below a table
            flush()
            b.table(tables.pop(0)[2], page)
            prev = None
        text = line.text
        if not text:
            continue
        # code: monospaced lines; a stray short one (an inline quote) only inside a block
        if (
            line.mono
            and (code or len(text) >= 3)
            and not (_BULLET.match(text) or _NUMBERED.match(text))
        ):
            if not code:
                flush()
            code.append(line)
            prev = line
            continue
        if code:
            flush()
        leader = _LEADER.search(text)
        if leader:  # a table-of-contents entry: "2.1 Syntax . . . . . 4"
            flush()
            b.add(
                "list", "- " + text[: leader.start()].rstrip() + " \u2026 " + leader.group(1), page
            )
            prev = line
            continue
        level = headings.get(line.size)
        if level is None and line.bold and abs(line.size - body) < 0.6 and _heading_like(text):
            level = deepest
        if level is not None and len(text) <= 150:
            flush()
            last = b.blocks[-1] if b.blocks else None
            if (
                prev is not None
                and last is not None
                and last.kind == "heading"
                and last.level == level
                and prev.size == line.size
                and prev.y - line.y < 2.0 * line.size
            ):  # a heading wrapped over two lines
                b.blocks.pop()
                b.heading(last.markdown.lstrip("#").strip() + " " + text, level, page)
            else:
                b.heading(text, level, page)
            prev = line
            continue
        bullet = _BULLET.match(text) or _NUMBERED.match(text)
        gap = prev.y - line.y if prev is not None else 0.0
        new_block = (
            prev is None or gap > 1.7 * line.size or gap < -line.size or prev.size != line.size
        )
        if bullet:
            flush()
            numbered = bullet.re is _NUMBERED
            item_marker = "1. " if numbered else "- "
            item = [bullet.group(2)]
            item_x = line.x0
        elif item is not None and not new_block and line.x0 > item_x + 1:
            item.append(text)
        else:
            if new_block or item is not None:
                flush()
            para.append(text)
        prev = line
    flush()
    for t in tables:
        b.table(t[2], page)


def _code_text(lines: list[_Line]) -> str:
    """Monospaced lines with their indentation (from x positions) and blank-line gaps."""
    left = min(line.x0 for line in lines)
    out: list[str] = []
    prev: _Line | None = None
    for line in lines:
        width = max((it.x1 - it.x0) / max(len(it.text), 1) for it in line.items) or line.size * 0.6
        if prev is not None and prev.y - line.y > 2.2 * line.size:
            out.append("")
        out.append(" " * round((line.x0 - left) / width) + line.text)
        prev = line
    return "\n".join(out).replace("```", "`\u200b``")


def _heading_like(text: str) -> bool:
    return len(text) <= 100 and not text.endswith((".", ",", ";", ":")) and not _BULLET.match(text)


def _join(lines: list[str]) -> str:
    out = ""
    for line in lines:
        if not out:
            out = line
        elif out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].islower():
            out = out[:-1] + line  # a word hyphenated at the line end
        else:
            out += " " + line
    return out


def _outline(reader: Any, warnings: list[str]) -> list[OutlineItem]:
    out: list[OutlineItem] = []
    seen: set[int] = set()

    def walk(items: Any, level: int) -> None:
        if level > 16:
            return
        for entry in items:
            if len(out) >= 10_000:
                return
            if isinstance(entry, list):
                walk(entry, level + 1)
                continue
            if id(entry) in seen:
                continue
            seen.add(id(entry))
            try:
                page = reader.get_destination_page_number(entry)
            except Exception:
                page = None
            title = str(getattr(entry, "title", "") or "").strip()
            if title:
                out.append(
                    OutlineItem(
                        title=title,
                        level=level,
                        page=page + 1 if page is not None and page >= 0 else None,
                    )
                )

    try:
        walk(reader.outline, 1)
    except RecursionError:
        warnings.append("outline not read: it nests without end")
    except Exception as exc:
        warnings.append(f"outline not read: {short(exc)}")
    return out


def _images(
    reader: Any, scans: list[_PageScan], limits: Limits, warnings: list[str]
) -> tuple[list[Image], int]:
    """Embedded images through pypdf, sized from their dictionaries before any decoding."""
    out: list[Image] = []
    skipped = 0
    seen: set[tuple[int, int]] = set()
    for i, scan in enumerate(scans):
        if not scan.images:
            continue
        try:
            page = reader.pages[i]
            xobjects = page.get("/Resources", {}).get_object().get("/XObject", {}).get_object()
            names = list(xobjects.keys())
        except Exception:
            skipped += scan.images
            continue
        for name in names:
            try:
                ref = xobjects.raw_get(name)
                obj = xobjects[name].get_object()
                if obj.get("/Subtype") != "/Image":
                    continue
                key = (getattr(ref, "idnum", id(obj)), getattr(ref, "generation", 0))
                if key in seen:
                    continue  # the same image drawn on several pages is returned once
                seen.add(key)
                width, height = int(obj.get("/Width", 0)), int(obj.get("/Height", 0))
                if len(out) >= limits.max_images or width * height > limits.max_image_pixels:
                    skipped += 1
                    continue
                image = page.images[name]
                if len(image.data) > limits.max_image_bytes:
                    skipped += 1
                    continue
                ext = image.name.rsplit(".", 1)[-1].lower()
                media = {
                    "jpg": "image/jpeg",
                    "jp2": "image/jp2",
                    "png": "image/png",
                    "tiff": "image/tiff",
                }
                out.append(
                    Image(
                        data=image.data,
                        media_type=media.get(ext, f"image/{ext}"),
                        name=f"p{i + 1}-{name.lstrip('/')}.{ext}",
                        page=i + 1,
                        width=width,
                        height=height,
                    )
                )
            except Exception as exc:
                skipped += 1
                warnings.append(f"image {name} on page {i + 1} not extracted: {short(exc)}")
    return out, skipped


def _metadata(reader: Any, pages: int) -> dict[str, str]:
    meta = {"pages": str(pages)}
    try:
        info = reader.metadata or {}
        for key in ("/Title", "/Author", "/Subject", "/Creator", "/Producer", "/CreationDate"):
            value = info.get(key)
            if value:
                meta[key[1:].lower()] = str(value)[:1000]
    except Exception:
        pass
    return meta
