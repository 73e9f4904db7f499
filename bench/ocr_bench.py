"""OCR accuracy and cost per page (issue 15), on pages rendered by this script.

    python bench/ocr_bench.py [--rounds 2] [--only clean-serif,screenshot]

Pages (DejaVu fonts from Debian's fonts-dejavu-core, deterministic text):

- ``clean-serif``, ``clean-sans``: A4 at 300 dpi (2480 x 3508), English prose, 10 pt;
- ``clean-small``: the same at 8 pt; ``clean-german``: German with umlauts, read with ``deu``;
- ``clean-letter``: 11 pt, double-spaced (about half the text of the pages above);
- ``screenshot``: a 1366 x 768 chat window at 96 dpi (coloured header with white text, zebra
  rows, grey timestamps, 11 pt text);
- ``rotated``: ``clean-serif`` turned 90 degrees (orientation detected and corrected).

Each page goes through ``lydian_plugins.vision.ocr`` in four modes, rotating the order,
``--rounds`` times: ``shipped``, as the hub calls it (one OpenMP thread per Tesseract
process; a large single-column page read in two bands by two processes at once; the page
read as it came, orientation detected and the page read again only when that reading is
poor); ``whole page``, the same in one process (what the bands save); ``default
threading``, Tesseract's OpenMP threads (``threads=None``); ``before``, the baseline: the
behaviour before these changes, orientation detected on every page, then the whole page
read by one process.
Figures: character accuracy (difflib ratio on whitespace-normalised text, ``autojunk`` off),
wall time and CPU time (this process plus Tesseract's), medians. Targets: >= 98 % on clean
pages, < 2 s per page or screenshot.
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))

from lydian_plugins.vision import ocr
from lydian_plugins.vision.images import flatten, load_image
from lydian_plugins.vision.models import DEFAULT_LIMITS
from lydian_plugins.vision.ocr import _detect_orientation, tesseract_threads

FONTS = Path("/usr/share/fonts/truetype/dejavu")
A4 = (2480, 3508)  # 300 dpi
MARGIN = 240
ENGLISH = (
    "the report shows that revenue grew in every region while operating costs fell slightly "
    "during the third quarter customers asked for faster delivery and better support so the "
    "team hired two engineers and opened a second warehouse near the harbour our forecast "
    "for next year assumes stable prices moderate growth and no major disruption in supply "
    "please review the attached figures before the meeting on Thursday and send comments "
    "to the finance office board members will vote on the proposal after a short discussion"
).split()
GERMAN = (
    "die Übersicht zeigt dass der Umsatz in allen Regionen gestiegen ist während die Kosten "
    "im dritten Quartal leicht gesunken sind Kunden wünschten schnellere Lieferung und "
    "bessere Beratung deshalb stellte das Team zwei Ingenieure ein und eröffnete ein "
    "zweites Lager nahe der Straße am Hafen für das nächste Jahr erwarten wir stabile Preise "
    "mäßiges Wachstum und keine größeren Störungen bitte prüfen Sie die Zahlen vor der "
    "Sitzung am Donnerstag Grüße aus München Köln und Düsseldorf"
).split()


@dataclass
class Page:
    name: str
    image: Image.Image
    text: str
    languages: tuple[str, ...]
    clean: bool


def prose(words: list[str], count: int, seed: int) -> str:
    """Sentences of ``count`` words drawn from ``words``, with numbers and punctuation."""
    rng = random.Random(seed)
    out: list[str] = []
    sentence: list[str] = []
    for _ in range(count):
        word = rng.choice(words)
        if rng.random() < 0.06:
            word = rng.choice(
                [f"{rng.randint(2, 980)}", f"{rng.randint(1, 99)}.{rng.randint(10, 99)}"]
            )
        sentence.append(word)
        if len(sentence) >= rng.randint(8, 16):
            sentence[0] = sentence[0][:1].upper() + sentence[0][1:]
            out.append(" ".join(sentence) + rng.choice([".", ".", ",", ";", ":", "?"]))
            sentence = []
    if sentence:
        out.append(" ".join(sentence) + ".")
    return " ".join(out)


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if font.getlength(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def a4_page(
    words: list[str], font_file: str, points: float, seed: int, spacing: float = 1.45
) -> tuple[Image.Image, str]:
    """A white A4 page at 300 dpi filled with prose in ``points``-point type."""
    px = round(points * 300 / 72)
    font = ImageFont.truetype(str(FONTS / font_file), px)
    step = round(px * spacing)
    rows = (A4[1] - 2 * MARGIN) // step
    lines = wrap(prose(words, rows * 16, seed), font, A4[0] - 2 * MARGIN)[:rows]
    img = Image.new("L", A4, 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * step), line, font=font, fill=0)
    return img, "\n".join(lines)


def screenshot(seed: int = 5) -> tuple[Image.Image, str]:
    """A 1366 x 768 chat window at 96 dpi: header bar, zebra rows, grey timestamps."""
    rng = random.Random(seed)
    regular = ImageFont.truetype(str(FONTS / "DejaVuSans.ttf"), 15)
    bold = ImageFont.truetype(str(FONTS / "DejaVuSans-Bold.ttf"), 15)
    title = ImageFont.truetype(str(FONTS / "DejaVuSans-Bold.ttf"), 18)
    img = Image.new("RGB", (1366, 768), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    truth: list[str] = []
    draw.rectangle((0, 0, 1366, 52), fill=(38, 62, 120))
    header = "# release-planning"
    draw.text((24, 15), header, font=title, fill=(255, 255, 255))
    truth.append(header)
    y, row = 68, 0
    authors = ["alice", "bob", "carol", "dmitri", "eve"]
    while y < 700:
        author = authors[row % len(authors)]
        stamp = f"{9 + row // 6:02d}:{(row * 7) % 60:02d}"
        body = wrap(prose(ENGLISH, rng.randint(8, 28), seed + row), regular, 1100)
        height = 26 + 22 * len(body) + 10
        if y + height > 760:
            break
        if row % 2:
            draw.rectangle((0, y - 6, 1366, y + height - 10), fill=(244, 246, 248))
        draw.text((24, y), author, font=bold, fill=(20, 20, 20))
        draw.text((24 + bold.getlength(author) + 12, y), stamp, font=regular, fill=(130, 130, 130))
        truth.append(f"{author} {stamp}")
        for i, line in enumerate(body):
            draw.text((24, y + 26 + 22 * i), line, font=regular, fill=(34, 34, 34))
        truth.extend(body)
        y += height
        row += 1
    return img, "\n".join(truth)


def pages() -> list[Page]:
    serif, serif_text = a4_page(ENGLISH, "DejaVuSerif.ttf", 10, seed=1)
    sans, sans_text = a4_page(ENGLISH, "DejaVuSans.ttf", 10, seed=2)
    small, small_text = a4_page(ENGLISH, "DejaVuSerif.ttf", 8, seed=3)
    german, german_text = a4_page(GERMAN, "DejaVuSans.ttf", 10, seed=4)
    letter, letter_text = a4_page(ENGLISH, "DejaVuSans.ttf", 11, seed=6, spacing=2.0)
    shot, shot_text = screenshot()
    return [
        Page("clean-serif", serif, serif_text, ("eng",), True),
        Page("clean-sans", sans, sans_text, ("eng",), True),
        Page("clean-small", small, small_text, ("eng",), True),
        Page("clean-german", german, german_text, ("deu",), True),
        Page("clean-letter", letter, letter_text, ("eng",), True),
        Page("screenshot", shot, shot_text, ("eng",), False),
        Page("rotated", serif.rotate(90, expand=True), serif_text, ("eng",), True),
    ]


def accuracy(got: str, expected: str) -> float:
    a, b = " ".join(got.split()), " ".join(expected.split())
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # Tesseract, once waited for
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Run:
    wall: float
    cpu: float
    accuracy: float
    rotation: int


def always_detected(page: Page, data: bytes) -> tuple[int, str]:
    """The behaviour before: orientation detected on every page, then the page (turned when
    the detection is confident) read once."""
    img = flatten(load_image(data, limits=DEFAULT_LIMITS), "L")
    with tesseract_threads(1):
        orientation, confidence = _detect_orientation(img, DEFAULT_LIMITS)
    rotation = (360 - orientation) % 360 if orientation and confidence >= 2.0 else 0
    if rotation:
        buf = io.BytesIO()
        img.rotate(-rotation, expand=True).save(buf, format="PNG")  # clockwise
        data = buf.getvalue()
    text = ocr(
        data, languages=page.languages, threads=1, detect_orientation=False, split=False
    ).text
    return rotation, text


def measure(page: Page, data: bytes, threads: int | None, osd: bool, split: bool = True) -> Run:
    start_wall, start_cpu = time.perf_counter(), cpu()
    if osd:
        rotation, text = always_detected(page, data)
        wall, spent = time.perf_counter() - start_wall, cpu() - start_cpu
        return Run(wall, spent, accuracy(text, page.text), rotation)
    result = ocr(data, languages=page.languages, threads=threads, split=split)
    wall, spent = time.perf_counter() - start_wall, cpu() - start_cpu
    return Run(wall, spent, accuracy(result.text, page.text), result.rotation)


def median(runs: list[Run], key: Callable[[Run], float]) -> float:
    return statistics.median(key(r) for r in runs)


MODES: dict[str, tuple[int | None, bool, bool]] = {  # threads, always OSD, split
    "shipped": (1, False, True),  # one thread per process, bands, orientation when needed
    "whole page": (1, False, False),  # the same in one process: what bands save
    "default threading": (None, False, True),  # Tesseract's OpenMP threads
    "before": (1, True, False),  # the baseline: orientation always detected, whole page
}


def main(rounds: int, only: set[str] | None) -> None:
    version = subprocess.run(
        [shutil.which("tesseract") or "tesseract", "--version"], capture_output=True, text=True
    ).stdout.splitlines()[0]
    print(f"{version}; {os.cpu_count()} CPUs; load average {os.getloadavg()}; rounds {rounds}")
    chosen = [p for p in pages() if only is None or p.name in only]
    runs: dict[tuple[str, str], list[Run]] = {}

    def wall(page: Page, mode: str) -> float:
        return median(runs[(page.name, mode)], lambda r: r.wall)

    def cpu_s(page: Page, mode: str) -> float:
        return median(runs[(page.name, mode)], lambda r: r.cpu)

    def acc(page: Page, mode: str) -> float:
        return median(runs[(page.name, mode)], lambda r: r.accuracy)

    for page in chosen:
        buf = io.BytesIO()
        page.image.save(buf, format="PNG")
        data = buf.getvalue()
        for r in range(rounds):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for mode in order:
                threads, osd, split = MODES[mode]
                runs.setdefault((page.name, mode), []).append(
                    measure(page, data, threads, osd, split)
                )
        print(
            f"{page.name:13} {page.image.width}x{page.image.height} {'+'.join(page.languages)}"
            f" {len(page.text):,} chars, rotation {runs[(page.name, 'shipped')][0].rotation}: "
            + "; ".join(
                f"{mode} {wall(page, mode):.2f} s wall, {cpu_s(page, mode):.2f} CPU-s,"
                f" accuracy {acc(page, mode):.4f}"
                for mode in MODES
            ),
            flush=True,
        )
    print()
    print(
        "| page | size, characters | accuracy | shipped: wall / CPU | whole page: wall / CPU "
        "| default threading: wall / CPU | before (always OSD, whole page): wall / CPU "
        "| shipped / before (wall) | target < 2 s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for page in chosen:
        shipped = acc(page, "shipped")
        met = wall(page, "shipped") < 2.0 and (shipped >= 0.98 or not page.clean)
        cells = " | ".join(
            f"{wall(page, mode):.2f} s / {cpu_s(page, mode):.2f} s" for mode in MODES
        )
        print(
            f"| {page.name} | {page.image.width} x {page.image.height}, {len(page.text):,} "
            f"| {shipped * 100:.2f} % | {cells} "
            f"| {wall(page, 'shipped') / wall(page, 'before'):.2f} "
            f"| {'met' if met else 'NOT met'} |"
        )
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated page names")
    args = parser.parse_args()
    main(args.rounds, set(args.only.split(",")) if args.only else None)
