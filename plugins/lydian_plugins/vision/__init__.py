"""Vision for attachments (issue 15): OCR, privacy-aware face detection and moderation.

Pure functions, bytes in and msgspec Structs out, with no hub imports and no shared state
but per-process caches (the face cascade, the moderation model): made to run in the
attachment pipeline's process pool. Hostile input gets typed errors (:class:`BadImage`,
:class:`LimitExceeded`, :class:`MissingTool`, :class:`MissingLanguage`), and image
dimensions are checked from the header before any pixel is decoded.

The plugin is :mod:`.plugin` (entry point ``vision``): these functions as the ``ocr``,
``faces`` and ``moderation`` attachment handlers.

Needs the ``vision`` extra (``pip install 'lydian-hub[vision]'``) and, for OCR, Debian's
``tesseract-ocr`` plus a ``tesseract-ocr-LANG`` package per language.
"""

from .errors import BadImage, LimitExceeded, MissingLanguage, MissingTool, VisionError
from .faces import blur_faces, blur_image, detect_faces
from .images import probe_image
from .models import (
    DEFAULT_LIMITS,
    Box,
    FaceResult,
    ImageInfo,
    ImageLimits,
    ModerationDecision,
    ModerationPolicy,
    ModerationResult,
    OcrLine,
    OcrResult,
    OcrWord,
)
from .moderation import decide_moderation, moderate
from .ocr import installed_languages, ocr

# checked by ``lydian doctor`` (through .plugin); faces and moderation need none
LYDIAN_REQUIREMENTS = ["tesseract"]

__all__ = [
    "DEFAULT_LIMITS",
    "LYDIAN_REQUIREMENTS",
    "BadImage",
    "Box",
    "FaceResult",
    "ImageInfo",
    "ImageLimits",
    "LimitExceeded",
    "MissingLanguage",
    "MissingTool",
    "ModerationDecision",
    "ModerationPolicy",
    "ModerationResult",
    "OcrLine",
    "OcrResult",
    "OcrWord",
    "VisionError",
    "blur_faces",
    "blur_image",
    "decide_moderation",
    "detect_faces",
    "installed_languages",
    "moderate",
    "ocr",
    "probe_image",
]
