"""Documents benchmark: a generated 100-page PDF to structured markdown with tables.

Each page has a heading, three paragraphs and a 6 x 4 table (2,400 cells in all); every tenth
page has an image. The same run times raw text extraction with the fastest library
(pypdfium2) as the baseline, and checks that every table cell came back.

    python bench/documents_bench.py [--pages 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from lydian_plugins.documents import Limits, chunk, extract  # noqa: E402
from tests.documents_support import Bookmark, PageFlow, jpeg_bytes, make_pdf  # noqa: E402

WORDS = (
    "the quarterly figures show steady growth in every region while costs stayed flat and "
    "the team shipped three releases with fewer incidents than planned"
).split()


def paragraph(seed: int, words: int = 70) -> str:
    return " ".join(WORDS[(seed * 7 + i) % len(WORDS)] for i in range(words)).capitalize() + "."


def table_rows(page: int) -> list[list[str]]:
    rows = [["Item", "Region", "Units", "Amount"]]
    rows += [
        [f"P{page}-R{r}", f"Zone {r}", str(page * 10 + r), f"{page * 1.5 + r:.2f}"]
        for r in range(1, 6)
    ]
    return rows


def build(pages: int) -> tuple[bytes, list[list[list[str]]]]:
    specs, tables, outline = [], [], []
    for p in range(1, pages + 1):
        flow = PageFlow()
        flow.heading(f"Section {p}: regional results")
        for k in range(3):
            flow.paragraph(paragraph(p * 3 + k))
        rows = table_rows(p)
        tables.append(rows)
        flow.table(rows)
        if p % 10 == 0:  # ten distinct images
            flow.image(jpeg_bytes(320, 240, (p * 2, 90, 255 - p * 2)), 320, 240)
        specs.append(flow.page)
        outline.append(Bookmark(f"Section {p}", p - 1))
    return make_pdf(specs, outline=outline, title="Benchmark report"), tables


def raw_text(data: bytes) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        out = []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            out.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return "\n".join(out)
    finally:
        pdf.close()


def plumber_everything(data: bytes) -> int:
    """The alternative: pdfplumber for all text and all tables (what it costs unaided)."""
    import io

    import pdfplumber

    cells = 0
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for page in pdf.pages:
            page.extract_text()
            cells += sum(len(r) for t in page.extract_tables() for r in t)
            page.close()
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-compare", action="store_true", help="skip the pdfplumber-only run")
    args = ap.parse_args()
    data, tables = build(args.pages)
    print(
        f"PDF: {args.pages} pages, {len(data):,} bytes, {sum(len(t) * 4 for t in tables):,} cells"
    )
    full, raw, cpu = [], [], []
    doc = None
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        text = raw_text(data)
        raw.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        doc = extract(data, "application/pdf", "bench.pdf", limits=Limits())
        full.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert doc is not None
    cells_ok = sum(
        1
        for want, got in zip(tables, doc.tables, strict=False)
        for wr, gr in zip(want, got.rows, strict=False)
        for w, g in zip(wr, gr, strict=False)
        if w == g
    )
    headings = sum(1 for b in doc.blocks if b.kind == "heading")
    t0 = time.perf_counter()
    chunks = chunk(
        doc, max_tokens=512, overlap_tokens=64, attachment_id="bench", filename="bench.pdf"
    )
    chunk_s = time.perf_counter() - t0
    f_med, r_med = statistics.median(full), statistics.median(raw)
    raw_rounds = ", ".join(f"{x:.3f}" for x in raw)
    full_rounds = ", ".join(f"{x:.2f}" for x in full)
    print(f"raw text, pypdfium2:        {r_med:.3f} s (rounds {raw_rounds}; {len(text):,} chars)")
    print(
        f"structured markdown+tables: {f_med:.3f} s (rounds {full_rounds}; "
        f"{len(doc.markdown):,} chars; CPU {statistics.median(cpu):.2f} s)"
    )
    print(
        f"ratio: {f_med / r_med:.0f}x raw text; target < 10 s: {'met' if f_med < 10 else 'NOT met'}"
    )
    print(
        f"tables {len(doc.tables)}, cells exact {cells_ok:,}, headings {headings}, images "
        f"{len(doc.images)} (+{doc.images_skipped} skipped), outline {len(doc.outline)}"
    )
    if not args.no_compare:
        t0 = time.perf_counter()
        cells = plumber_everything(data)
        print(f"for comparison, pdfplumber alone (all text + tables, one round): "
              f"{time.perf_counter() - t0:.2f} s, {cells:,} cells")  # fmt: skip
    print(f"chunk(512 tokens, 64 overlap): {len(chunks)} chunks in {chunk_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
