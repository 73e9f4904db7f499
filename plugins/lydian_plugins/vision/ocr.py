"""OCR with Tesseract (through pytesseract); a page that reads badly as it came has its
orientation detected and corrected.

Tesseract runs as a separate process per call. Its OpenMP threading is limited to one thread
by default (``OMP_THREAD_LIMIT=1`` in that process's environment, never in ours): measured
4-6x less CPU per page than its default threading, and a process pool parallelises pages
better than OpenMP does.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import NamedTuple, NoReturn

import numpy as np
from PIL import Image

from .errors import LimitExceeded, MissingLanguage, MissingTool, VisionError
from .images import flatten, load_image
from .models import DEFAULT_LIMITS, Box, ImageLimits, OcrLine, OcrResult, OcrWord

try:
    import pytesseract
    import pytesseract.pytesseract as _pt
except ImportError:  # pragma: no cover - the optional extra is missing
    pytesseract = None
    _pt = None

MIN_ORIENTATION_CONFIDENCE = 2.0  # below this Tesseract's OSD guess is not acted upon
SURE_ORIENTATION_CONFIDENCE = 8.0  # below this a turn is kept only if it reads better
UPRIGHT_CONFIDENCE = 0.8  # a first reading this confident needs no orientation detection
BAND_MIN_PIXELS = 4_000_000  # pages this large are read in bands (a 300-dpi A4 page: 8.7 Mpx)
BAND_SCALE = 4  # the layout is looked at on a copy scaled down this many times
OSD_MAX_SIDE = 3_000  # orientation is detected on a copy scaled down to this longest side
_LANGUAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_CORRECTION = {  # OSD's clockwise correction -> Pillow transpose
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}
_omp_threads: ContextVar[int | None] = ContextVar("lydian_vision_omp_threads", default=None)
_installed: dict[str, frozenset[str]] = {}


class _TesseractEnviron(Mapping[str, str]):
    """``os.environ`` as pytesseract hands it to Tesseract, plus ``OMP_THREAD_LIMIT`` while one
    of our calls runs in this context: a live view, so ``os.environ`` itself never changes
    and concurrent threads each get their own setting."""

    def _merged(self) -> dict[str, str]:
        env = dict(os.environ)
        threads = _omp_threads.get()
        if threads is not None:
            env["OMP_THREAD_LIMIT"] = str(threads)
        return env

    def __getitem__(self, key: str) -> str:
        return self._merged()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())


def _require_pytesseract() -> None:
    if _pt is None:
        raise MissingTool("pytesseract is not installed: pip install 'lydian-hub[vision]'")
    if not isinstance(getattr(_pt, "environ", None), _TesseractEnviron):
        if not hasattr(_pt, "environ"):  # pragma: no cover - a pytesseract we do not know
            raise MissingTool("this pytesseract version is not supported (no 'environ')")
        _pt.environ = _TesseractEnviron()


@contextlib.contextmanager
def tesseract_threads(threads: int | None) -> Iterator[None]:
    """Within the block, Tesseract processes started here get ``OMP_THREAD_LIMIT=threads``
    (``None``: the environment as it is, i.e. Tesseract's default threading)."""
    _require_pytesseract()
    token = _omp_threads.set(threads)
    try:
        yield
    finally:
        _omp_threads.reset(token)


def _missing_tesseract() -> MissingTool:
    cmd = _pt.tesseract_cmd if _pt is not None else "tesseract"
    return MissingTool(f"Tesseract ({cmd!r}) is not installed: apt-get install tesseract-ocr")


def installed_languages(*, refresh: bool = False) -> frozenset[str]:
    """Tesseract's installed language packs (``osd`` included), cached per executable."""
    _require_pytesseract()
    cmd = _pt.tesseract_cmd
    if refresh or cmd not in _installed:
        try:
            done = subprocess.run(
                [cmd, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            raise _missing_tesseract() from None
        if done.returncode != 0:
            raise MissingTool(f"{cmd} --list-langs failed: {done.stderr.strip()[:300]}")
        langs = done.stdout.splitlines()[1:]  # the first line is a heading
        _installed[cmd] = frozenset(lang.strip() for lang in langs if lang.strip())
    return _installed[cmd]


def _check_languages(languages: Sequence[str]) -> str:
    if isinstance(languages, str) or not languages:
        raise ValueError("languages must be a non-empty sequence of names such as ('eng',)")
    for lang in languages:
        if not isinstance(lang, str) or not _LANGUAGE.fullmatch(lang) or lang == "osd":
            raise ValueError(f"not a Tesseract language name: {lang!r}")
    installed = installed_languages()
    for lang in languages:
        if lang not in installed and lang not in installed_languages(refresh=True):
            raise MissingLanguage(lang)
    return "+".join(languages)


def _raise_for(exc: Exception, limits: ImageLimits) -> NoReturn:
    """Turn pytesseract's errors into ours (always raises)."""
    if isinstance(exc, _pt.TesseractNotFoundError):
        raise _missing_tesseract() from None
    message = getattr(exc, "message", None) or str(exc)
    if "timeout" in message.lower():
        raise LimitExceeded(f"Tesseract took longer than {limits.timeout:g} s") from None
    found = re.search(r"Failed loading language '([^']+)'", message)
    if found:
        raise MissingLanguage(found.group(1)) from None
    if "osd.traineddata" in message:
        raise MissingLanguage("osd") from None
    raise VisionError(f"Tesseract failed: {message.strip()[:500]}") from None


def _uncompressed(img: Image.Image) -> Image.Image:
    """Have pytesseract pass ``img`` as a PGM file: lossless like PNG, without the 0.1 s of
    compression a 300-dpi page costs per Tesseract run."""
    img.format = "PPM"  # Pillow's writer for PBM/PGM/PPM; an L image becomes a PGM
    return img


def _detect_orientation(img: Image.Image, limits: ImageLimits) -> tuple[int, float]:
    """(clockwise degrees the page is turned, confidence); (0, 0.0) when Tesseract finds too
    little text to tell."""
    osd_img = img
    if max(img.size) > OSD_MAX_SIDE:
        scale = OSD_MAX_SIDE / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        osd_img = img.resize(size, Image.Resampling.LANCZOS)
    try:
        osd = pytesseract.image_to_osd(
            _uncompressed(osd_img), output_type=pytesseract.Output.DICT, timeout=limits.timeout
        )
    except _pt.TesseractError as exc:
        message = exc.message or ""
        if "osd.traineddata" in message or "Failed loading language" in message:
            _raise_for(exc, limits)
        return 0, 0.0  # too few characters, or a layout OSD cannot read: no opinion
    except (RuntimeError, OSError) as exc:  # timeout, or Tesseract gone
        _raise_for(exc, limits)
    orientation = int(osd.get("orientation", 0)) % 360
    return orientation, float(osd.get("orientation_conf", 0.0))


def _tsv_rows(tsv: str) -> Iterator[dict[str, str]]:
    lines = tsv.splitlines()
    if not lines:
        return
    header = lines[0].split("\t")
    for raw in lines[1:]:
        cells = raw.split("\t")
        if len(cells) < len(header):
            cells += [""] * (len(header) - len(cells))
        yield dict(zip(header, cells, strict=False))


def _layout(tsv: str) -> tuple[tuple[OcrLine, ...], tuple[OcrWord, ...], float]:
    """Lines, words and the mean word confidence (0..1) from Tesseract's TSV output."""
    grouped: dict[tuple[str, str, str, str], list[tuple[str, float, Box]]] = {}
    for row in _tsv_rows(tsv):
        text = row.get("text", "").strip()
        try:
            conf = float(row.get("conf", "-1"))
        except ValueError:
            continue
        if row.get("level") != "5" or not text or conf < 0:
            continue
        key = (row["page_num"], row["block_num"], row["par_num"], row["line_num"])
        box = Box(int(row["left"]), int(row["top"]), int(row["width"]), int(row["height"]))
        grouped.setdefault(key, []).append((text, conf / 100.0, box))
    lines: list[OcrLine] = []
    words: list[OcrWord] = []
    for index, members in enumerate(grouped.values()):
        left = min(b.left for _, _, b in members)
        top = min(b.top for _, _, b in members)
        right = max(b.left + b.width for _, _, b in members)
        bottom = max(b.top + b.height for _, _, b in members)
        lines.append(
            OcrLine(
                text=" ".join(t for t, _, _ in members),
                confidence=sum(c for _, c, _ in members) / len(members),
                box=Box(left, top, right - left, bottom - top),
            )
        )
        words.extend(OcrWord(text=t, confidence=c, box=b, line=index) for t, c, b in members)
    mean = sum(w.confidence for w in words) / len(words) if words else 0.0
    return tuple(lines), tuple(words), mean


class _Reading(NamedTuple):
    text: str
    lines: tuple[OcrLine, ...]
    words: tuple[OcrWord, ...]
    mean: float

    @property
    def score(self) -> float:
        """Confidence-weighted characters read: how well an orientation reads."""
        return sum(w.confidence * len(w.text) for w in self.words)


def _reads_upright(read: _Reading) -> bool:
    """Whether a reading of the image as it came is good enough to skip orientation
    detection: no text at all (a photo; a turned page always yields fragments), or words
    read with a mean confidence of :data:`UPRIGHT_CONFIDENCE` or more (upright pages read at
    0.95-0.96 here, the same page turned 90 degrees at 0.34)."""
    return not read.words or read.mean >= UPRIGHT_CONFIDENCE


def _recognise(img: Image.Image, lang: str, limits: ImageLimits) -> _Reading:
    """One Tesseract run producing both the plain text and the TSV layout."""
    try:
        text, tsv = pytesseract.run_and_get_multiple_output(
            _uncompressed(img), extensions=["txt", "tsv"], lang=lang, timeout=limits.timeout
        )
    except (_pt.TesseractError, RuntimeError, OSError) as exc:
        _raise_for(exc, limits)
    lines, words, mean = _layout(tsv)
    return _Reading(text.replace("\x0c", "").strip(), lines, words, mean)


def _blank_runs(ink: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of the runs of zeros in a 1-D ink profile."""
    blank = np.concatenate(([False], ink == 0, [False]))
    edges = np.flatnonzero(np.diff(blank.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def band_cut(img: Image.Image) -> tuple[int, bool] | None:
    """Where a page may be cut in two for reading in parallel: ``(row, paragraph)``, a row
    with no ink between two text lines (``paragraph`` when the gap is taller than the gaps
    between lines), or ``None`` when the page is small, has columns (a blank vertical strip
    inside the text: cutting would change the reading order) or no gap near its middle."""
    if img.width * img.height < BAND_MIN_PIXELS or (os.cpu_count() or 1) < 2:
        return None
    small = img.reduce(BAND_SCALE)
    ink = np.asarray(small, dtype=np.uint8) < 128
    rows, cols = ink.sum(axis=1), ink.sum(axis=0)
    inked = np.flatnonzero(cols)
    if inked.size == 0:
        return None
    inner = [(a, b) for a, b in _blank_runs(cols) if a > inked[0] and b <= inked[-1]]
    if any(b - a >= max(3, small.width // 100) for a, b in inner):
        return None  # columns, or a table: read as one
    gaps = [(a, b) for a, b in _blank_runs(rows) if a > 0 and b < small.height]
    if not gaps:
        return None
    usual = float(np.median([b - a for a, b in gaps]))
    middle = [(a, b) for a, b in gaps if 0.3 * small.height <= (a + b) / 2 <= 0.7 * small.height]
    if not middle:
        return None
    # the tallest gap near the middle (a paragraph break), then the one nearest the middle
    a, b = max(middle, key=lambda g: (g[1] - g[0], -abs((g[0] + g[1]) / 2 - small.height / 2)))
    return ((a + b) // 2) * BAND_SCALE, (b - a) > 1.5 * usual


def _shifted(read: _Reading, dy: int, first_line: int) -> _Reading:
    """A band's reading with its boxes moved to page coordinates."""

    def move(box: Box) -> Box:
        return Box(box.left, box.top + dy, box.width, box.height)

    lines = tuple(
        OcrLine(text=line.text, confidence=line.confidence, box=move(line.box))
        for line in read.lines
    )
    words = tuple(
        OcrWord(text=w.text, confidence=w.confidence, box=move(w.box), line=w.line + first_line)
        for w in read.words
    )
    return _Reading(read.text, lines, words, read.mean)


def _read_page(img: Image.Image, lang: str, limits: ImageLimits, split: bool) -> _Reading:
    """Read ``img``; a large single-column page in two bands at once when ``split``, one
    Tesseract process each (two cores for one page without OpenMP's busy-waiting threads)."""
    cut = band_cut(img) if split else None
    if cut is None:
        return _recognise(img, lang, limits)
    row, paragraph = cut
    bands = [img.crop((0, 0, img.width, row)), img.crop((0, row, img.width, img.height))]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="lydian-ocr") as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, _recognise, band, lang, limits)
            for band in bands
        ]
        top, bottom = (f.result() for f in futures)
    bottom = _shifted(bottom, row, len(top.lines))
    words = top.words + bottom.words
    mean = sum(w.confidence for w in words) / len(words) if words else 0.0
    text = ("\n\n" if paragraph else "\n").join(t for t in (top.text, bottom.text) if t)
    return _Reading(text, top.lines + bottom.lines, words, mean)


def ocr(
    image_bytes: bytes,
    *,
    languages: Sequence[str] = ("eng",),
    limits: ImageLimits = DEFAULT_LIMITS,
    boxes: bool = False,
    detect_orientation: bool = True,
    threads: int | None = 1,
    split: bool = True,
) -> OcrResult:
    """Read the text of an image with Tesseract.

    The image is read as it came; when that reading is poor (mean word confidence below
    :data:`UPRIGHT_CONFIDENCE`) and ``detect_orientation`` is true, its orientation is
    detected (``image_to_osd``) and the turned image read again. An upright page thus costs
    one Tesseract run (orientation detection alone cost 0.35-0.7 s per page here), a turned
    one three; ``orientation_confidence`` is 0 when detection was not needed.
    ``languages`` are Tesseract pack names (``("eng", "deu")``); ``boxes`` adds per-line
    and per-word boxes; ``threads`` is Tesseract's ``OMP_THREAD_LIMIT`` (``None``: its
    default, all cores); ``split`` lets a large single-column page be read in two bands at
    once (:func:`band_cut`; false: one Tesseract process per page, e.g. when a pool already
    keeps every core busy). Pure and process-pool friendly: bytes in, a Struct out.

    Raises :class:`BadImage`, :class:`LimitExceeded` (size, or ``limits.timeout`` per
    Tesseract run), :class:`MissingLanguage` (names the Debian package) or
    :class:`MissingTool` (Tesseract or pytesseract absent).
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, not {threads}")
    _require_pytesseract()
    lang = _check_languages(languages)
    img = flatten(load_image(image_bytes, limits=limits), "L")
    with tesseract_threads(threads):
        orientation, confidence, rotation = 0, 0.0, 0
        read = _read_page(img, lang, limits, split)
        if detect_orientation and not _reads_upright(read):
            orientation, confidence = _detect_orientation(img, limits)
            if orientation and confidence >= MIN_ORIENTATION_CONFIDENCE:
                turn = (360 - orientation) % 360
                turned = _read_page(img.transpose(_CORRECTION[turn]), lang, limits, split)
                # a sure guess is followed; an unsure one (little text) only if the turned
                # image reads better: a wrong turn reads as few, low-confidence fragments
                if confidence >= SURE_ORIENTATION_CONFIDENCE or turned.score > read.score:
                    read, rotation = turned, turn
    lines, words, mean = read.lines, read.words, read.mean
    return OcrResult(
        text=read.text,
        languages=tuple(languages),
        mean_confidence=mean,
        orientation=orientation,
        rotation=rotation,
        orientation_confidence=confidence,
        width=img.height if rotation in (90, 270) else img.width,
        height=img.width if rotation in (90, 270) else img.height,
        lines=lines if boxes else None,
        words=words if boxes else None,
    )


__all__ = ["band_cut", "installed_languages", "ocr", "tesseract_threads"]
