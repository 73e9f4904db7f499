"""Chunking a ``Document`` for AI prompts: by structure, within a token budget, citable."""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable

from .model import Block, Chunk, Document
from .sniff import PPTX, XLSX

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def estimate_tokens(text: str) -> int:
    """A model-free token estimate: one token per 4 characters, rounded up.

    Close to BPE tokenisers on English prose, pessimistic on code; pass ``count_tokens`` to
    ``chunk`` to use a real tokeniser.
    """
    return math.ceil(len(text) / 4)


def chunk(
    document: Document,
    *,
    max_tokens: int,
    overlap_tokens: int,
    attachment_id: str,
    filename: str,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> list[Chunk]:
    """Splits ``document`` into chunks of at most ``max_tokens`` (by ``count_tokens``).

    A chunk never spans two sections or two pages (a heading or a page starts a new one);
    each table gets chunks of its own, with the header row repeated. Consecutive text chunks
    of one section share up to ``overlap_tokens`` of text (the end of the previous chunk).
    """
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError("overlap_tokens must be between 0 and max_tokens / 2")
    c = _Chunker(document, max_tokens, overlap_tokens, attachment_id, filename, count_tokens)
    for group in _groups(document.blocks):
        if group[0].kind == "table":
            c.table(group[0])
        else:
            c.text(group)
    return c.chunks


def _groups(blocks: list[Block]) -> list[list[Block]]:
    """Runs of blocks that may share a chunk: same page and section; a table stands alone."""
    groups: list[list[Block]] = []
    for b in blocks:
        last = groups[-1][-1] if groups else None
        if (
            last is None
            or b.kind == "table"
            or last.kind == "table"
            or b.kind == "heading"
            or b.page != last.page
            or b.section != last.section
        ):
            groups.append([b])
        else:
            groups[-1].append(b)
    return groups


class _Chunker:
    def __init__(
        self,
        document: Document,
        max_tokens: int,
        overlap: int,
        attachment_id: str,
        filename: str,
        count: Callable[[str], int],
    ) -> None:
        self.doc = document
        self.max = max_tokens
        self.overlap = overlap
        self.attachment_id = attachment_id
        self.filename = filename
        self.count = count
        self.chunks: list[Chunk] = []
        self._prev_text: tuple[str | None, str] | None = None  # (section, text) of last text chunk

    def _emit(self, text: str, kind: str, first: Block, last: Block) -> None:
        page, page_end = first.page, last.page
        self.chunks.append(
            Chunk(
                text=text,
                index=len(self.chunks),
                attachment_id=self.attachment_id,
                filename=self.filename,
                kind="table" if kind == "table" else "text",
                tokens=self.count(text),
                page=page,
                page_end=page_end,
                section=first.section,
                citation=self._citation(page, page_end, first.section),
            )
        )

    def _citation(self, page: int | None, page_end: int | None, section: str | None) -> str:
        if self.doc.media_type == XLSX and section:
            return f"{self.filename}, sheet {section}"
        if page is not None:
            unit = "slide" if self.doc.media_type == PPTX else "p."
            if page_end is not None and page_end != page:
                units = "slides" if unit == "slide" else "pp."
                return f"{self.filename}, {units} {page}-{page_end}"
            return f"{self.filename}, {unit} {page}"
        if section:
            return f"{self.filename}, {section}"
        return self.filename

    def text(self, blocks: list[Block]) -> None:
        queue: deque[tuple[str, Block, bool]] = deque()
        for b in blocks:  # (piece, its block, whether it continues the previous piece)
            parts = _split(b.markdown, self.max, self.count)
            queue.extend((p, b, n > 0) for n, p in enumerate(parts))
        section = blocks[0].section
        buf = ""
        if self._prev_text is not None and self._prev_text[0] == section and self.overlap:
            buf = _tail(self._prev_text[1], self.overlap, self.count)
        owned: list[Block] = []
        while queue:
            piece, block, cont = queue.popleft()
            tight = owned and owned[-1].kind == "list" and block.kind == "list"
            sep = " " if cont else "\n" if tight else "\n\n"
            candidate = buf + sep + piece if buf else piece
            if self.count(candidate) <= self.max:
                buf = candidate
                owned.append(block)
                continue
            if not owned:  # only the overlap is in the buffer and the piece needs the room
                buf = ""
                queue.appendleft((piece, block, cont))
                continue
            room = self.max - self.count(buf + sep)
            if room >= self.max // 4:  # fill the rest of this chunk with the piece's start
                parts = _split(piece, room, self.count)
                if len(parts) > 1 and self.count(buf + sep + parts[0]) <= self.max:
                    buf += sep + parts[0]
                    owned.append(block)
                    rest = _split(" ".join(parts[1:]), self.max, self.count)
                    queue.extendleft((p, block, True) for p in reversed(rest))
                else:
                    queue.appendleft((piece, block, cont))
            else:
                queue.appendleft((piece, block, cont))
            self._emit(buf, "text", owned[0], owned[-1])
            buf = _tail(buf, self.overlap, self.count) if self.overlap else ""
            owned = []
        if owned:
            self._emit(buf, "text", owned[0], owned[-1])
            self._prev_text = (section, buf)

    def table(self, block: Block) -> None:
        lines = block.markdown.split("\n")
        sep = next((i for i, line in enumerate(lines) if line.startswith("|") and "---" in line), 1)
        header = "\n".join(lines[: sep + 1])
        rows = lines[sep + 1 :]
        if self.count(header) > self.max // 2:  # a header too wide to repeat: plain text pieces
            header = ""
            rows = _split(block.markdown, self.max, self.count)
        current: list[str] = []
        for row in rows:
            candidate = "\n".join([header, *current, row]) if header else "\n".join([*current, row])
            if self.count(candidate) <= self.max:
                current.append(row)
                continue
            if current:
                self._emit("\n".join([header, *current]).strip("\n"), "table", block, block)
            current = []
            budget = self.max - self.count(header + "\n")
            parts = _split(row, budget, self.count) if self.count(row) > budget else [row]
            for part in parts[:-1]:
                self._emit("\n".join([header, part]).strip("\n"), "table", block, block)
            current = [parts[-1]]
        if current or not rows:
            self._emit("\n".join([header, *current]).strip("\n"), "table", block, block)
        self._prev_text = None


def _split(text: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """``text`` in pieces of at most ``budget`` tokens: at sentences, then words, then chars."""
    if count(text) <= budget:
        return [text]
    atoms: list[str] = []
    for sentence in _SENTENCE.split(text):
        if count(sentence) <= budget:
            atoms.append(sentence)
            continue
        for word in sentence.split():
            if count(word) <= budget:
                atoms.append(word)
                continue
            step = max(1, len(word) * budget // max(count(word), 1))
            while step > 1 and count(word[:step]) > budget:
                step -= 1
            atoms.extend(word[i : i + step] for i in range(0, len(word), step))
    pieces: list[str] = []
    current = ""
    for atom in atoms:
        candidate = f"{current} {atom}" if current else atom
        if count(candidate) <= budget:
            current = candidate
        else:
            if current:
                pieces.append(current)
            current = atom
    if current:
        pieces.append(current)
    return pieces


def _tail(text: str, tokens: int, count: Callable[[str], int]) -> str:
    """The last words of ``text`` that fit in ``tokens``."""
    if tokens <= 0:
        return ""
    words = text.split()
    out: list[str] = []
    for word in reversed(words):
        candidate = " ".join([word, *out])
        if count(candidate) > tokens:
            break
        out.insert(0, word)
    return " ".join(out)
