"""lydian_plugins.vision: OCR, faces, moderation and hostile images, on images made here.

Text is rendered with Pillow (DejaVu fonts from Debian's fonts-dejavu-core), faces come from
scikit-image's bundled sample photographs; Tesseract, OpenCV and the moderation model run for
real. Nothing explicit is shipped or generated: moderation is checked on benign images.
"""

from __future__ import annotations

import difflib
import importlib
import io
import multiprocessing
import os
import pickle
import random
import stat
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from skimage import data as samples

from lydian_plugins.vision import (
    BadImage,
    Box,
    FaceResult,
    ImageLimits,
    LimitExceeded,
    MissingLanguage,
    MissingTool,
    ModerationPolicy,
    ModerationResult,
    OcrResult,
    VisionError,
    blur_faces,
    blur_image,
    decide_moderation,
    detect_faces,
    installed_languages,
    moderate,
    ocr,
    probe_image,
)
from lydian_plugins.vision.errors import debian_package
from lydian_plugins.vision.faces import grow
from lydian_plugins.vision.ocr import band_cut

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
ENGLISH = [
    "Quarterly report: revenue rose by 12 percent",
    "while costs fell to 4,310 dollars per unit.",
    "The board meets on Tuesday at 10:30 in room B.",
    "Please bring the signed contracts and your notes.",
]
GERMAN = [
    "Grüße aus München: Die Bärenhöhle öffnet",
    "um acht Uhr. Äpfel, Öl und Übermut kosten",
    "zwölf Euro fünfzig in der Königstraße.",
]


# ------------------------------------------------------------------------------ helpers


def render(lines: list[str], *, size: int = 32, pad: int = 40) -> Image.Image:
    """Black text on white, one line per entry, in DejaVu Sans at ``size`` pixels."""
    font = ImageFont.truetype(str(FONT), size)
    width = max(int(font.getlength(line)) for line in lines) + 2 * pad
    step = int(size * 1.6)
    img = Image.new("L", (width, 2 * pad + step * len(lines)), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * step), line, font=font, fill=0)
    return img


def encoded(img: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def accuracy(got: str, expected: list[str]) -> float:
    """Character accuracy: difflib's ratio on whitespace-normalised text."""
    a, b = " ".join(got.split()), " ".join(" ".join(expected).split())
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def noisy(img: Image.Image, seed: int = 7) -> Image.Image:
    """Grey paper, Gaussian noise, a slight blur: a poor scan."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(img, dtype=np.float32) * 0.75 + 40  # low contrast
    pixels += rng.normal(0, 18, pixels.shape)
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(0.6))


def astronaut() -> Image.Image:
    return Image.fromarray(samples.astronaut())


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_bomb(side: int = 20_000) -> bytes:
    """A valid one-bit PNG of side x side white pixels: ~50 KB that decode to 400 Mpx."""
    squeeze = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    parts = [squeeze.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(squeeze.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height``."""
    raw = bytearray(encoded(Image.new("RGB", (64, 64), "gray"), "JPEG"))
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb()


# ---------------------------------------------------------------------------------- OCR


def test_ocr_reads_english_text():
    result = ocr(encoded(render(ENGLISH)))
    assert isinstance(result, OcrResult)
    assert accuracy(result.text, ENGLISH) >= 0.95, result.text
    assert result.languages == ("eng",)
    assert (result.rotation, result.orientation) == (0, 0)
    assert 0.6 < result.mean_confidence <= 1.0
    assert result.lines is None and result.words is None


def test_ocr_reads_german_umlauts_with_the_german_pack():
    page = encoded(render(GERMAN))
    german = ocr(page, languages=("deu",))
    assert accuracy(german.text, GERMAN) >= 0.95, german.text
    for word in ("Grüße", "München", "Bärenhöhle", "Äpfel", "Übermut", "zwölf", "Königstraße"):
        assert word in german.text
    both = ocr(page, languages=("eng", "deu"))
    assert both.languages == ("eng", "deu")
    assert accuracy(both.text, GERMAN) >= 0.95, both.text


@pytest.mark.parametrize(("turn", "correction"), [(90, 90), (180, 180)])
def test_ocr_detects_and_corrects_page_orientation(turn: int, correction: int):
    page = render(ENGLISH)
    turned = page.rotate(turn, expand=True)  # Pillow turns counter-clockwise
    assert ocr(encoded(turned), detect_orientation=False).mean_confidence < 0.8  # reads badly
    result = ocr(encoded(turned))
    assert result.rotation == correction  # clockwise degrees applied
    assert result.orientation == (360 - correction) % 360
    assert result.orientation_confidence >= 2.0
    assert (result.width, result.height) == page.size
    assert accuracy(result.text, ENGLISH) >= 0.95, result.text


def test_a_page_that_reads_well_as_it_came_skips_orientation_detection(monkeypatch):
    """Tesseract reads text turned 270 degrees (lines running bottom to top) by itself: the
    first reading is confident, so no orientation detection runs and nothing is turned."""
    ocr_module = importlib.import_module("lydian_plugins.vision.ocr")  # the package exports
    # a function of the same name

    def no_osd(*args, **kwargs):
        raise AssertionError("orientation detection ran")

    monkeypatch.setattr(ocr_module, "_detect_orientation", no_osd)
    page = render(ENGLISH)
    for image in (page, page.rotate(270, expand=True)):
        result = ocr(encoded(image))
        assert (result.rotation, result.orientation, result.orientation_confidence) == (0, 0, 0)
        assert (result.width, result.height) == image.size
        assert accuracy(result.text, ENGLISH) >= 0.95, result.text


def test_ocr_without_orientation_detection_misreads_a_turned_page():
    turned = encoded(render(ENGLISH).rotate(90, expand=True))
    raw = ocr(turned, detect_orientation=False)
    assert (raw.rotation, raw.orientation_confidence) == (0, 0.0)
    assert accuracy(raw.text, ENGLISH) < 0.5  # what the correction is for


def test_ocr_reads_a_noisy_low_contrast_jpeg():
    scan = encoded(noisy(render(ENGLISH)), "JPEG", quality=40)
    result = ocr(scan)
    assert accuracy(result.text, ENGLISH) >= 0.95, result.text


def test_ocr_boxes_match_the_rendered_lines():
    size, pad = 32, 40
    img = render(ENGLISH, size=size, pad=pad)
    result = ocr(encoded(img), boxes=True)
    assert result.lines is not None and result.words is not None
    assert len(result.lines) == len(ENGLISH)
    font = ImageFont.truetype(str(FONT), size)
    for i, (line, expected) in enumerate(zip(result.lines, ENGLISH, strict=True)):
        left, top, right, _ = font.getbbox(expected)
        top_px = pad + i * int(size * 1.6) + top
        assert abs(line.box.left - (pad + left)) <= 6
        assert abs(line.box.top - top_px) <= 6
        assert abs(line.box.width - (right - left)) <= 12
        assert 0.0 <= line.confidence <= 1.0
        words = [w.text for w in result.words if w.line == i]
        assert " ".join(words) == line.text
    assert accuracy(" ".join(line.text for line in result.lines), ENGLISH) >= 0.95


def big_page(lines: list[str], *, size: int = 32, columns: int = 1) -> Image.Image:
    """``lines`` rendered onto a 2,400 x 2,000 page (above the banding threshold), in one
    column or side by side in several."""
    page = Image.new("L", (2400, 2000), 255)
    column = render(lines, size=size)
    for i in range(columns):
        page.paste(column, (40 + i * (column.width + 80), 40))
    return page


def test_a_large_page_is_read_in_two_bands_cut_between_lines(monkeypatch):
    ocr_module = importlib.import_module("lydian_plugins.vision.ocr")
    bands: list[tuple[int, int]] = []
    real = ocr_module._recognise

    def spy(img, lang, limits):
        bands.append(img.size)
        return real(img, lang, limits)

    monkeypatch.setattr(ocr_module, "_recognise", spy)
    lines = ENGLISH * 3
    page = big_page(lines)
    cut = band_cut(page)
    assert cut is not None
    row, _ = cut
    assert 0.3 * page.height <= row <= 0.7 * page.height
    assert page.crop((0, row, page.width, row + 1)).getextrema() == (255, 255)  # no glyph

    whole = ocr(encoded(page), split=False)
    assert bands == [page.size]  # one process, the page as it is
    bands.clear()
    result = ocr(encoded(page), boxes=True)
    assert sorted(bands) == sorted([(page.width, row), (page.width, page.height - row)])
    assert accuracy(whole.text, lines) >= 0.95, whole.text
    assert accuracy(result.text, lines) >= 0.95, result.text
    assert result.lines is not None and result.words is not None
    assert len(result.lines) == len(lines)
    tops = [line.box.top for line in result.lines]
    assert tops == sorted(tops)  # page coordinates, in reading order across the cut
    step = int(32 * 1.6)
    for i, line in enumerate(result.lines):
        assert abs(line.box.top - (80 + i * step)) <= step // 2
        assert " ".join(w.text for w in result.words if w.line == i) == line.text


def test_pages_with_columns_small_images_and_blank_pages_are_read_whole():
    assert band_cut(big_page(ENGLISH * 12, size=20)) is not None
    assert band_cut(big_page(ENGLISH * 12, size=20, columns=2)) is None  # reading order
    assert band_cut(render(ENGLISH)) is None  # below the size threshold
    assert band_cut(Image.new("L", (2400, 2000), 255)) is None


def test_ocr_on_an_image_without_text_is_empty_not_an_error():
    result = ocr(encoded(Image.new("RGB", (300, 200), "white")))
    assert result.text == ""
    assert (result.mean_confidence, result.rotation, result.orientation_confidence) == (0, 0, 0)


def test_tesseract_runs_with_one_openmp_thread(tmp_path, monkeypatch):
    import pytesseract.pytesseract as pt

    seen = tmp_path / "seen.txt"
    probe = tmp_path / "tesseract"
    probe.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"${{OMP_THREAD_LIMIT-unset}}\" >> '{seen}'\n"
        f"exec '{pt.tesseract_cmd if os.path.isabs(pt.tesseract_cmd) else 'tesseract'}' \"$@\"\n"
    )
    probe.chmod(probe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(pt, "tesseract_cmd", str(probe))
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    page = encoded(render(ENGLISH[:2]))
    turned = encoded(render(ENGLISH).rotate(90, expand=True))

    assert accuracy(ocr(page).text, ENGLISH[:2]) >= 0.95
    result = ocr(turned)
    assert result.rotation == 90 and accuracy(result.text, ENGLISH) >= 0.95
    runs = seen.read_text().split()
    assert len(runs) >= 5  # --list-langs, recognition; recognition, orientation, recognition
    assert set(runs[1:]) == {"1"}
    assert "OMP_THREAD_LIMIT" not in os.environ  # set for Tesseract only

    seen.write_text("")
    ocr(page, threads=None, detect_orientation=False)
    assert seen.read_text().split() == ["unset"]  # Tesseract's default threading


def test_a_missing_language_pack_names_its_debian_package():
    if "yor" in installed_languages(refresh=True):
        pytest.skip("the Yoruba pack is installed here")
    with pytest.raises(MissingLanguage) as caught:
        ocr(encoded(render(ENGLISH[:1])), languages=("eng", "yor"))
    assert caught.value.language == "yor"
    assert caught.value.package == "tesseract-ocr-yor"
    assert "apt-get install tesseract-ocr-yor" in str(caught.value)
    assert isinstance(caught.value, MissingTool)
    assert debian_package("chi_sim") == "tesseract-ocr-chi-sim"


def test_language_names_are_checked():
    page = encoded(render(ENGLISH[:1]))
    for bad in ("eng", (), ("../eng",), ("eng+deu",), ("osd",)):
        with pytest.raises(ValueError):
            ocr(page, languages=bad)
    with pytest.raises(ValueError):
        ocr(page, threads=0)


def test_missing_tesseract_is_a_clear_error(tmp_path, monkeypatch):
    import pytesseract.pytesseract as pt

    monkeypatch.setattr(pt, "tesseract_cmd", str(tmp_path / "no-such-tesseract"))
    with pytest.raises(MissingTool, match="apt-get install tesseract-ocr"):
        ocr(encoded(render(ENGLISH[:1])))


# -------------------------------------------------------------------------------- faces


def test_one_face_in_the_astronaut_photograph():
    result = detect_faces(encoded(astronaut()))
    assert isinstance(result, FaceResult)
    assert result.count == 1 and len(result.boxes) == 1
    (box,) = result.boxes
    # Eileen Collins's face in the 512 x 512 sample: around (225, 115)
    assert 180 <= box.left + box.width / 2 <= 270
    assert 70 <= box.top + box.height / 2 <= 160
    assert 60 <= box.width <= 140
    assert (result.width, result.height) == (512, 512)


def test_four_faces_in_a_grid_and_none_in_a_cat_or_a_coffee():
    photo = astronaut()
    grid = Image.new("RGB", (1024, 1024))
    for i, tile in enumerate([photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] * 2):
        grid.paste(tile, ((i % 2) * 512, (i // 2) * 512))
    result = detect_faces(encoded(grid, "JPEG", quality=90))
    assert result.count == 4
    assert sorted((b.left // 512, b.top // 512) for b in result.boxes) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    for sample in (samples.chelsea(), samples.coffee(), samples.camera()):
        assert detect_faces(encoded(Image.fromarray(sample))).count == 0


def test_large_images_are_searched_scaled_down_and_boxed_at_full_size():
    big = astronaut().resize((2560, 2560), Image.Resampling.BICUBIC)
    result = detect_faces(encoded(big, "JPEG"), limits=ImageLimits(detect_max_side=512))
    assert result.count == 1
    (box,) = result.boxes
    assert 900 <= box.left + box.width / 2 <= 1350  # five times the 512-pixel position
    assert (result.width, result.height) == (2560, 2560)


def test_exif_orientation_is_applied_before_detection():
    stored = astronaut().rotate(90, expand=True)  # a phone that stores the picture sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # display turned 90 degrees clockwise
    sideways = encoded(stored, "JPEG", exif=exif.tobytes())
    assert detect_faces(encoded(stored, "JPEG")).count == 0  # Haar wants upright faces
    assert detect_faces(sideways).count == 1


def test_blurring_changes_the_faces_and_nothing_else():
    original = encoded(astronaut())
    found = detect_faces(original)
    blurred = blur_faces(original, found.boxes)
    assert probe_image(blurred).format == "PNG"
    before = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"), dtype=np.int16)
    after = np.asarray(Image.open(io.BytesIO(blurred)).convert("RGB"), dtype=np.int16)
    assert before.shape == after.shape
    region = grow(found.boxes[0], 0.15, 512, 512)
    inside = (
        slice(region.top, region.top + region.height),
        slice(region.left, region.left + region.width),
    )
    assert np.abs(before[inside] - after[inside]).mean() > 10
    assert after[inside].std(axis=(0, 1)).mean() < before[inside].std(axis=(0, 1)).mean()
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[inside] = False
    assert np.array_equal(before[outside], after[outside])  # PNG: lossless, untouched
    assert detect_faces(blurred).count == 0


def test_blurred_copies_keep_the_content_format_not_the_name():
    photo = encoded(astronaut(), "JPEG", quality=90)
    assert probe_image(photo, filename="face.png").extension_mismatch
    copy = blur_faces(photo, detect_faces(photo).boxes)
    assert probe_image(copy).format == "JPEG"
    assert probe_image(copy).extension_mismatch is False
    gif = encoded(astronaut().convert("P"), "GIF")
    assert probe_image(blur_faces(gif, [Box(0, 0, 10, 10)])).format == "GIF"
    whole = blur_image(photo)
    assert probe_image(whole).format == "JPEG"
    assert detect_faces(whole).count == 0
    with pytest.raises(ValueError):
        blur_faces(photo, [], margin=-1)


# --------------------------------------------------------------------------- moderation


def test_benign_images_score_low():
    for sample in (samples.astronaut(), samples.coffee(), samples.chelsea()):
        result = moderate(encoded(Image.fromarray(sample), "JPEG"))
        assert isinstance(result, ModerationResult)
        assert isinstance(result.score, float)
        assert 0.0 <= result.score < 0.2
        assert result.label == "safe"
        assert result.model == "open_nsfw"
    # a greyscale PNG with transparency decodes into what the model expects as well
    transparent = render(ENGLISH[:1]).convert("LA")
    assert moderate(encoded(transparent)).label == "safe"


def test_the_policy_decides_the_action():
    def result(score: float) -> ModerationResult:
        return ModerationResult(score=score, label="safe")

    refuse = ModerationPolicy(action="refuse", threshold=0.8)
    assert decide_moderation(refuse, result(0.95)).action == "refuse"
    assert decide_moderation(refuse, result(0.8)).action == "refuse"  # at the threshold
    assert decide_moderation(refuse, result(0.79)).action == "allow"
    blur = decide_moderation(ModerationPolicy(action="blur", threshold=0.5), result(0.6))
    assert (blur.action, blur.score, blur.threshold) == ("blur", 0.6, 0.5)
    assert decide_moderation(ModerationPolicy(), result(0.9)).action == "flag"  # the default
    with pytest.raises(ValueError):
        ModerationPolicy(threshold=1.5)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"action": "delete"}, ModerationPolicy)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"action": "blur", "threshold": -0.1}, ModerationPolicy)
    as_json = msgspec.json.encode(ModerationPolicy(action="blur", threshold=0.7))
    assert msgspec.json.decode(as_json, type=ModerationPolicy).action == "blur"


# ------------------------------------------------------------------------ hostile input


def test_decompression_bombs_are_refused_from_the_header(bomb: bytes):
    assert len(bomb) < 200_000  # 400 million pixels in a small file
    for call in (probe_image, ocr, detect_faces, moderate, blur_image):
        with pytest.raises(LimitExceeded, match="400,000,000 pixels"):
            call(bomb)
    with pytest.raises(LimitExceeded):
        blur_faces(bomb, [Box(0, 0, 10, 10)])
    # 64 x 64 pixels of data behind a frame header that claims the size: libjpeg would pad
    # the rest, so only the header check stands between it and a 1.2 GB decode
    with pytest.raises(LimitExceeded, match="400,000,000 pixels"):
        detect_faces(jpeg_claiming(20_000, 20_000))
    # below Pillow's own guard (2 x 89.5 Mpx), ours: 50 Mpx by default
    with pytest.raises(LimitExceeded, match="10,000 x 10,000 = 100,000,000 pixels"):
        ocr(jpeg_claiming(10_000, 10_000))
    # generous limits still stop at the decoder's own bomb guard, as our error
    with pytest.raises(LimitExceeded):
        probe_image(bomb, limits=ImageLimits(max_pixels=10**9, max_side=10**5))


def test_per_side_and_byte_limits():
    wide = encoded(Image.new("L", (3000, 10), 255))
    with pytest.raises(LimitExceeded, match="per side"):
        probe_image(wide, limits=ImageLimits(max_side=2000))
    with pytest.raises(LimitExceeded, match="bytes"):
        probe_image(wide, limits=ImageLimits(max_bytes=len(wide) - 1))
    assert probe_image(wide).width == 3000
    with pytest.raises(ValueError):
        ImageLimits(max_pixels=0)


def test_corrupt_and_truncated_images_are_bad_images():
    photo = encoded(astronaut(), "JPEG")
    picture = encoded(astronaut())
    broken = bytearray(picture)
    idat = broken.index(b"IDAT")
    broken[idat + 40 : idat + 4000] = random.Random(1).randbytes(3960)
    cases = {
        "truncated PNG": picture[: len(picture) // 2],
        "truncated JPEG": photo[: len(photo) // 2],
        "corrupt PNG data": bytes(broken),
        "header only": picture[:60],
    }
    for name, payload in cases.items():
        with pytest.raises(BadImage) as caught:
            detect_faces(payload)
        assert str(caught.value), name
    with pytest.raises(BadImage, match="truncated"):
        ocr(picture[: len(picture) // 2])
    with pytest.raises(BadImage, match="truncated"):
        moderate(photo[: len(photo) // 2])


def test_non_images_are_named():
    named = {
        b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF\n": "PDF",
        b"PK\x03\x04" + bytes(40): "ZIP",
        b'<svg xmlns="http://www.w3.org/2000/svg"/>': "SVG",
        "just some text, ä".encode(): "text",
        bytes(range(128, 192)): "unknown",
        b"": "empty",
    }
    for payload, word in named.items():
        with pytest.raises(BadImage, match=word):
            probe_image(payload)
    with pytest.raises(TypeError):
        probe_image("not bytes")


def test_content_is_sniffed_whatever_the_name():
    page = encoded(render(ENGLISH[:2]))
    info = probe_image(page, filename="scan.jpg")
    assert (info.format, info.media_type, info.extension_mismatch) == ("PNG", "image/png", True)
    assert probe_image(page, filename="scan.PNG").extension_mismatch is False
    assert probe_image(page, filename="notes.txt").extension_mismatch is True
    assert accuracy(ocr(page).text, ENGLISH[:2]) >= 0.95  # processed as what it is


# ----------------------------------------------------------------- process-pool friendly


def test_results_and_errors_cross_a_process_pool(bomb: bytes):
    for error in (
        BadImage("x"),
        LimitExceeded("y"),
        MissingTool("z"),
        MissingLanguage("yor"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert isinstance(copy, VisionError) and copy.code == error.code
    assert pickle.loads(pickle.dumps(MissingLanguage("fra"))).package == "tesseract-ocr-fra"

    page = encoded(render(ENGLISH[:2]))
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        faces = pool.submit(detect_faces, encoded(astronaut())).result(timeout=120)
        text = pool.submit(ocr, page).result(timeout=120)
        refused = pool.submit(moderate, bomb).exception(timeout=120)
    assert faces.count == 1
    assert accuracy(text.text, ENGLISH[:2]) >= 0.95
    assert isinstance(refused, LimitExceeded)
    assert msgspec.json.decode(msgspec.json.encode(text), type=OcrResult) == text
