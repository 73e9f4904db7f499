"""Typed inputs and results of the vision functions (msgspec Structs: picklable, wire-ready)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Positive = Annotated[int, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class ImageLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounds checked before any pixel is decoded, and on the work done with them.

    ``max_pixels`` (width x height of the first frame) and ``max_side`` are read from the
    header; ``timeout`` bounds one Tesseract run; ``detect_max_side`` is the longest side of
    the copy faces are searched in (larger images are scaled down for detection only).
    """

    max_bytes: Positive = 50 * 1024 * 1024
    max_pixels: Positive = 50_000_000
    max_side: Positive = 16_384
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    detect_max_side: Positive = 2_048

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side", "detect_max_side"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ImageLimits.{name} must be > 0")
        if self.timeout <= 0:
            raise ValueError("ImageLimits.timeout must be > 0")


DEFAULT_LIMITS = ImageLimits()


class Box(msgspec.Struct, frozen=True, array_like=True):
    """A rectangle in pixels: ``[left, top, width, height]`` on the wire."""

    left: int
    top: int
    width: int
    height: int


class ImageInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the header says, read without decoding pixels; ``format`` is sniffed content."""

    format: str  # Pillow's name: PNG, JPEG, GIF, WEBP, BMP, TIFF
    media_type: str
    width: int
    height: int
    extension_mismatch: bool = False  # the file name's extension names another format


class OcrWord(msgspec.Struct, frozen=True, kw_only=True):
    """One recognised word; ``confidence`` 0..1; ``line`` indexes ``OcrResult.lines``."""

    text: str
    confidence: float
    box: Box
    line: int


class OcrLine(msgspec.Struct, frozen=True, kw_only=True):
    """One text line: its words joined by spaces, mean word confidence, bounding box."""

    text: str
    confidence: float
    box: Box


class OcrResult(msgspec.Struct, frozen=True, kw_only=True):
    """Text read by Tesseract from an image, after orientation correction.

    ``orientation`` is the page orientation Tesseract detected (degrees counter-clockwise the
    text is turned) and ``rotation`` the clockwise rotation applied to correct it (0 when
    detection was off, not needed because the image read well as it came, unsure or
    impossible; ``orientation_confidence`` is 0.0 when it did not run).
    ``width``/``height`` and every box refer to the corrected image. ``mean_confidence`` is
    0..1 over the recognised words (0.0 when there are none).
    """

    text: str
    languages: tuple[str, ...]
    mean_confidence: float
    orientation: int
    rotation: int
    orientation_confidence: float
    width: int
    height: int
    lines: tuple[OcrLine, ...] | None = None
    words: tuple[OcrWord, ...] | None = None


class FaceResult(msgspec.Struct, frozen=True, kw_only=True):
    """Faces found: count and boxes only (never who they are), in displayed orientation."""

    count: int
    boxes: tuple[Box, ...]
    width: int
    height: int


ModerationLabel = Literal["safe", "uncertain", "nsfw"]


class ModerationResult(msgspec.Struct, frozen=True, kw_only=True):
    """``score`` is the classifier's NSFW probability 0..1; ``label`` bands it (< 0.2 safe,
    >= 0.8 nsfw, between uncertain: the bands open_nsfw's authors describe)."""

    score: float
    label: ModerationLabel
    model: str = "open_nsfw"


class ModerationPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A room's policy: what to do with an image whose score is at or above ``threshold``."""

    action: Literal["flag", "blur", "refuse"] = "flag"
    threshold: Fraction = 0.8

    def __post_init__(self) -> None:
        if self.action not in ("flag", "blur", "refuse"):
            raise ValueError(
                f"ModerationPolicy.action must be flag, blur or refuse, not {self.action!r}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"ModerationPolicy.threshold must be within 0..1: {self.threshold}")


class ModerationDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The action for one image under a policy: ``allow`` when below the threshold."""

    action: Literal["allow", "flag", "blur", "refuse"]
    score: float
    threshold: float
