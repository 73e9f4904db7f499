"""The vision library as attachment handlers: ``ocr``, ``faces`` and ``moderation`` on images,
and ``describe`` through a vision model when one is configured (``describe.py``).

Enable it in a room with ``/plugins enable vision``; from then on every PNG, JPEG, GIF, WebP,
BMP or TIFF image a message carries there is read (Tesseract), searched for faces (counts and
boxes only, never who) and scored for sexual content, each in its own child process. What a
room wants is in the plugin's settings (``[plugins.vision]``, overridable per room in
``[plugins.vision.rooms.ROOM]``): the OCR languages, whether a faces-blurred copy is made,
and the moderation policy. Every handler gets these settings (``room_settings``): a result
is reused only in rooms with the same settings, and records the ones it was made with.

Derived copies (faces blurred, or the whole image under a ``blur`` policy) are returned as
``replacement`` files (:class:`DerivedFile`): the hub keeps them and serves them in the
room instead of the original; a ``refuse`` decision withholds the original
(``HandlerResult.withhold``). ``faces`` (with ``blur_faces``) and ``moderation`` (under
``blur`` or ``refuse``) are reviewers there: the original is not served before they are done,
nor if they fail. A copy larger than :data:`MAX_DERIVED_BYTES` is not made; the original is
then withheld rather than shown.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from hub.sdk import (
    AttachmentHandler,
    AttachmentInfo,
    DerivedFile,
    HandlerError,
    HandlerResult,
    HubAPI,
    PerRoom,
    hookimpl,
)

from . import LYDIAN_REQUIREMENTS as _REQUIRED
from . import describe
from .errors import MissingLanguage, VisionError
from .faces import blur_faces, blur_image, detect_faces
from .models import ImageLimits, ModerationPolicy
from .moderation import decide_moderation, moderate
from .ocr import ocr

LYDIAN_REQUIREMENTS = list(_REQUIRED)  # ``lydian doctor`` reads it here, on the plugin module
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")
LIMITS = ImageLimits(timeout=45.0)  # one Tesseract run; OCR makes up to three
MAX_BYTES = LIMITS.max_bytes
MAX_DERIVED_BYTES = 8 * 1024 * 1024
"""A derived (blurred) copy larger than this is not kept; the original is withheld instead."""
WHOLE_IMAGE_PRIORITY = 10
"""A whole-image blur (moderation) is served before a faces-blurred copy of the same file."""

Language = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class VisionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[plugins.vision]``; every field may be overridden per room."""

    languages: Annotated[tuple[Language, ...], msgspec.Meta(min_length=1), PerRoom] = ("eng",)
    blur_faces: Annotated[bool, PerRoom] = False
    moderation_action: Annotated[Literal["flag", "blur", "refuse"], PerRoom] = "flag"
    moderation_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0), PerRoom] = 0.8
    describe_agent: Annotated[str, PerRoom] = ""
    """The agent whose vision model describes images (``describe``); empty: the first agent
    enabled in the room whose model takes images."""


def settings_of(info: AttachmentInfo) -> VisionSettings:
    """The room's settings the hub handed the job (defaults if none)."""
    try:
        return msgspec.convert(info.settings, VisionSettings)
    except msgspec.ValidationError as exc:
        raise HandlerError(f"invalid vision settings: {exc}") from None


def derived(
    image: bytes, info: AttachmentInfo, label: str, priority: int = 0
) -> tuple[list[DerivedFile], str]:
    """A blurred copy as a replacement file, or (too large to keep) a reason to withhold the
    original: the room asked for it not to be shown as it is."""
    if len(image) > MAX_DERIVED_BYTES:
        return [], (
            f"the {label} copy ({len(image):,} bytes) is larger than {MAX_DERIVED_BYTES:,} "
            "bytes and was not kept; the original is withheld"
        )
    stem, dot, ext = info.filename.rpartition(".")
    name = f"{stem}.{label}.{ext}" if dot else f"{info.filename}.{label}"
    copy = DerivedFile(
        name=name, media_type=info.media_type, data=image, role="replacement", priority=priority
    )
    return [copy], ""


def reviews_faces(settings: dict[str, Any]) -> bool:
    """``faces`` holds the original back where the room wants faces blurred."""
    return bool(settings.get("blur_faces", False))


def reviews_moderation(settings: dict[str, Any]) -> bool:
    """``moderation`` holds the original back under a ``blur`` or ``refuse`` policy."""
    return settings.get("moderation_action", "flag") != "flag"


def run_ocr(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """Read the image's text in the room's languages (orientation corrected)."""
    settings = settings_of(info)
    try:
        read = ocr(data, languages=settings.languages, limits=LIMITS)
    except MissingLanguage as exc:
        raise HandlerError(str(exc)) from None
    except VisionError as exc:
        raise HandlerError(str(exc)) from None
    words = len(read.text.split())
    langs = "+".join(read.languages)
    if words:
        summary = f"OCR ({langs}): {words} words, {read.mean_confidence:.0%} confidence"
    else:
        summary = f"OCR ({langs}): no text found"
    if read.rotation:
        summary += f", turned {read.rotation}°"
    return HandlerResult(
        summary=summary,
        markdown=read.text,
        data={
            "languages": list(read.languages),
            "words": words,
            "mean_confidence": round(read.mean_confidence, 4),
            "orientation": read.orientation,
            "rotation": read.rotation,
            "width": read.width,
            "height": read.height,
        },
    )


def run_faces(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """Count and box the faces; a blurred copy when the room asks for one."""
    settings = settings_of(info)
    try:
        found = detect_faces(data, limits=LIMITS)
        files: list[DerivedFile] = []
        withhold = ""
        if settings.blur_faces and found.count:
            blurred = blur_faces(data, found.boxes, limits=LIMITS)
            files, withhold = derived(blurred, info, "faces-blurred")
    except VisionError as exc:
        raise HandlerError(str(exc)) from None
    summary = f"{found.count} face{'s' * (found.count != 1)}"
    if files:
        summary += ", blurred copy made"
    elif withhold:
        summary += ", withheld (the blurred copy was too large)"
    return HandlerResult(
        summary=summary,
        data={
            "count": found.count,
            "boxes": [list(msgspec.to_builtins(b)) for b in found.boxes],
            "width": found.width,
            "height": found.height,
            "blurred": bool(files),
        },
        files=files,
        withhold=withhold,
    )


def run_moderation(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """Score the image and decide under the room's policy (allow, flag, blur or refuse)."""
    settings = settings_of(info)
    policy = ModerationPolicy(
        action=settings.moderation_action, threshold=settings.moderation_threshold
    )
    try:
        scored = moderate(data, limits=LIMITS)
        decision = decide_moderation(policy, scored)
        files: list[DerivedFile] = []
        withhold = ""
        if decision.action == "blur":
            blurred = blur_image(data, limits=LIMITS)
            files, withhold = derived(blurred, info, "blurred", WHOLE_IMAGE_PRIORITY)
    except VisionError as exc:
        raise HandlerError(str(exc)) from None
    summary = f"{scored.label} (score {scored.score:.2f})"
    if decision.action != "allow":
        verb = {"flag": "flagged", "blur": "blurred", "refuse": "refused"}[decision.action]
        summary = f"{verb} by the room's policy: {summary} at or above {decision.threshold:.2f}"
    if decision.action == "refuse":
        withhold = f"refused by the room's moderation policy ({scored.label}, score "
        withhold += f"{scored.score:.2f} at or above {decision.threshold:.2f})"
    return HandlerResult(
        summary=summary,
        data={
            "score": round(scored.score, 6),
            "label": scored.label,
            "model": scored.model,
            "policy": {"action": policy.action, "threshold": policy.threshold},
            "decision": decision.action,
        },
        files=files,
        withhold=withhold,
    )


async def run_describe(data: bytes, info: AttachmentInfo, hub: HubAPI) -> HandlerResult:
    """Describe the image with the room's vision model (in the hub process: a model call)."""
    return await describe.describe_image(data, info, hub, settings_of(info).describe_agent)


@hookimpl
def lydian_plugin_settings() -> type[msgspec.Struct]:
    return VisionSettings


@hookimpl
def lydian_attachment_handlers() -> list[AttachmentHandler]:
    common: dict[str, Any] = {
        "media_types": MEDIA_TYPES,
        "max_bytes": MAX_BYTES,
        "room_settings": True,
    }
    return [
        AttachmentHandler(
            name="ocr",
            run=run_ocr,
            timeout=150.0,
            memory_mb=1536,
            description="the text of an image (Tesseract, orientation corrected)",
            **common,
        ),
        AttachmentHandler(
            name="faces",
            run=run_faces,
            timeout=60.0,
            memory_mb=1536,
            description="face count and boxes (never identities); a blurred copy if asked",
            review=reviews_faces,
            **common,
        ),
        AttachmentHandler(
            name="moderation",
            run=run_moderation,
            timeout=60.0,
            memory_mb=2048,
            description="sexual-content score and label; the room's flag/blur/refuse policy",
            review=reviews_moderation,
            **common,
        ),
        AttachmentHandler(
            name=describe.NAME,
            media_types=describe.MEDIA_TYPES,
            run_async=run_describe,
            timeout=describe.TIMEOUT,
            max_bytes=describe.MAX_BYTES,
            room_settings=True,
            description="a description and the objects seen, by the room's vision model",
        ),
    ]
