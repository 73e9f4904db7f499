"""The documents plugin's extraction and chunking (issue 15), on files each test generates."""

from __future__ import annotations

import csv
import io
import itertools
import pickle
import re
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor

import msgspec
import pytest

pytest.importorskip("pypdfium2")
pytest.importorskip("pdfplumber")
pytest.importorskip("docx")
pytest.importorskip("openpyxl")
pytest.importorskip("pptx")

import pypdf

from lydian_plugins.documents import (
    CSV,
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    PPTX,
    TEXT,
    XLSX,
    BadDocument,
    Chunk,
    Document,
    EncryptedDocument,
    LimitExceeded,
    Limits,
    WrongPassword,
    chunk,
    estimate_tokens,
    extract,
)
from tests.documents_support import (
    Bookmark,
    PageFlow,
    Text,
    blank_pages_pdf,
    jpeg_bytes,
    make_pdf,
    many_objects_pdf,
    page_tree_loop_pdf,
    serialise,
)

LIMITS = Limits()
TABLE = [
    ["Item", "Qty", "Price"],
    ["apple", "3", "1.20"],
    ["pear", "5", "0.80"],
    ["plum", "12", "4.50"],
]
TABLE_MD = (
    "| Item | Qty | Price |\n| --- | --- | --- |\n"
    "| apple | 3 | 1.20 |\n| pear | 5 | 0.80 |\n| plum | 12 | 4.50 |"
)
INTRO = (
    "This report covers the first quarter. Revenue grew in every region while costs stayed "
    "flat, and the team shipped three releases with fewer incidents than planned."
)
RED, BLUE = jpeg_bytes(64, 48, (220, 20, 20)), jpeg_bytes(80, 60, (20, 20, 220))


def report_pdf() -> bytes:
    """Three pages: headings, paragraphs, a list, a table and images; an outline."""
    p1 = PageFlow()
    p1.heading("Quarterly Report", 20)
    p1.paragraph(INTRO)
    p1.heading("Highlights", 14)
    p1.bullet("Revenue up 12 percent")
    p1.bullet("Two new regions")
    p1.image(RED, 64, 48)
    p2 = PageFlow()
    p2.heading("Costs", 14)
    p2.paragraph("The table lists the purchases of the quarter.")
    p2.table(TABLE)
    p2.paragraph("Prices are in euros.")
    p2.image(BLUE, 80, 60)
    p3 = PageFlow()
    p3.heading("Outlook", 20)
    p3.paragraph("Next quarter we expect similar figures.")
    outline = [
        Bookmark("Quarterly Report", 0, [Bookmark("Highlights", 0), Bookmark("Costs", 1)]),
        Bookmark("Outlook", 2),
    ]
    return make_pdf([p1.page, p2.page, p3.page], outline, title="Q1 report", author="Ada")


def scanned_pdf() -> bytes:
    """Page 1 has text; page 2 is only an image (a scan without a text layer)."""
    p1 = PageFlow()
    p1.paragraph("A page with a text layer.")
    p2 = PageFlow()
    p2.image(jpeg_bytes(200, 260, (240, 240, 240)), 200, 260, w=500, h=650)
    return make_pdf([p1.page, p2.page])


def encrypt(pdf: bytes, user: str, owner: str = "owner-secret") -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user, owner_password=owner, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --- PDF ----------------------------------------------------------------------------------


def test_pdf_structure_tables_outline_images_metadata() -> None:
    doc = extract(report_pdf(), "application/pdf", "report.pdf", limits=LIMITS)
    assert doc.media_type == PDF
    md = doc.markdown
    assert "# Quarterly Report" in md and "\n# Outlook" in md  # the largest size: level 1
    assert "## Highlights" in md and "## Costs" in md
    assert INTRO in md  # wrapped lines joined back into one paragraph
    assert "- Revenue up 12 percent\n- Two new regions" in md
    assert TABLE_MD in md
    # the table's cells are not repeated as loose text, and it sits between its paragraphs
    assert md.count("apple") == 1
    assert md.index("purchases of the quarter") < md.index(TABLE_MD) < md.index("in euros")
    assert [(t.rows, t.page) for t in doc.tables] == [(TABLE, 2)]
    assert [(p.number, p.tables, p.needs_ocr) for p in doc.pages] == [
        (1, 0, False),
        (2, 1, False),
        (3, 0, False),
    ]
    assert "Costs" in doc.pages[1].markdown and "Outlook" not in doc.pages[1].markdown
    assert "<!-- page 2 -->" in md
    assert [(o.title, o.level, o.page) for o in doc.outline] == [
        ("Quarterly Report", 1, 1),
        ("Highlights", 2, 1),
        ("Costs", 2, 2),
        ("Outlook", 1, 3),
    ]
    assert [(i.data, i.media_type, i.page, i.width, i.height) for i in doc.images] == [
        (RED, "image/jpeg", 1, 64, 48),
        (BLUE, "image/jpeg", 2, 80, 60),
    ]
    assert doc.metadata["title"] == "Q1 report" and doc.metadata["author"] == "Ada"
    assert doc.metadata["pages"] == "3"
    headings = [(b.markdown, b.page, b.section) for b in doc.blocks if b.kind == "heading"]
    assert headings[2] == ("## Costs", 2, "Quarterly Report > Costs")


def test_pdf_images_capped() -> None:
    doc = extract(report_pdf(), PDF, "report.pdf", limits=Limits(max_images=1))
    assert [i.data for i in doc.images] == [RED] and doc.images_skipped == 1


def test_pdf_page_without_text_layer_needs_ocr() -> None:
    doc = extract(scanned_pdf(), PDF, "scan.pdf", limits=LIMITS)
    assert [p.needs_ocr for p in doc.pages] == [False, True]
    assert doc.needs_ocr == [2]
    assert "OCR needed" in doc.markdown
    assert len(doc.images) == 1 and doc.images[0].page == 2


def test_pdf_encrypted_aes() -> None:
    data = encrypt(report_pdf(), "s3cret")
    with pytest.raises(EncryptedDocument, match="password is needed") as err:
        extract(data, PDF, "locked.pdf", limits=LIMITS)
    assert type(err.value) is EncryptedDocument and err.value.code == "encrypted"
    with pytest.raises(WrongPassword, match="does not open") as wrong:
        extract(data, PDF, "locked.pdf", limits=LIMITS, password="guess")
    assert wrong.value.code == "wrong_password"
    doc = extract(data, PDF, "locked.pdf", limits=LIMITS, password="s3cret")
    assert TABLE_MD in doc.markdown and len(doc.outline) == 4 and len(doc.images) == 2


def test_pdf_with_only_an_owner_password_opens_without_one() -> None:
    doc = extract(encrypt(report_pdf(), ""), PDF, "restricted.pdf", limits=LIMITS)
    assert "# Quarterly Report" in doc.markdown


def test_pdf_wrapped_heading_and_hyphenation() -> None:
    flow = PageFlow()
    flow.heading("A long title that the author", 20)
    flow.page.texts.append(
        type(flow.page.texts[0])("wrapped over two lines", 56, flow.y - 26, 20, True)
    )
    flow.y -= 40
    flow.paragraph("The engine is fast and reli-")
    flow.page.texts.append(type(flow.page.texts[0])("able in every test.", 56, flow.y - 12.5, 10))
    flow.y -= 30
    flow.paragraph("Body text so that ten point is the most common size on the page by far.")
    doc = extract(make_pdf([flow.page]), PDF, "x.pdf", limits=LIMITS)
    assert "# A long title that the author wrapped over two lines" in doc.markdown
    assert "fast and reliable in every test." in doc.markdown


def test_pdf_code_blocks_running_headers_and_contents() -> None:
    contents = PageFlow()
    contents.heading("Contents", 16)
    for n, (entry, page) in enumerate([("1 Setup", 2), ("2 Usage", 3)]):
        y = contents.y - 20 * (n + 1)
        contents.page.texts.append(
            Text(entry + " . . . . . . . . . . . . . . " + str(page), 56, y, 10)
        )
    pages = [contents.page]
    for p, title in ((2, "Setup"), (3, "Usage"), (4, "Notes")):
        flow = PageFlow()
        flow.page.texts.append(Text("Acme manual, edition 2", 56, 760, 8))  # running header
        flow.page.texts.append(Text(f"- {p} -", 300, 30, 8))  # page number
        flow.heading(f"{p - 1} {title}", 16)
        flow.paragraph(f"How to use the {title.lower()} part of the tool, in a few steps.")
        flow.code(["def main():", "    if ready:", "        return 1", "    return 0"])
        flow.paragraph("After the code, more text.")
        pages.append(flow.page)
    doc = extract(make_pdf(pages), PDF, "manual.pdf", limits=LIMITS)
    md = doc.markdown
    assert "Acme manual" not in md and "- 3 -" not in md
    assert "- 1 Setup \u2026 2\n- 2 Usage \u2026 3" in md
    code = "```\ndef main():\n    if ready:\n        return 1\n    return 0\n```"
    assert md.count(code) == 3
    assert "## 1 Setup" in md or "# 1 Setup" in md
    assert [b.kind for b in doc.blocks if b.page == 3] == [
        "heading",
        "paragraph",
        "code",
        "paragraph",
    ]


# --- Office -------------------------------------------------------------------------------


def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Plan"
    d.add_heading("Project plan", level=1)
    d.add_paragraph("We build the documents handler first.")
    d.add_heading("Steps", level=2)
    d.add_paragraph("Sniff the content", style="List Bullet")
    d.add_paragraph("Check the zip", style="List Bullet 2")
    d.add_paragraph("Extract", style="List Number")
    table = d.add_table(rows=0, cols=3)
    for row in TABLE:
        cells = table.add_row().cells
        for cell, value in zip(cells, row, strict=True):
            cell.text = value
    d.add_heading("Risks", level=2)
    d.add_paragraph("Hostile files.")
    d.add_picture(io.BytesIO(RED))
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def test_docx() -> None:
    doc = extract(make_docx(), DOCX, "plan.docx", limits=LIMITS)
    assert doc.media_type == DOCX
    assert doc.markdown.startswith("# Project plan\n\nWe build the documents handler first.")
    assert "## Steps\n\n- Sniff the content\n  - Check the zip\n1. Extract" in doc.markdown
    assert TABLE_MD in doc.markdown and doc.tables[0].rows == TABLE
    assert "## Risks\n\nHostile files." in doc.markdown
    assert [b.section for b in doc.blocks if b.markdown == "Hostile files."] == [
        "Project plan > Risks"
    ]
    assert [i.data for i in doc.images] == [RED]
    assert doc.metadata["title"] == "Plan"


def make_xlsx(big_rows: int = 1000) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Prices"
    for row in TABLE:
        ws.append([int(v) if v.isdigit() else v for v in row])
    big = wb.create_sheet("Log")
    big.append(["id", "event", "value"])
    for i in range(1, big_rows):
        big.append([i, f"event {i}", i * 0.5])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def test_xlsx_sheets_as_tables_large_sheet_summarised() -> None:
    doc = extract(make_xlsx(), XLSX, "data.xlsx", limits=Limits(sheet_rows=20))
    assert doc.media_type == XLSX
    assert "## Sheet: Prices\n\n" + TABLE_MD in doc.markdown
    prices, log = doc.tables
    assert prices.rows == TABLE and not prices.truncated and prices.section == "Prices"
    assert (log.total_rows, log.total_cols, len(log.rows), log.truncated) == (1000, 3, 20, True)
    assert "Sheet Log: 1,000 rows x 3 columns; the first 20 rows are shown." in doc.markdown
    assert "| 19 | event 19 | 9.5 |" in doc.markdown and "event 20 |" not in doc.markdown


def test_xlsx_cell_limit() -> None:
    with pytest.raises(LimitExceeded, match="more than 500 cells") as err:
        extract(make_xlsx(400), XLSX, "data.xlsx", limits=Limits(max_cells=500))
    assert err.value.limit == "max_cells"


def make_pptx() -> bytes:
    import pptx
    from pptx.util import Inches

    prs = pptx.Presentation()
    s1 = prs.slides.add_slide(prs.slide_layouts[1])
    s1.shapes.title.text = "Roadmap"
    body = s1.placeholders[1].text_frame
    body.text = "Ship the extractor"
    para = body.add_paragraph()
    para.text = "Zip guard"
    para.level = 1
    s1.notes_slide.notes_text_frame.text = "Mention the benchmark."
    s2 = prs.slides.add_slide(prs.slide_layouts[5])
    s2.shapes.title.text = "Budget"
    shape = s2.shapes.add_table(4, 3, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate(TABLE):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    s2.shapes.add_picture(io.BytesIO(BLUE), Inches(1), Inches(5))
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def test_pptx_slides_titles_notes_tables() -> None:
    doc = extract(make_pptx(), PPTX, "deck.pptx", limits=LIMITS)
    assert doc.media_type == PPTX
    assert (
        "## Slide 1: Roadmap\n\n- Ship the extractor\n  - Zip guard\n\n"
        "> **Notes:** Mention the benchmark." in doc.markdown
    )
    assert "## Slide 2: Budget\n\n" + TABLE_MD in doc.markdown
    assert [(p.number, p.tables) for p in doc.pages] == [(1, 0), (2, 1)]
    assert doc.tables[0].page == 2 and [i.data for i in doc.images] == [BLUE]


# --- text formats -------------------------------------------------------------------------


def test_csv() -> None:
    out = io.StringIO()
    csv.writer(out).writerows([*TABLE, ["fig, dried", "1", "2|3"]])
    doc = extract(out.getvalue().encode(), "text/csv", "items.csv", limits=LIMITS)
    assert doc.media_type == CSV
    assert doc.markdown.startswith(TABLE_MD + "\n| fig, dried | 1 | 2\\|3 |")


def test_csv_large_summarised_and_limited() -> None:
    data = "a;b\n" + "".join(f"{i};{i * 2}\n" for i in range(500))
    doc = extract(data.encode(), "text/csv", "n.csv", limits=Limits(sheet_rows=10))
    assert (doc.tables[0].total_rows, len(doc.tables[0].rows)) == (501, 10)
    assert "501 rows x 2 columns; the first 10 rows are shown" in doc.markdown
    with pytest.raises(LimitExceeded, match="more than 100 cells"):
        extract(data.encode(), "text/csv", "n.csv", limits=Limits(max_cells=100))


def test_html_drops_scripts_and_styles() -> None:
    html = """<!DOCTYPE html><html><head><title>Status page</title>
    <style>body { color: red }</style><script>alert("x")</script></head><body>
    <h1>Status</h1><p>All systems <b>normal</b>. See <a href="https://example.org/s">details</a>.</p>
    <ul><li>API up</li><li>Web up</li></ul>
    <table><tr><th>Item</th><th>Qty</th><th>Price</th></tr><tr><td>apple</td><td>3</td>
    <td>1.20</td></tr><tr><td>pear</td><td>5</td><td>0.80</td></tr><tr><td>plum</td><td>12</td>
    <td>4.50</td></tr></table><noscript>enable js</noscript>
    <h2>History</h2><p>Quiet &amp; calm.</p></body></html>"""
    doc = extract(html.encode(), "text/html", "status.html", limits=LIMITS)
    assert doc.media_type == HTML and doc.metadata["title"] == "Status page"
    assert doc.markdown == (
        "# Status\n\nAll systems normal. See [details](https://example.org/s).\n\n"
        "- API up\n- Web up\n\n" + TABLE_MD + "\n\n## History\n\nQuiet & calm.\n"
    )


def test_html_table_inside_a_table_cell() -> None:
    html = (
        "<table><tr><th>Name</th><th>Detail</th></tr><tr><td>a</td><td>"
        "<table><tr><td>x</td><td>y</td></tr></table></td></tr><tr><td>b</td><td>z</td></tr>"
        "</table><p>after</p>"
    )
    doc = extract(html.encode(), "text/html", "n.html", limits=LIMITS)
    assert doc.tables[0].rows == [["Name", "Detail"], ["a", "x y"], ["b", "z"]]
    assert doc.markdown.endswith("| b | z |\n\nafter\n")


def test_plain_text_and_markdown() -> None:
    text = extract(
        b"First paragraph.\n\nSecond one\ncontinues.", "text/plain", "a.txt", limits=LIMITS
    )
    assert text.media_type == TEXT and [b.markdown for b in text.blocks] == [
        "First paragraph.",
        "Second one\ncontinues.",
    ]
    md = b"# Guide\n\nIntro.\n\n## Install\n\n```\n# not a heading\n```\n\nRun it.\n"
    doc = extract(md, "text/markdown", "guide.md", limits=LIMITS)
    assert doc.media_type == MARKDOWN
    assert [(b.kind, b.section) for b in doc.blocks] == [
        ("heading", "Guide"),
        ("paragraph", "Guide"),
        ("heading", "Guide > Install"),
        ("code", "Guide > Install"),
        ("paragraph", "Guide > Install"),
    ]
    assert doc.markdown == md.decode()


# --- hostile and mislabelled input --------------------------------------------------------


def test_corrupt_and_truncated_pdf() -> None:
    good = report_pdf()
    with pytest.raises(BadDocument, match="corrupt or truncated PDF"):
        extract(good[: len(good) // 2], PDF, "half.pdf", limits=LIMITS)
    with pytest.raises(BadDocument, match="corrupt or truncated PDF"):
        extract(b"%PDF-1.7\n" + bytes(range(256)) * 20, PDF, "noise.pdf", limits=LIMITS)


def test_pdf_page_tree_loop() -> None:
    with pytest.raises(BadDocument, match="corrupt PDF"):
        extract(page_tree_loop_pdf(), PDF, "loop.pdf", limits=LIMITS)


def test_pdf_outline_loop_is_cut() -> None:
    flow = PageFlow()
    flow.paragraph("Text.")
    good = make_pdf([flow.page], outline=[Bookmark("Only", 0)])
    # the bookmark's /Next points at itself: readers that follow it never stop
    num = re.search(rb"\n(\d+) 0 obj\n<< /Title \(Only\) /Parent", good)
    assert num is not None
    head = b"<< /Title (Only) /Parent"
    looped = _rewrite_xref(good.replace(head, b"<< /Title (Only) /Next %s 0 R /Parent" % num[1]))
    doc = extract(looped, PDF, "loop.pdf", limits=LIMITS)
    assert [o.title for o in doc.outline] == ["Only"] and "Text." in doc.markdown


def _rewrite_xref(pdf: bytes) -> bytes:
    """Re-serialises a file written by ``serialise`` after its objects were edited in place."""
    bodies: list[bytes | None] = []
    pos = 0
    n = 1
    while True:
        start = pdf.find(b"\n%d 0 obj\n" % n, pos)
        if start < 0:
            break
        start += len(b"\n%d 0 obj\n" % n)
        end = pdf.index(b"\nendobj\n", start)
        bodies.append(pdf[start:end])
        pos, n = end, n + 1
    return serialise(bodies, 1)


def test_pdf_page_and_object_limits() -> None:
    with pytest.raises(LimitExceeded, match="5,000 pages \\(limit 2,000\\)") as pages:
        extract(blank_pages_pdf(5000), PDF, "many.pdf", limits=LIMITS)
    assert pages.value.limit == "max_pages"
    with pytest.raises(LimitExceeded, match="objects \\(limit 20,000\\)") as objects:
        extract(many_objects_pdf(30_000), PDF, "objs.pdf", limits=Limits(max_objects=20_000))
    assert objects.value.limit == "max_objects"


def test_pdf_flate_bomb_refused_before_pdfium() -> None:
    deflate = zlib.compressobj(9)
    payload = b"".join(deflate.compress(b" " * (1 << 20)) for _ in range(24)) + deflate.flush()
    bodies: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(payload)
        + payload
        + b"\nendstream",
    ]
    data = serialise(bodies, 1)
    assert len(data) < 100_000
    with pytest.raises(LimitExceeded, match="inflates past 10,485,760 bytes") as err:
        extract(data, PDF, "bomb.pdf", limits=Limits(max_stream_bytes=10 << 20))
    assert err.value.limit == "max_stream_bytes"


def test_pdf_huge_image_skipped_without_decoding() -> None:
    flow = PageFlow()
    flow.paragraph("A page with a poster.")
    flow.image(jpeg_bytes(32, 32), 20_000, 20_000)  # the dictionary claims 20,000 x 20,000
    doc = extract(make_pdf([flow.page]), PDF, "poster.pdf", limits=LIMITS)
    assert doc.images == [] and doc.images_skipped == 1
    assert "A page with a poster." in doc.markdown


def test_size_limit_and_time_budget() -> None:
    with pytest.raises(LimitExceeded, match="bytes \\(limit 1,000\\)"):
        extract(report_pdf(), PDF, "r.pdf", limits=Limits(max_bytes=1000))
    with pytest.raises(LimitExceeded, match="ran past 0 s") as err:
        extract(report_pdf(), PDF, "r.pdf", limits=Limits(max_seconds=0))
    assert err.value.limit == "max_seconds"


def zip_with(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


def test_zip_bomb_refused_before_parsing() -> None:
    bomb = zip_with({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"\0" * (40 << 20)})
    assert len(bomb) < 100_000
    with pytest.raises(LimitExceeded, match=r"zip bomb: word/document\.xml expands") as err:
        extract(bomb, DOCX, "bomb.docx", limits=LIMITS)
    assert err.value.limit == "max_zip_ratio"
    many = zip_with({"xl/workbook.xml": b"<x/>", **{f"xl/f{i}.xml": b"<x/>" for i in range(50)}})
    with pytest.raises(LimitExceeded, match="51 entries"):
        extract(many, XLSX, "many.xlsx", limits=Limits(max_zip_entries=50))
    with pytest.raises(LimitExceeded, match="expands to"):
        extract(make_docx(), DOCX, "plan.docx", limits=Limits(max_unzipped_bytes=10_000))


def test_xml_entity_expansion_in_office_files() -> None:
    lol = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    source = zipfile.ZipFile(io.BytesIO(make_docx()))
    entries = {name: source.read(name) for name in source.namelist()}
    body = re.sub(rb"^<\?xml[^>]*\?>\s*", b"", entries["word/document.xml"])
    entries["word/document.xml"] = lol + b"]>" + body.replace(b"Hostile files.", b"&lol9;")
    with pytest.raises(BadDocument, match="corrupt or unreadable DOCX: XMLSyntaxError"):
        extract(zip_with(entries), DOCX, "laughs.docx", limits=LIMITS)


def test_corrupt_and_truncated_office_files() -> None:
    docx_bytes = make_docx()
    with pytest.raises(BadDocument, match="corrupt or truncated zip archive"):
        extract(docx_bytes[: len(docx_bytes) // 2], DOCX, "cut.docx", limits=LIMITS)
    broken = zip_with({"word/document.xml": b"<w:document><not xml", "[Content_Types].xml": b"<"})
    with pytest.raises(BadDocument, match="corrupt or unreadable DOCX"):
        extract(broken, DOCX, "broken.docx", limits=LIMITS)
    with pytest.raises(BadDocument, match="not a DOCX, XLSX or PPTX"):
        extract(zip_with({"a.txt": b"hi"}), DOCX, "a.docx", limits=LIMITS)
    # a central directory asking for zip version 7.5 (zipfile raises NotImplementedError)
    future = bytearray(docx_bytes)
    cd = future.index(b"PK\x01\x02")
    future[cd + 6 : cd + 8] = (75).to_bytes(2, "little")
    with pytest.raises(BadDocument, match=r"zip file version 7\.5"):
        extract(bytes(future), DOCX, "future.docx", limits=LIMITS)


def test_sniffed_by_content_not_by_name() -> None:
    doc = extract(make_docx(), "application/pdf", "report.pdf", limits=LIMITS)
    assert doc.media_type == DOCX and "# Project plan" in doc.markdown
    assert doc.warnings == ["declared as application/pdf, but the content is DOCX"]
    pdf = extract(report_pdf(), "text/plain", "notes.txt", limits=LIMITS)
    assert pdf.media_type == PDF and TABLE_MD in pdf.markdown
    assert pdf.warnings == ["declared as text/plain, but the content is PDF"]
    html = extract(
        b"<html><body><h1>Hi</h1></body></html>", "application/pdf", "x.pdf", limits=LIMITS
    )
    assert html.media_type == HTML and html.markdown == "# Hi\n"
    with pytest.raises(BadDocument, match="a PNG image, not a document"):
        extract(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, PDF, "photo.pdf", limits=LIMITS)
    with pytest.raises(BadDocument, match="legacy binary Office file"):
        extract(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, DOCX, "old.doc", limits=LIMITS)
    with pytest.raises(BadDocument, match="empty"):
        extract(b"", TEXT, "empty.txt", limits=LIMITS)


def test_errors_and_documents_cross_process_boundaries() -> None:
    err = pickle.loads(pickle.dumps(LimitExceeded("max_pages", "too many pages")))
    assert (type(err), err.limit, str(err)) == (LimitExceeded, "max_pages", "too many pages")
    wrong = pickle.loads(pickle.dumps(WrongPassword("nope")))
    assert isinstance(wrong, EncryptedDocument) and str(wrong) == "nope"
    doc = extract(report_pdf(), PDF, "report.pdf", limits=LIMITS)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(doc), type=Document) == doc
    with ProcessPoolExecutor(max_workers=1) as pool:
        remote = pool.submit(extract, report_pdf(), PDF, "report.pdf", limits=LIMITS).result()
        assert remote == doc
        failed = pool.submit(extract, encrypt(report_pdf(), "pw"), PDF, "x.pdf", limits=LIMITS)
        with pytest.raises(EncryptedDocument):
            failed.result()


# --- chunking -----------------------------------------------------------------------------


def long_report() -> bytes:
    pages = []
    for p in range(1, 5):
        flow = PageFlow()
        flow.heading(f"Chapter {p}" if p % 2 else f"Chapter {p - 1} continued", 16)
        for k in range(4):
            flow.paragraph(f"Page {p} paragraph {k}. " + INTRO)
        if p == 3:
            flow.table([["Key", "Value"], *[[f"k{i}", f"value number {i}"] for i in range(12)]])
        pages.append(flow.page)
    return make_pdf(pages)


def test_chunks_respect_budget_structure_and_cite_pages() -> None:
    doc = extract(long_report(), PDF, "report.pdf", limits=LIMITS)
    chunks = chunk(
        doc, max_tokens=120, overlap_tokens=20, attachment_id="att-1", filename="report.pdf"
    )
    assert len(chunks) > 8
    assert all(isinstance(c, Chunk) and c.tokens == estimate_tokens(c.text) <= 120 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {(c.attachment_id, c.filename) for c in chunks} == {("att-1", "report.pdf")}
    for c in chunks:  # a chunk stays on its page and cites it
        assert c.page == c.page_end and c.citation == f"report.pdf, p. {c.page}"
        assert f"Page {c.page} paragraph" in c.text or c.kind == "table"
    assert {c.page for c in chunks} == {1, 2, 3, 4}
    assert chunks[0].text.startswith("# Chapter 1\n\nPage 1 paragraph 0.")
    assert chunks[0].section == "Chapter 1"
    # every paragraph's text is somewhere
    for p in range(1, 5):
        for k in range(4):
            assert any(f"Page {p} paragraph {k}." in c.text for c in chunks)
    small = chunk(doc, max_tokens=40, overlap_tokens=5, attachment_id="att-1", filename="r.pdf")
    tables = [c for c in small if c.kind == "table"]
    assert len(tables) >= 2 and {c.page for c in tables} == {3}
    for c in tables:  # the header row is repeated in each piece of the table
        assert c.text.startswith("| Key | Value |\n| --- | --- |\n| k")
    rows = [line for c in tables for line in c.text.split("\n")[2:]]
    assert rows == [f"| k{i} | value number {i} |" for i in range(12)]


def test_chunk_overlap() -> None:
    doc = extract(long_report(), PDF, "report.pdf", limits=LIMITS)
    chunks = chunk(doc, max_tokens=100, overlap_tokens=15, attachment_id="a", filename="r.pdf")
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(chunks)
        if a.section == b.section and a.kind == b.kind == "text"
    ]
    assert pairs
    for a, b in pairs:  # the next chunk starts with the end of the previous one
        aw, bw = a.text.split(), b.text.split()
        shared = max(n for n in range(len(bw) + 1) if n <= len(aw) and aw[len(aw) - n :] == bw[:n])
        assert shared >= 3 and estimate_tokens(" ".join(bw[:shared])) <= 15
    none = chunk(doc, max_tokens=100, overlap_tokens=0, attachment_id="a", filename="r.pdf")
    assert sum(c.tokens for c in none) < sum(c.tokens for c in chunks)
    # across a section boundary nothing is carried over
    starts = [c for c in chunks if c.text.startswith("# Chapter 3")]
    assert starts and starts[0].section == "Chapter 3"


def test_chunk_custom_counter_and_citations_for_slides_and_sheets() -> None:
    doc = extract(long_report(), PDF, "report.pdf", limits=LIMITS)
    words = chunk(
        doc,
        max_tokens=40,
        overlap_tokens=5,
        attachment_id="a",
        filename="r.pdf",
        count_tokens=lambda s: len(s.split()),
    )
    assert all(len(c.text.split()) <= 40 and c.tokens == len(c.text.split()) for c in words)
    deck = chunk(
        extract(make_pptx(), PPTX, "deck.pptx", limits=LIMITS),
        max_tokens=200,
        overlap_tokens=0,
        attachment_id="d",
        filename="deck.pptx",
    )
    assert [c.citation for c in deck][:2] == ["deck.pptx, slide 1", "deck.pptx, slide 2"]
    sheets = chunk(
        extract(make_xlsx(50), XLSX, "data.xlsx", limits=LIMITS),
        max_tokens=200,
        overlap_tokens=0,
        attachment_id="x",
        filename="data.xlsx",
    )
    assert {c.citation for c in sheets if c.kind == "table"} == {
        "data.xlsx, sheet Prices",
        "data.xlsx, sheet Log",
    }


def test_chunk_splits_an_oversized_paragraph_and_rejects_bad_parameters() -> None:
    text = ("word " * 2000).encode() + b"\n\n" + b"x" * 3000
    doc = extract(text, TEXT, "long.txt", limits=LIMITS)
    chunks = chunk(doc, max_tokens=50, overlap_tokens=10, attachment_id="a", filename="long.txt")
    assert all(c.tokens <= 50 for c in chunks) and chunks[-1].text.endswith("xxxx")
    assert sum(c.text.count("word") for c in chunks) >= 2000
    assert all(c.citation == "long.txt" and c.page is None for c in chunks)
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk(doc, max_tokens=50, overlap_tokens=30, attachment_id="a", filename="f")
    with pytest.raises(ValueError, match="max_tokens"):
        chunk(doc, max_tokens=2, overlap_tokens=0, attachment_id="a", filename="f")


def test_pdfplumber_is_pinned_to_the_minor_whose_internals_pdf_py_hooks() -> None:
    """documents/pdf.py replaces ``Page.iter_layout_objects`` on pdfplumber pages: an upgrade
    past 0.11 must be deliberate, and what is installed is inside the range."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    (requirement,) = [
        r
        for r in project["project"]["optional-dependencies"]["documents"]
        if r.startswith("pdfplumber")
    ]
    assert "<0.12" in requirement
    assert importlib.metadata.version("pdfplumber").startswith("0.11.")
