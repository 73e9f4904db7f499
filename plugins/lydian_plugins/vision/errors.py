"""Typed errors of the vision functions: each has a stable ``code`` and survives pickling."""

from __future__ import annotations

import re

_PACK_NAME = re.compile(r"[^a-z0-9]+")


class VisionError(Exception):
    """Base class: a clear, per-attachment error; ``code`` is stable for the wire."""

    code = "vision_error"


class BadImage(VisionError):
    """Not an image, an unsupported format, or corrupt/truncated image data."""

    code = "bad_image"


class LimitExceeded(VisionError):
    """The input or the work exceeds an :class:`~.models.ImageLimits` bound."""

    code = "limit_exceeded"


class MissingTool(VisionError):
    """A program or model the function needs is not installed."""

    code = "missing_tool"


class MissingLanguage(MissingTool):
    """A Tesseract language pack is not installed; names the Debian package to install."""

    code = "missing_language"

    def __init__(self, language: str) -> None:
        self.language = language
        self.package = debian_package(language)
        super().__init__(
            f"Tesseract language pack {language!r} is not installed: apt-get install {self.package}"
        )

    def __reduce__(self) -> tuple[type[MissingLanguage], tuple[str]]:
        return (type(self), (self.language,))


def debian_package(language: str) -> str:
    """Debian's package for a Tesseract language (``chi_sim`` -> ``tesseract-ocr-chi-sim``)."""
    return "tesseract-ocr-" + _PACK_NAME.sub("-", language.lower()).strip("-")
