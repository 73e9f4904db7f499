"""Safe image intake: sniff the content, check the header against limits, then decode.

Nothing here trusts a file name or a declared media type: the format is what the bytes are.
Dimensions are read from the header (Pillow opens lazily) and checked before any pixel is
decoded, so a 20,000 x 20,000 "decompression bomb" costs a header read. Only the formats in
:data:`FORMATS` are tried, which keeps Pillow's rarely used decoders out of reach.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import PurePath

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from .errors import BadImage, LimitExceeded
from .models import DEFAULT_LIMITS, Box, ImageInfo, ImageLimits

FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # phone cameras' multi-picture JPEG
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
_OPENERS = [name for name in FORMATS if name != "MPO"]  # Pillow's JPEG opener yields MPO
_EXTENSIONS: dict[str, frozenset[str]] = {
    ".png": frozenset({"PNG"}),
    ".jpg": frozenset({"JPEG", "MPO"}),
    ".jpeg": frozenset({"JPEG", "MPO"}),
    ".jpe": frozenset({"JPEG", "MPO"}),
    ".gif": frozenset({"GIF"}),
    ".webp": frozenset({"WEBP"}),
    ".bmp": frozenset({"BMP"}),
    ".tif": frozenset({"TIFF"}),
    ".tiff": frozenset({"TIFF"}),
}
_NOT_IMAGES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive or Office document"),
    (0, b"\x1f\x8b", "gzip data"),
    (0, b"\xd0\xcf\x11\xe0", "an old Office document"),
    (4, b"ftyp", "an ISO media file (HEIC, AVIF or video), not supported"),
    (0, b"RIFF", "a RIFF file (audio or video)"),
    (0, b"OggS", "Ogg audio"),
    (0, b"ID3", "MP3 audio"),
)
_SAVE_AS = {"MPO": "JPEG"}  # formats Pillow reads but writes under another name


def describe(data: bytes) -> str:
    """A short human description of bytes that are not a supported image."""
    if not data:
        return "empty data"
    for offset, magic, what in _NOT_IMAGES:
        if data[offset : offset + len(magic)] == magic:
            return what
    head = data[:512].lstrip()
    if head[:5].lower() in (b"<?xml", b"<svg ") or b"<svg" in head.lower():
        return "SVG or XML (vector images are not supported)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "data of an unknown or unsupported format"
    return "text"


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open lazily (header only) and check size limits; the pixels are not decoded yet."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"image data must be bytes, not {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise LimitExceeded(
            f"image of {len(data):,} bytes exceeds the limit of {limits.max_bytes:,}"
        )
    try:
        with warnings.catch_warnings():
            # our own pixel limit below is the one that applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_OPENERS)
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at 2 x MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "its size"
        raise LimitExceeded(
            f"image of {size} exceeds the limits ({limits.max_pixels:,} pixels)"
        ) from None
    except UnidentifiedImageError:
        raise BadImage(f"not a supported image: {describe(bytes(data[:1024]))}") from None
    except Exception as exc:  # a hostile header can raise nearly anything from a decoder
        raise BadImage(f"corrupt image header: {type(exc).__name__}: {exc}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise BadImage(f"image has no pixels ({width} x {height})")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise LimitExceeded(
            f"image of {width:,} x {height:,} = {width * height:,} pixels exceeds the limits "
            f"({limits.max_side:,} per side, {limits.max_pixels:,} pixels)"
        )
    return img


def probe_image(
    data: bytes, *, filename: str | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> ImageInfo:
    """Format, media type and size from the header, checked against ``limits``.

    ``filename`` only feeds ``extension_mismatch``: the format is always the sniffed one.
    Raises :class:`BadImage` or :class:`LimitExceeded`.
    """
    img = _open(data, limits)
    fmt = img.format or "?"
    mismatch = False
    if filename is not None:
        expected = _EXTENSIONS.get(PurePath(filename).suffix.lower())
        mismatch = expected is None or fmt not in expected
    return ImageInfo(
        format=fmt,
        media_type=FORMATS.get(fmt, "application/octet-stream"),
        width=img.width,
        height=img.height,
        extension_mismatch=mismatch,
    )


def load_image(data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode the first frame after the header checks, turned as it is meant to be displayed
    (EXIF orientation applied). Raises :class:`BadImage` or :class:`LimitExceeded`."""
    img = _open(data, limits)
    fmt = img.format
    try:
        img.load()
    except Exception as exc:
        text = str(exc)
        if "truncated" in text or isinstance(exc, EOFError):
            raise BadImage(f"truncated {fmt} image: {text or 'data ends early'}") from None
        raise BadImage(f"corrupt {fmt} image: {type(exc).__name__}: {text}") from None
    try:
        turned = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the picture
        turned = img
    turned.format = fmt  # keep the sniffed format for re-encoding
    return turned


def flatten(img: Image.Image, mode: str = "L") -> Image.Image:
    """``img`` in ``mode`` with any transparency composited onto white."""
    if img.mode in ("P", "PA") or "A" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert(mode)


def encode(img: Image.Image, fmt: str) -> bytes:
    """``img`` encoded in ``fmt`` (Pillow's name); metadata such as EXIF is not carried over."""
    fmt = _SAVE_AS.get(fmt, fmt)
    if fmt == "JPEG" and img.mode not in ("L", "RGB", "CMYK"):
        img = flatten(img, "RGB")
    options: dict[str, object] = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def working_copy(img: Image.Image) -> Image.Image:
    """An editable copy in L, RGB or RGBA (palette and odd modes converted)."""
    if img.mode in ("L", "RGB", "RGBA"):
        return img.copy()
    has_alpha = "A" in img.getbands() or "transparency" in img.info
    return img.convert("RGBA" if has_alpha else "RGB")


def obscure(img: Image.Image, box: Box) -> None:
    """Pixelate then blur ``box`` of ``img`` in place, beyond recognition."""
    left, top = max(0, box.left), max(0, box.top)
    right, bottom = min(img.width, box.left + box.width), min(img.height, box.top + box.height)
    if right <= left or bottom <= top:
        return
    region = img.crop((left, top, right, bottom))
    w, h = region.size
    cells = max(1, min(w, h) // 8)  # about 8 blocks across the shorter side
    small = region.resize((max(1, w // cells), max(1, h // cells)), Image.Resampling.BOX)
    coarse = small.resize((w, h), Image.Resampling.NEAREST)
    img.paste(coarse.filter(ImageFilter.GaussianBlur(max(2, min(w, h) // 10))), (left, top))
