"""Uploaded files (images, audio clips, documents) that messages carry as attachments.

Each upload lives in ``<data_dir>/attachments/<id>/`` as ``blob`` plus a ``meta.json``
sidecar. The media type is sniffed from the bytes, never taken on trust from the client:
anything that is not a known image, audio or document format is refused (415), and so is
anything above ``max_upload_bytes`` (413). Ids are 128-bit random, so a download URL is a
capability: it is served without a token (``<img src>`` cannot send one) with
``X-Content-Type-Options: nosniff`` and a sandboxing CSP, inline only for images and audio.

Retention: a new upload carries a ``pending`` marker file until a message refers to it
(:meth:`AttachmentStore.resolve` removes the marker before the message is stored). A
periodic sweep deletes uploads still pending after ``upload_orphan_grace``; uploads without
the marker (referenced, or kept from before the marker existed) are never deleted. The sweep
first renames an orphan aside and deletes it only if it is still pending there (else puts it
back), so a message that refers to it at that very moment either keeps it or is refused
(``unknown attachment``), never stored with a deleted upload; several replicas sweeping one
shared directory at once delete each orphan once and harmlessly miss it otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
)
from litestar.params import FromPath
from litestar.response import Response
from litestar.status_codes import HTTP_201_CREATED
from litestar.types import ControllerRouterHandler

from hub.access.limits import check_http, client_address, role_of
from hub.base.auth import Identity
from hub.base.config import Settings
from hub.base.protocol import Attachment

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
PENDING = "pending"
"""Marker file of an upload no message refers to yet."""
TRASH = ".trash"
"""Prefix of an orphan renamed aside for deletion: ``.trash.<id>.<unix time>.<random>``."""
TRASH_STALE = 300.0
"""A trash entry older than this was left by a sweep that died; the next sweep finishes it."""
MAX_NAME_CHARS = 200
FORM_OVERHEAD = 64 * 1024
"""Room for multipart headers and boundaries on top of the file itself."""

_OFFICE = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
}
_TEXT = {".md": "text/markdown", ".markdown": "text/markdown", ".csv": "text/csv"}


class UploadRejected(Exception):
    """An upload the hub will not keep; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class UnknownAttachment(LookupError):
    """No attachment with that id (in that room)."""


class StoredAttachment(msgspec.Struct):
    """The sidecar kept next to each upload."""

    id: str
    name: str
    media_type: str
    size: int
    room: str
    uploaded_by: str
    created_at: float
    parent: str = ""  # a derived file: the upload it was derived from
    role: str = ""  # a derived file: ``embedded`` or ``replacement``
    handler: str = ""  # a derived file: the handler that made it

    def public(self) -> Attachment:
        return Attachment(
            id=self.id,
            name=self.name,
            media_type=self.media_type,
            size=self.size,
            url=f"/api/attachments/{self.id}",
        )


def media_kind(media_type: str) -> str:
    """``image``, ``audio`` or ``document``: what a multimodal plugin would do with it."""
    major = media_type.split("/", 1)[0]
    return major if major in ("image", "audio") else "document"


def sniff_media_type(head: bytes, filename: str, declared: str | None = None) -> str | None:
    """The media type of a file from its first bytes (and its extension for zip/text)."""
    suffix = Path(filename).suffix.lower()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "audio/mpeg"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:  # AAC in ADTS frames
        return "audio/aac"
    audio_hint = (declared or "").startswith("audio/") or suffix in _AUDIO_SUFFIXES
    if head[4:8] == b"ftyp" and (head[8:11] in (b"M4A", b"M4B") or audio_hint):
        return "audio/mp4"  # other brands (isom, mp42: Safari's recorder) may be video too
    if head.startswith(b"\x1a\x45\xdf\xa3") and (audio_hint or _webm_audio_only(head)):
        return "audio/webm"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return _OFFICE.get(suffix)
    if _is_text(head):
        return _TEXT.get(suffix, "text/plain")
    return None


_AUDIO_SUFFIXES = {".m4a", ".m4b", ".weba", ".opus", ".oga", ".ogg", ".mp3", ".wav", ".aac"}
_WEBM_AUDIO = (b"A_OPUS", b"A_VORBIS")
_WEBM_VIDEO = (b"V_VP8", b"V_VP9", b"V_AV1", b"V_MPEG4", b"V_MPEGH")


def _webm_audio_only(head: bytes) -> bool:
    """A WebM (Matroska) file whose track codecs, within ``head``, are audio only: a voice
    recording labelled ``video/webm`` or ``application/octet-stream`` is still audio."""
    return (
        b"webm" in head[:64]
        and any(codec in head for codec in _WEBM_AUDIO)
        and not any(codec in head for codec in _WEBM_VIDEO)
    )


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is fine
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def clean_name(filename: str | None) -> str:
    """A display name safe to show and to put in ``Content-Disposition``."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = "".join(
        c for c in unicodedata.normalize("NFC", base) if unicodedata.category(c)[0] != "C"
    )
    base = base.strip().strip(".")
    return base[:MAX_NAME_CHARS] or "file"


class AttachmentStore:
    """Uploads on disk under one directory."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @classmethod
    def for_settings(cls, settings: Settings) -> AttachmentStore:
        return cls(Path(settings.data_dir) / "attachments", settings.max_upload_bytes)

    def _dir(self, attachment_id: str) -> Path:
        if not ID_PATTERN.match(attachment_id):
            raise UnknownAttachment(attachment_id)
        return self.root / attachment_id

    async def save(
        self,
        room: str,
        uploaded_by: str,
        filename: str | None,
        data: bytes,
        declared: str | None = None,
    ) -> StoredAttachment:
        """Check and keep one upload; raise :class:`UploadRejected` when it cannot be kept."""
        meta = self._checked(room, uploaded_by, filename, data, declared)
        await asyncio.to_thread(self._write, meta, data)
        return meta

    async def save_derived(
        self,
        room: str,
        filename: str,
        data: bytes,
        declared: str,
        *,
        parent: str,
        role: str,
        handler: str,
    ) -> StoredAttachment:
        """Keep a file a handler derived from upload ``parent`` (same checks as an upload:
        size, sniffed type; :class:`UploadRejected`). It is referenced from the start (by the
        handler's result), so never swept as an orphan."""
        meta = self._checked(room, f"handler:{handler}", filename, data, declared)
        meta = msgspec.structs.replace(meta, parent=parent, role=role, handler=handler)
        await asyncio.to_thread(self._write, meta, data, False)
        return meta

    def _checked(
        self, room: str, uploaded_by: str, filename: str | None, data: bytes, declared: str | None
    ) -> StoredAttachment:
        if not data:
            raise UploadRejected(400, "the file is empty")
        if len(data) > self.max_bytes:
            raise UploadRejected(
                413, f"file of {len(data)} bytes exceeds the limit of {self.max_bytes}"
            )
        name = clean_name(filename)
        media_type = sniff_media_type(data[:4096], name, declared)
        if media_type is None:
            raise UploadRejected(415, f"{name!r} is not a supported image, audio clip or document")
        return StoredAttachment(
            id=secrets.token_urlsafe(16),
            name=name,
            media_type=media_type,
            size=len(data),
            room=room,
            uploaded_by=uploaded_by,
            created_at=time.time(),
        )

    def _write(self, meta: StoredAttachment, data: bytes, pending: bool = True) -> None:
        folder = self._dir(meta.id)
        folder.mkdir(parents=True, exist_ok=False)
        if pending:  # first: an upload that dies half-written is an orphan too
            (folder / PENDING).touch()
        (folder / "blob").write_bytes(data)
        tmp = folder / "meta.json.tmp"
        tmp.write_bytes(msgspec.json.encode(meta))
        tmp.replace(folder / "meta.json")  # the sidecar appears only once the blob is complete

    def get(self, attachment_id: str) -> StoredAttachment:
        """The sidecar of one upload (blocking file I/O: from async code, in a thread)."""
        try:
            raw = (self._dir(attachment_id) / "meta.json").read_bytes()
        except FileNotFoundError:
            raise UnknownAttachment(attachment_id) from None
        return msgspec.json.decode(raw, type=StoredAttachment)

    def read(self, attachment_id: str) -> tuple[StoredAttachment, bytes]:
        """The sidecar and the bytes of one upload (blocking: call it in a thread)."""
        return self.get(attachment_id), self.blob_path(attachment_id).read_bytes()

    def is_pending(self, attachment_id: str) -> bool:
        """Whether no message refers to this upload yet (blocking: call it in a thread)."""
        return (self._dir(attachment_id) / PENDING).exists()

    def blob_path(self, attachment_id: str) -> Path:
        return self._dir(attachment_id) / "blob"

    def resolve(self, ids: list[str], room: str) -> list[Attachment]:
        """The attachments a message in ``room`` refers to; unknown or foreign ids raise.

        Resolving marks them referenced (never deleted as orphans): call it just before the
        message is stored. Blocking file I/O: :meth:`hub.core.Hub.post_message` runs it in a
        worker thread.
        """
        found = []
        for attachment_id in ids:
            meta = self.get(attachment_id)
            if meta.room != room:
                raise UnknownAttachment(attachment_id)
            found.append(meta.public())
        for attachment_id in ids:  # all valid: now mark them
            folder = self._dir(attachment_id)
            (folder / PENDING).unlink(missing_ok=True)
            if not (folder / "meta.json").exists():  # swept as an orphan just before
                raise UnknownAttachment(attachment_id)
        return found

    def sweep(self, grace: float, now: float | None = None) -> int:
        """Delete uploads no message referred to within ``grace`` seconds; returns how many.

        Safe to run in several processes on one directory at once (module docstring).
        """
        now = time.time() if now is None else now
        deleted = 0
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.startswith(TRASH + "."):
                deleted += self._finish_trash(entry.name, now)
            elif ID_PATTERN.match(entry.name) and self._orphan_since(entry.path) < now - grace:
                deleted += self._delete_orphan(entry.name, now)
        return deleted

    def _orphan_since(self, path: str) -> float:
        """When the upload at ``path`` was made, if it is an orphan; +inf if it is not."""
        try:
            return os.stat(os.path.join(path, PENDING)).st_mtime
        except FileNotFoundError:
            pass
        if os.path.exists(os.path.join(path, "meta.json")):
            return float("inf")  # referenced (or uploaded before markers existed)
        try:  # neither marker nor sidecar: debris of an upload that died at once
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return float("inf")

    def _delete_orphan(self, attachment_id: str, now: float) -> int:
        trash = self.root / f"{TRASH}.{attachment_id}.{int(now)}.{secrets.token_hex(4)}"
        try:
            os.rename(self.root / attachment_id, trash)
        except FileNotFoundError:
            return 0  # another replica got there first
        return self._empty_trash(trash, attachment_id)

    def _empty_trash(self, trash: Path, attachment_id: str) -> int:
        """Delete ``trash`` if it is still an orphan; put it back if a message took it."""
        if (trash / PENDING).exists() or not (trash / "meta.json").exists():
            shutil.rmtree(trash, ignore_errors=True)
            return 1
        with contextlib.suppress(OSError):  # referenced while we were renaming it
            os.rename(trash, self.root / attachment_id)
        return 0

    def _finish_trash(self, name: str, now: float) -> int:
        """A trash entry left by a sweep that died (or another replica's, in flight)."""
        parts = name.split(".")
        if len(parts) != 5 or not ID_PATTERN.match(parts[2]) or not parts[3].isdigit():
            return 0
        if now - int(parts[3]) < TRASH_STALE:
            return 0
        return self._empty_trash(self.root / name, parts[2])


async def sweep_orphans_forever(settings: Settings) -> None:
    """Run :meth:`AttachmentStore.sweep` every ``upload_sweep_interval`` (a hub task)."""
    store = AttachmentStore.for_settings(settings)
    while True:
        try:
            deleted = await asyncio.to_thread(store.sweep, settings.upload_orphan_grace)
        except OSError:
            log.warning("orphan upload sweep failed", exc_info=True)
        else:
            if deleted:
                log.info("deleted %d orphan uploads", deleted)
        await asyncio.sleep(settings.upload_sweep_interval)


# ------------------------------------------------------------------ HTTP routes


async def _upload(request: Request[Identity, Any, Any], room_id: str) -> Attachment:
    hub = request.app.state.hub
    room = await hub.visible_room(room_id, request.user)  # else 404/403 (app handler)
    limits, role, user = hub.limits, role_of(request.user), request.user.id
    address = client_address(request.scope)
    await check_http(limits, "uploads_address", role, address, "uploads from this address")
    await check_http(limits, "uploads", role, user, "uploads")
    form = await request.form()  # malformed: 400, too big: 413 (request_max_body_size)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(
            status_code=400, detail="send the file as multipart/form-data in a field named 'file'"
        )
    try:
        data = await upload.read(hub.settings.max_upload_bytes + 1)
    finally:
        await upload.close()
    if 0 < len(data) <= hub.settings.max_upload_bytes:  # bytes per day, per user and room
        size = len(data)
        await check_http(limits, "upload_bytes", role, user, "upload bytes today", size)
        await check_http(
            limits, "upload_bytes_room", role, room.id, "upload bytes in this room today", size
        )
    store = AttachmentStore.for_settings(hub.settings)
    try:
        meta = await store.save(
            room.id, request.user.id, upload.filename, data, upload.content_type
        )
    except UploadRejected as exc:
        raise HTTPException(status_code=exc.status, detail=exc.detail) from None
    return meta.public()


SHOWN_HEADER = "Lydian-Shown"
"""On a download: ``original`` or ``replacement`` (a handler's copy shown instead)."""


def file_response(
    meta: StoredAttachment, data: bytes, *, media_type: str | None = None, cache: bool = True
) -> Response[bytes]:
    """An upload's bytes with the download headers (name, nosniff, sandbox, caching)."""
    media_type = media_type or meta.media_type
    disposition = "inline" if media_kind(media_type) in ("image", "audio") else "attachment"
    quoted = json.dumps(meta.name.encode("ascii", "replace").decode())
    return Response(
        content=data,
        media_type=media_type,
        headers={
            "Content-Disposition": f"{disposition}; filename={quoted}; "
            f"filename*=UTF-8''{quote(meta.name)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'",
            "Cache-Control": "private, max-age=31536000, immutable" if cache else "no-store",
        },
    )


def refusal_response(status: int, shown: str, detail: str, **extra: Any) -> Response[Any]:
    """A download the room's handlers hold back: ``{"status_code", "shown", "detail"}``."""
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if status == 423:
        headers["Retry-After"] = "2"
    return Response(
        content={"status_code": status, "shown": shown, "detail": detail, **extra},
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@get("/api/attachments/{attachment_id:str}", exclude_from_auth=True, tags=["attachments"])
async def download_attachment(
    request: Request[Any, Any, Any], attachment_id: FromPath[str]
) -> Response[Any]:
    """The stored file; its unguessable id is the capability to read it.

    What the room's attachment handlers decided comes first (``hub.media.pipeline``,
    ``AttachmentPipeline.serving``): a replacement copy is served in place of the original
    (``Lydian-Shown: replacement``), a withheld original is refused with 451, one a reviewer
    has not finished with yet with 423 (``Retry-After``); each with a JSON reason."""
    hub = request.app.state.hub
    store = AttachmentStore.for_settings(hub.settings)
    try:  # sidecar and bytes read in a worker thread, never on the event loop
        meta = await asyncio.to_thread(store.get, attachment_id)
        decision = await hub.attachment_pipeline.serving(meta)
        if decision.shown == "withheld":
            return refusal_response(451, "withheld", decision.reason, handler=decision.handler)
        if decision.shown == "reviewing":
            return refusal_response(423, "reviewing", decision.reason, handler=decision.handler)
        if decision.shown == "replacement":
            copy = decision.replacement
            data = await asyncio.to_thread(store.blob_path(copy.id).read_bytes)
            response = file_response(meta, data, media_type=copy.media_type, cache=False)
            response.headers[SHOWN_HEADER] = "replacement"
            return response
        data = await asyncio.to_thread(store.blob_path(attachment_id).read_bytes)
    except (UnknownAttachment, FileNotFoundError):
        raise NotFoundException(f"no attachment {attachment_id!r}") from None
    # an original under review may be replaced later: only a final decision is cached long
    response = file_response(meta, data, cache=decision.final)
    response.headers[SHOWN_HEADER] = "original"
    return response


def attachment_routes(settings: Settings) -> list[ControllerRouterHandler]:
    """The upload and download handlers, the upload's body capped by ``max_upload_bytes``."""

    @post(
        "/api/rooms/{room_id:str}/attachments",
        status_code=HTTP_201_CREATED,
        request_max_body_size=settings.max_upload_bytes + FORM_OVERHEAD,
        tags=["attachments"],
        summary="Upload an attachment",
    )
    async def upload_attachment(
        request: Request[Identity, Any, Any], room_id: FromPath[str]
    ) -> Attachment:
        """Upload one file (multipart field ``file``) to send with a message in this room."""
        return await _upload(request, room_id)

    return [upload_attachment, download_attachment]
