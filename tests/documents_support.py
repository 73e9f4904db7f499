"""A minimal hand-written PDF writer for the documents tests and bench (no reportlab, no fpdf2).

It writes what the extractor has to read back: lines of text in the standard Helvetica fonts
at chosen sizes, tables drawn with ruling lines, JPEG images, an outline (nested bookmarks)
and metadata. ``PageFlow`` lays a page out top to bottom (headings, paragraphs, bullets,
tables, images); ``make_pdf`` serialises pages with a correct cross-reference table.
"""

from __future__ import annotations

import io
import textwrap
import zlib
from dataclasses import dataclass, field

PAGE_W, PAGE_H = 612.0, 792.0  # US letter, points
MARGIN = 56.0


def _esc(text: str) -> bytes:
    raw = text.encode("cp1252")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


@dataclass
class Text:
    text: str
    x: float
    y: float
    size: float = 10.0
    bold: bool = False
    mono: bool = False  # Courier


@dataclass
class Grid:
    """A table drawn with ruling lines: ``rows`` of cell strings, top-left corner at x, top."""

    rows: list[list[str]]
    x: float
    top: float
    col_width: float = 110.0
    row_height: float = 16.0
    size: float = 9.0

    @property
    def height(self) -> float:
        return self.row_height * len(self.rows)


@dataclass
class Picture:
    jpeg: bytes
    px_w: int
    px_h: int
    x: float
    y: float
    w: float
    h: float


@dataclass
class Page:
    texts: list[Text] = field(default_factory=list)
    grids: list[Grid] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)


@dataclass
class Bookmark:
    title: str
    page: int  # 0-based page index
    children: list[Bookmark] = field(default_factory=list)


class PageFlow:
    """Lays content out from the top of a page down; ``page`` is the result."""

    def __init__(self) -> None:
        self.page = Page()
        self.y = PAGE_H - MARGIN

    def heading(self, text: str, size: float = 18.0) -> None:
        self.y -= size * 1.6
        self.page.texts.append(Text(text, MARGIN, self.y, size, bold=True))
        self.y -= size * 0.4

    def paragraph(self, text: str, size: float = 10.0, width: int = 95) -> None:
        self.y -= size * 0.8
        for line in textwrap.wrap(text, width):
            self.y -= size * 1.25
            self.page.texts.append(Text(line, MARGIN, self.y, size))

    def bullet(self, text: str, size: float = 10.0) -> None:
        self.y -= size * 1.4
        self.page.texts.append(Text("\u2022 " + text, MARGIN + 12, self.y, size))

    def code(self, lines: list[str], size: float = 9.0) -> None:
        """Courier lines; leading spaces become x offsets (0.6 em per character)."""
        self.y -= size * 0.8
        for line in lines:
            self.y -= size * 1.2
            indent = len(line) - len(line.lstrip(" "))
            x = MARGIN + indent * 0.6 * size
            self.page.texts.append(Text(line.lstrip(" "), x, self.y, size, mono=True))

    def table(self, rows: list[list[str]], col_width: float = 110.0) -> None:
        self.y -= 14
        grid = Grid(rows, MARGIN, self.y, col_width=col_width)
        self.page.grids.append(grid)
        self.y -= grid.height

    def image(self, jpeg: bytes, px_w: int, px_h: int, w: float = 120.0, h: float = 80.0) -> None:
        self.y -= h + 10
        self.page.pictures.append(Picture(jpeg, px_w, px_h, MARGIN, self.y, w, h))


def jpeg_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    """A small JPEG made with Pillow (a pdfplumber dependency)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "JPEG", quality=80)
    return out.getvalue()


class _Objects:
    def __init__(self) -> None:
        self.bodies: list[bytes | None] = []

    def reserve(self) -> int:
        self.bodies.append(None)
        return len(self.bodies)

    def set(self, num: int, body: bytes) -> None:
        self.bodies[num - 1] = body

    def add(self, body: bytes) -> int:
        num = self.reserve()
        self.set(num, body)
        return num

    def stream(self, data: bytes, extra: bytes = b"", compress: bool = True) -> int:
        if compress:
            data = zlib.compress(data)
            extra += b" /Filter /FlateDecode"
        return self.add(
            b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"
        )


def _content(page: Page, images: list[str]) -> bytes:
    ops: list[bytes] = []
    for t in page.texts:
        font = b"/F3" if t.mono else b"/F2" if t.bold else b"/F1"
        ops.append(
            b"BT %s %.1f Tf %.2f %.2f Td (%s) Tj ET" % (font, t.size, t.x, t.y, _esc(t.text))
        )
    for g in page.grids:
        ncols = max(len(r) for r in g.rows)
        width = g.col_width * ncols
        lines = [b"0.5 w"]
        for r in range(len(g.rows) + 1):
            y = g.top - r * g.row_height
            lines.append(b"%.2f %.2f m %.2f %.2f l" % (g.x, y, g.x + width, y))
        for c in range(ncols + 1):
            x = g.x + c * g.col_width
            lines.append(b"%.2f %.2f m %.2f %.2f l" % (x, g.top, x, g.top - g.height))
        lines.append(b"S")
        ops.extend(lines)
        for r, row in enumerate(g.rows):
            for c, cell in enumerate(row):
                x = g.x + c * g.col_width + 3
                y = g.top - (r + 1) * g.row_height + 4
                ops.append(b"BT /F1 %.1f Tf %.2f %.2f Td (%s) Tj ET" % (g.size, x, y, _esc(cell)))
    for name, p in zip(images, page.pictures, strict=True):
        ops.append(b"q %.2f 0 0 %.2f %.2f %.2f cm /%s Do Q" % (p.w, p.h, p.x, p.y, name.encode()))
    return b"\n".join(ops)


def _pdf_string(text: str) -> bytes:
    return b"(" + _esc(text) + b")"


def make_pdf(
    pages: list[Page],
    outline: list[Bookmark] | None = None,
    title: str | None = None,
    author: str | None = None,
    filler: int = 0,
) -> bytes:
    """Serialise ``pages`` (an optional outline, metadata, ``filler`` unused objects)."""
    objs = _Objects()
    catalog = objs.reserve()
    pages_num = objs.reserve()
    f1 = objs.add(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    f2 = objs.add(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
    )
    f3 = objs.add(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>"
    )
    jpeg_cache: dict[bytes, int] = {}
    page_nums: list[int] = []
    for page in pages:
        names, xobjs = [], []
        for i, pic in enumerate(page.pictures):
            num = jpeg_cache.get(pic.jpeg)
            if num is None:
                extra = (
                    b" /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB"
                    b" /BitsPerComponent 8 /Filter /DCTDecode" % (pic.px_w, pic.px_h)
                )
                num = objs.stream(pic.jpeg, extra, compress=False)
                jpeg_cache[pic.jpeg] = num
            names.append(f"Im{i}")
            xobjs.append(b"/Im%d %d 0 R" % (i, num))
        content = objs.stream(_content(page, names))
        xobject = b" /XObject << %s >>" % b" ".join(xobjs) if xobjs else b""
        page_nums.append(
            objs.add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R"
                b" /Resources << /Font << /F1 %d 0 R /F2 %d 0 R /F3 %d 0 R >>%s >> >>"
                % (pages_num, PAGE_W, PAGE_H, content, f1, f2, f3, xobject)
            )
        )
    kids = b" ".join(b"%d 0 R" % n for n in page_nums)
    objs.set(pages_num, b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_nums)))
    extra = b""
    if outline:
        root = objs.reserve()
        first, last, count = _bookmarks(objs, outline, root, page_nums)
        objs.set(
            root,
            b"<< /Type /Outlines /First %d 0 R /Last %d 0 R /Count %d >>" % (first, last, count),
        )
        extra = b" /Outlines %d 0 R /PageMode /UseOutlines" % root
    objs.set(catalog, b"<< /Type /Catalog /Pages %d 0 R%s >>" % (pages_num, extra))
    info = None
    if title or author:
        parts = []
        if title:
            parts.append(b"/Title " + _pdf_string(title))
        if author:
            parts.append(b"/Author " + _pdf_string(author))
        info = objs.add(b"<< " + b" ".join(parts) + b" >>")
    for i in range(filler):
        objs.add(b"<< /N %d >>" % i)
    return serialise(objs.bodies, catalog, info)


def _bookmarks(
    objs: _Objects, items: list[Bookmark], parent: int, page_nums: list[int]
) -> tuple[int, int, int]:
    nums = [objs.reserve() for _ in items]
    total = len(items)
    for i, (num, item) in enumerate(zip(nums, items, strict=True)):
        parts = [
            b"/Title " + _pdf_string(item.title),
            b"/Parent %d 0 R" % parent,
            b"/Dest [%d 0 R /XYZ 0 %d 0]" % (page_nums[item.page], PAGE_H),
        ]
        if i > 0:
            parts.append(b"/Prev %d 0 R" % nums[i - 1])
        if i + 1 < len(nums):
            parts.append(b"/Next %d 0 R" % nums[i + 1])
        if item.children:
            first, last, count = _bookmarks(objs, item.children, num, page_nums)
            parts.append(b"/First %d 0 R /Last %d 0 R /Count %d" % (first, last, count))
            total += count
        objs.set(num, b"<< " + b" ".join(parts) + b" >>")
    return nums[0], nums[-1], total


def serialise(bodies: list[bytes | None], root: int, info: int | None = None) -> bytes:
    """Objects 1..N (``bodies``) into a PDF file with an xref table and trailer."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(bodies, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + (body or b"null") + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    info_ref = b" /Info %d 0 R" % info if info else b""
    out += b"trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(bodies) + 1,
        root,
        info_ref,
        xref,
    )
    return bytes(out)


def blank_pages_pdf(count: int) -> bytes:
    """``count`` empty pages sharing one content stream: a tiny file with a huge page count."""
    bodies: list[bytes | None] = [None, None, b"<< /Length 0 >>\nstream\n\nendstream"]
    kids = []
    for _ in range(count):
        bodies.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>")
        kids.append(b"%d 0 R" % len(bodies))
    bodies[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    bodies[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), count)
    return serialise(bodies, 1)


def many_objects_pdf(count: int) -> bytes:
    """One page of text and ``count`` unreferenced filler objects."""
    page = PageFlow()
    page.paragraph("Filler document.")
    return make_pdf([page.page], filler=count)


def page_tree_loop_pdf() -> bytes:
    """A page tree whose /Kids points back at itself (a loop)."""
    bodies: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
        b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
    ]
    return serialise(bodies, 1)
