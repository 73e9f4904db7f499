"""CSV, HTML (stdlib ``html.parser``; scripts and styles dropped), plain text and markdown."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser

from .markdown import Builder, cell_text, summary_caption
from .model import BadDocument, Document, LimitExceeded, Limits, short
from .sniff import CSV, HTML, MARKDOWN, TEXT, decode_text

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def extract_csv(data: bytes, filename: str, limits: Limits) -> Document:
    text = decode_text(data)
    sample = text[:8192]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if filename.lower().endswith(".tsv") else csv.excel
    shown: list[list[str]] = []
    n_rows = n_cols = cells = 0
    try:
        for row in csv.reader(io.StringIO(text, newline=""), dialect):
            n_rows += 1
            cells += len(row)
            n_cols = max(n_cols, len(row))
            if cells > limits.max_cells:
                raise LimitExceeded(
                    "max_cells",
                    f"the CSV has more than {limits.max_cells:,} cells (row {n_rows:,})",
                )
            if len(shown) < limits.sheet_rows:
                shown.append([cell_text(v) for v in row])
    except csv.Error as exc:
        raise BadDocument(f"malformed CSV at row {n_rows + 1}: {short(exc)}") from None
    b = Builder()
    b.table(
        shown,
        total_rows=n_rows,
        total_cols=n_cols,
        caption=summary_caption(filename or "CSV", n_rows, n_cols, len(shown)),
    )
    return Document(
        media_type=CSV,
        filename=filename,
        markdown=b.markdown(),
        blocks=b.blocks,
        tables=b.tables,
        metadata={"rows": str(n_rows), "columns": str(n_cols)},
    )


def extract_text(data: bytes, filename: str, media_type: str) -> Document:
    """Plain text (paragraphs at blank lines) or markdown (sections at ``#`` headings)."""
    text = decode_text(data).replace("\r\n", "\n").replace("\r", "\n")
    b = Builder()
    is_md = media_type == MARKDOWN
    para: list[str] = []
    fenced = False

    def flush() -> None:
        if para:
            b.add("code" if fenced else "paragraph", "\n".join(para))
            para.clear()

    for line in text.split("\n"):
        if is_md and _FENCE.match(line):
            if fenced:
                para.append(line)
                flush()
                fenced = False
            else:
                flush()
                fenced = True
                para.append(line)
            continue
        heading = _MD_HEADING.match(line) if is_md and not fenced else None
        if heading:
            flush()
            b.heading(heading.group(2), len(heading.group(1)))
        elif not line.strip() and not fenced:
            flush()
        else:
            para.append(line)
    flush()
    return Document(
        media_type=MARKDOWN if is_md else TEXT,
        filename=filename,
        markdown=b.markdown() if is_md else text.strip() + "\n",
        blocks=b.blocks,
    )


_DROP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "aside", "blockquote",
          "figure", "figcaption", "form", "nav", "dl", "dt", "dd", "address"}  # fmt: skip
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source",
         "track", "wbr", "param"}  # fmt: skip


class _HtmlToMarkdown(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.b = Builder()
        self.title = ""
        self._drop = 0
        self._in_title = False
        self._buf: list[str] = []
        self._heading = 0
        self._lists: list[str] = []
        self._in_li = False
        self._table: list[list[str]] | None = None
        self._nested = 0  # tables inside a table's cell: their text joins that cell
        self._cell: list[str] | None = None
        self._pre = 0
        self._href: str | None = None
        self._link_text_start = 0

    def _flush(self) -> None:
        text = (
            re.sub(r"\s+", " ", "".join(self._buf)).strip() if not self._pre else "".join(self._buf)
        )
        self._buf = []
        if not text.strip():
            return
        if self._heading:
            self.b.heading(text, self._heading)
        elif self._pre:
            self.b.add("code", "```\n" + text.strip("\n") + "\n```")
        elif self._in_li and self._lists:
            marker = "1. " if self._lists[-1] == "ol" else "- "
            self.b.add("list", "  " * (len(self._lists) - 1) + marker + text)
        else:
            self.b.add("paragraph", text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP:
            if tag == "head":
                return  # keep walking the head only for its <title>
            if tag not in _VOID:
                self._drop += 1
            return
        if tag == "title":
            self._in_title = True
            return
        if self._drop:
            return
        if self._table is not None and (self._nested or tag == "table"):
            self._nested += tag == "table"
            if self._cell is not None and tag in ("td", "th", "tr", "br", "p", "li"):
                self._cell.append(" ")
            return
        if self._table is not None and tag in ("td", "th"):
            self._cell = []
            return
        if tag == "tr" and self._table is not None:
            self._table.append([])
            return
        if tag == "table":
            self._flush()
            self._table = []
            return
        if self._cell is not None:
            if tag == "br":
                self._cell.append(" ")
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush()
            self._heading = int(tag[1])
        elif tag in ("ul", "ol"):
            self._flush()
            self._lists.append(tag)
        elif tag == "li":
            self._flush()
            self._in_li = True
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag == "br":
            if self._pre:
                self._buf.append("\n")
            else:
                self._flush()
        elif tag in _BLOCK:
            self._flush()
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self._href = href if href.startswith(("http://", "https://", "mailto:")) else None
            self._link_text_start = len(self._buf)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP:
            if tag != "head" and self._drop:
                self._drop -= 1
            return
        if tag == "title":
            self._in_title = False
            return
        if self._drop:
            return
        if self._nested:
            self._nested -= tag == "table"
            return
        if self._table is not None:
            if tag in ("td", "th") and self._cell is not None:
                if self._table:
                    self._table[-1].append(cell_text("".join(self._cell)))
                self._cell = None
            elif tag == "table":
                rows = [r for r in self._table if r]
                self._table = None
                self.b.table(rows)
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush()
            self._heading = 0
        elif tag in ("ul", "ol"):
            self._flush()
            if self._lists:
                self._lists.pop()
            self._in_li = bool(self._lists)
        elif tag == "li":
            self._flush()
            self._in_li = False
        elif tag == "pre":
            self._flush()
            self._pre = max(self._pre - 1, 0)
        elif tag in _BLOCK:
            self._flush()
        elif tag == "a" and self._href:
            text = "".join(self._buf[self._link_text_start :]).strip()
            if text and text != self._href:
                del self._buf[self._link_text_start :]
                self._buf.append(f"[{text}]({self._href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self._drop:
            return
        elif self._cell is not None:
            self._cell.append(data)
        elif self._table is None:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def extract_html(data: bytes, filename: str) -> Document:
    parser = _HtmlToMarkdown()
    parser.feed(decode_text(data))
    parser.close()
    b = parser.b
    title = re.sub(r"\s+", " ", parser.title).strip()
    return Document(
        media_type=HTML,
        filename=filename,
        markdown=b.markdown(),
        blocks=b.blocks,
        tables=b.tables,
        metadata={"title": title} if title else {},
    )
