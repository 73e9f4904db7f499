"""Privacy-aware face detection: counts and boxes, never identities; blurred derived copies.

The model is OpenCV's Haar cascade ``haarcascade_frontalface_alt2``, shipped inside
``opencv-python-headless`` below 5.0 (5.0 dropped the cascade files). Nothing is downloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MissingTool
from .images import encode, flatten, load_image, obscure, working_copy
from .models import DEFAULT_LIMITS, Box, FaceResult, ImageLimits

if TYPE_CHECKING:
    import cv2

CASCADE = "haarcascade_frontalface_alt2.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE = 24  # pixels, in the detection copy


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
    """The cascade, loaded once per process."""
    try:
        import cv2
    except ImportError:
        raise MissingTool(
            "OpenCV is not installed: pip install 'lydian-hub[vision]' (opencv-python-headless<5)"
        ) from None
    path = Path(cv2.data.haarcascades) / CASCADE  # type: ignore[attr-defined]
    if not path.is_file():
        raise MissingTool(f"{CASCADE} not found in OpenCV {cv2.__version__}: it ships below 5.0")
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise MissingTool(f"OpenCV could not load {path}")
    return classifier


def detect_faces(image_bytes: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> FaceResult:
    """Count the frontal faces in an image and box them (in displayed orientation).

    Images longer than ``limits.detect_max_side`` are searched in a scaled-down copy; boxes
    are given in the original's pixels. Raises :class:`BadImage`, :class:`LimitExceeded`
    or :class:`MissingTool`.
    """
    import cv2
    import numpy as np

    classifier = _cascade()
    img = flatten(load_image(image_bytes, limits=limits), "L")
    width, height = img.size
    scale = min(1.0, limits.detect_max_side / max(width, height))
    if scale < 1.0:
        img = img.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    gray = cv2.equalizeHist(np.asarray(img, dtype=np.uint8))
    found = classifier.detectMultiScale(
        gray,
        scaleFactor=SCALE_FACTOR,
        minNeighbors=MIN_NEIGHBORS,
        minSize=(MIN_FACE, MIN_FACE),
    )
    boxes = tuple(
        sorted(
            (
                Box(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
                for x, y, w, h in (tuple(int(v) for v in row) for row in found)
            ),
            key=lambda b: (b.top, b.left),
        )
    )
    return FaceResult(count=len(boxes), boxes=boxes, width=width, height=height)


def grow(box: Box, margin: float, width: int, height: int) -> Box:
    """``box`` enlarged by ``margin`` of its size on every side, clipped to the image."""
    dx, dy = round(box.width * margin), round(box.height * margin)
    left, top = max(0, box.left - dx), max(0, box.top - dy)
    right = min(width, box.left + box.width + dx)
    bottom = min(height, box.top + box.height + dy)
    return Box(left, top, max(0, right - left), max(0, bottom - top))


def blur_faces(
    image_bytes: bytes,
    boxes: Sequence[Box],
    *,
    margin: float = 0.15,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> bytes:
    """A derived copy with each box (grown by ``margin`` to cover hair and ears) pixelated
    and blurred, in the same format as the input. Boxes are ``detect_faces``'s (displayed
    orientation); the copy is stored upright, without the original's metadata (EXIF, GPS),
    and as a still (the first frame of an animation). Raises :class:`BadImage` or
    :class:`LimitExceeded`."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, not {margin}")
    original = load_image(image_bytes, limits=limits)
    img = working_copy(original)
    for box in boxes:
        obscure(img, grow(box, margin, img.width, img.height))
    return encode(img, original.format or "PNG")


def blur_image(image_bytes: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """A derived copy of the whole image obscured (the moderation policy's ``blur``)."""
    original = load_image(image_bytes, limits=limits)
    img = working_copy(original)
    obscure(img, Box(0, 0, img.width, img.height))
    return encode(img, original.format or "PNG")
