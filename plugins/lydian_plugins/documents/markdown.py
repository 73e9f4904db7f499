"""Markdown building blocks shared by the format readers."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from .model import Block, BlockKind, Table

_WS = re.compile(r"\s+")


def cell_text(value: Any) -> str:
    """A cell value as one line of text (``|`` escaped for markdown tables)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, dt.datetime | dt.date | dt.time):
        value = value.isoformat()
    return _WS.sub(" ", str(value)).strip().replace("|", "\\|")


def table_markdown(rows: list[list[str]]) -> str:
    """Rows (first one the header) as a markdown table; short rows are padded."""
    if not rows:
        return ""
    width = max(len(r) for r in rows) or 1
    padded = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(padded[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in padded[1:]]
    return "\n".join(lines)


def trim_rows(rows: list[list[str]]) -> list[list[str]]:
    """Drops trailing empty rows, and trailing columns that are empty in every row."""
    rows = [list(r) for r in rows]
    while rows and not any(rows[-1]):
        rows.pop()
    width = max((len(r) for r in rows), default=0)
    while width and all(len(r) < width or not r[width - 1] for r in rows):
        width -= 1
    return [r[:width] for r in rows]


class Builder:
    """Collects blocks and tables in reading order and tracks the heading trail."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.tables: list[Table] = []
        self._trail: list[tuple[int, str]] = []
        self.section_override: str | None = None  # e.g. a sheet name

    @property
    def section(self) -> str | None:
        if self.section_override is not None:
            return self.section_override
        return " > ".join(t for _, t in self._trail) or None

    def heading(self, text: str, level: int, page: int | None = None) -> None:
        text = _WS.sub(" ", text).strip()
        if not text:
            return
        level = max(1, min(level, 6))
        while self._trail and self._trail[-1][0] >= level:
            self._trail.pop()
        self._trail.append((level, text))
        self.add("heading", "#" * level + " " + text, page, level=level)

    def add(self, kind: BlockKind, markdown: str, page: int | None = None, level: int = 0) -> None:
        if markdown.strip():
            self.blocks.append(
                Block(
                    kind=kind,
                    markdown=markdown.strip("\n"),
                    page=page,
                    section=self.section,
                    level=level,
                )
            )

    def table(
        self,
        rows: list[list[str]],
        page: int | None = None,
        total_rows: int | None = None,
        total_cols: int | None = None,
        caption: str | None = None,
    ) -> None:
        """Adds a table block (``caption`` above it) and its ``Table`` record."""
        rows = trim_rows(rows)
        if not rows:
            return
        total_rows = len(rows) if total_rows is None else total_rows
        total_cols = max(len(r) for r in rows) if total_cols is None else total_cols
        md = table_markdown(rows)
        if caption:
            md = caption + "\n\n" + md
        self.tables.append(
            Table(
                rows=rows,
                markdown=md,
                page=page,
                section=self.section,
                total_rows=total_rows,
                total_cols=total_cols,
                truncated=total_rows > len(rows),
            )
        )
        self.add("table", md, page)

    def markdown(self) -> str:
        return join_blocks(self.blocks)


def join_blocks(blocks: list[Block]) -> str:
    """Blocks joined with blank lines, consecutive list items kept together."""
    out: list[str] = []
    prev: Block | None = None
    for b in blocks:
        if out:
            tight = prev is not None and prev.kind == "list" and b.kind == "list"
            out.append("\n" if tight else "\n\n")
        out.append(b.markdown)
        prev = b
    return "".join(out) + ("\n" if out else "")


def summary_caption(name: str, rows: int, cols: int, shown: int) -> str | None:
    """The line that says a table was summarised, or None when it was shown whole."""
    if rows <= shown:
        return None
    return f"*{name}: {rows:,} rows x {cols:,} columns; the first {shown:,} rows are shown.*"
