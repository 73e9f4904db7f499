"""Image content parts of ``/v1/chat/completions``: checked, then passed on or read offline.

A part is OpenAI's ``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}``.
``data:`` URLs are decoded (strict base64), held to the size limits and sniffed: the bytes
must be PNG, JPEG, GIF or WebP and match the declared media type. ``http(s)`` URLs are
refused unless the operator sets ``remote_images``, and then only passed on to a vision
model, which fetches them itself: the hub never fetches a URL a caller gave it (no SSRF).

Without a vision model each image is read offline with the ``vision`` library (Tesseract OCR
and the face counter, in a worker thread) and its reading given to the model as text.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

import msgspec

from hub.sdk import ImagePart

PLUGIN = "openai_api"

MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.ASCII)

Positive = Annotated[int, msgspec.Meta(gt=0)]


class OpenAIAPISettings(msgspec.Struct):
    """``[plugins.openai_api]``: limits and policy for image content parts."""

    max_image_bytes: Positive = 5 * 1024 * 1024
    """Largest image (decoded) in one part."""
    max_images: Positive = 8
    """Most image parts in one request."""
    max_request_image_bytes: Positive = 8 * 1024 * 1024
    """Most image bytes (decoded) in one request, all parts together."""
    max_image_pixels: Positive = 25_000_000
    """Largest image (width x height, read from its header) read offline."""
    remote_images: bool = False
    """Pass ``http(s)`` image URLs on to a vision model, which fetches them (the hub never
    does). Off: such parts are refused (400), as they always are without a vision model."""
    offline_note: bool = True
    """Begin an answer built on offline readings with a one-line note saying so."""
    ocr_languages: list[str] = msgspec.field(default_factory=lambda: ["eng"])
    """Tesseract language packs for offline reading."""
    offline_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds one offline reading (OCR and faces) may take."""


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageURL(msgspec.Struct):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(msgspec.Struct, tag="image_url", tag_field="type"):
    image_url: ImageURL


ContentPart = TextPart | ImageURLPart
"""The parts the hub reads; any other ``type`` is a 400, never skipped."""


class BadImagePart(Exception):
    """A part the hub will not take: ``message`` says which and why (a 400)."""

    def __init__(self, message: str, code: str = "invalid_image") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class CheckedImage(msgspec.Struct, frozen=True, kw_only=True):
    """One image part after the checks: ``data`` is empty for a remote URL."""

    where: str
    """``messages[0].content[1]``, for error messages."""
    url: str
    media_type: str
    detail: str | None
    data: bytes = b""


def sniff(data: bytes) -> str | None:
    """The media type the bytes are, from their magic number (``None``: none we take)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(part: ImageURLPart, where: str, settings: OpenAIAPISettings) -> CheckedImage:
    """Decode and check one part; :class:`BadImagePart` says what is wrong with it."""
    url = part.image_url.url.strip()
    detail = part.image_url.detail
    lowered = url[:8].lower()
    if lowered.startswith(("http://", "https://")):
        if not settings.remote_images:
            raise BadImagePart(
                f"{where}: remote image URLs are not accepted by this hub (it never fetches "
                "URLs it is given); send the image inline as a data: URL "
                "(data:image/png;base64,...)",
                "remote_image_refused",
            )
        return CheckedImage(where=where, url=url, media_type="", detail=detail)
    match = _DATA_URL.match(url)
    if match is None:
        shown = url[:40] + ("..." if len(url) > 40 else "")
        raise BadImagePart(
            f"{where}: image_url.url must be a base64 data: URL "
            f"(data:image/png;base64,...), not {shown!r}"
        )
    declared = match.group(1).lower()
    declared = _ALIASES.get(declared, declared)
    if declared not in MEDIA_TYPES:
        raise BadImagePart(
            f"{where}: media type {declared!r} is not an image this hub takes "
            f"({', '.join(MEDIA_TYPES)})",
            "unsupported_media_type",
        )
    encoded = url[match.end() :]
    if len(encoded) * 3 // 4 > settings.max_image_bytes + 2:  # refuse before decoding
        raise BadImagePart(_too_large(where, len(encoded) * 3 // 4, settings), "image_too_large")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImagePart(f"{where}: the data: URL is not valid base64 ({exc})") from None
    if not data:
        raise BadImagePart(f"{where}: the image is empty")
    if len(data) > settings.max_image_bytes:
        raise BadImagePart(_too_large(where, len(data), settings), "image_too_large")
    actual = sniff(data)
    if actual is None:
        raise BadImagePart(
            f"{where}: the bytes are not a PNG, JPEG, GIF or WebP image (declared {declared})",
            "unsupported_media_type",
        )
    if actual != declared:
        raise BadImagePart(
            f"{where}: declared {declared} but the bytes are {actual}", "media_type_mismatch"
        )
    return CheckedImage(where=where, url=url, media_type=actual, detail=detail, data=data)


def _too_large(where: str, size: int, settings: OpenAIAPISettings) -> str:
    return (
        f"{where}: image of about {size:,} bytes exceeds the limit of "
        f"{settings.max_image_bytes:,} bytes per image"
    )


def check_request_totals(images: list[CheckedImage], settings: OpenAIAPISettings) -> None:
    if len(images) > settings.max_images:
        raise BadImagePart(
            f"{len(images)} images in one request; the limit is {settings.max_images}",
            "too_many_images",
        )
    total = sum(len(i.data) for i in images)
    if total > settings.max_request_image_bytes:
        raise BadImagePart(
            f"images of {total:,} bytes in one request exceed the limit of "
            f"{settings.max_request_image_bytes:,} bytes",
            "images_too_large",
        )


def as_part(image: CheckedImage) -> ImagePart:
    """The image as the SDK's :class:`ImagePart`, for a vision model."""
    return ImagePart(url=image.url, media_type=image.media_type, detail=image.detail)


# ---------------------------------------------------------------- offline reading


class OfflineReading(msgspec.Struct, frozen=True, kw_only=True):
    """What the hub read from one image without a vision model (reported to the caller)."""

    index: int
    media_type: str
    width: int
    height: int
    text: str
    faces: int
    mode: str = "offline"


class VisionUnavailable(Exception):
    """The ``vision`` library or Tesseract is missing: images cannot be read offline."""


def read_offline(image: CheckedImage, index: int, settings: OpenAIAPISettings) -> OfflineReading:
    """OCR the image and count its faces (blocking: run it in a worker thread).

    Raises :class:`BadImagePart` for an image that does not decode or is over the pixel
    limits, :class:`VisionUnavailable` when the tools are not installed."""
    try:
        from lydian_plugins.vision import (
            BadImage,
            ImageLimits,
            LimitExceeded,
            MissingTool,
            detect_faces,
            ocr,
        )
    except ImportError as exc:  # the ``vision`` extra is not installed
        raise VisionUnavailable(f"the vision library is not installed ({exc})") from None
    limits = ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        timeout=settings.offline_timeout,
    )
    try:
        read = ocr(image.data, languages=settings.ocr_languages, limits=limits)
        faces = detect_faces(image.data, limits=limits)
    except MissingTool as exc:
        raise VisionUnavailable(str(exc)) from None
    except (BadImage, LimitExceeded) as exc:
        raise BadImagePart(f"{image.where}: {exc}", "image_unreadable") from None
    return OfflineReading(
        index=index,
        media_type=image.media_type,
        width=read.width,
        height=read.height,
        text=read.text.strip(),
        faces=faces.count,
    )


def describe(reading: OfflineReading) -> str:
    """The reading as the model sees it, in place of the image."""
    kind = reading.media_type.removeprefix("image/").upper()
    faces = f"{reading.faces} face{'s' if reading.faces != 1 else ''}"
    text = f"OCR text: {reading.text}" if reading.text else "no text found by OCR"
    return (
        f"[image {reading.index}, read offline (no vision model: only its text and face "
        f"count are known): {kind} {reading.width}x{reading.height}, {faces}; {text}]"
    )


OFFLINE_NOTE = (
    "(No vision model is configured: the image was read offline, by OCR and a face count; "
    "nothing else in it was seen.)\n\n"
)


def report(readings: list[OfflineReading], passed: int) -> dict[str, Any]:
    """The ``lydian_images`` field of a response: how each image was used."""
    if readings:
        return {"mode": "offline", "images": [msgspec.to_builtins(r) for r in readings]}
    return {"mode": "vision_model", "images": passed}
