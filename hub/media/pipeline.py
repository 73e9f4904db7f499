"""The attachment pipeline: plugins' handlers run on uploaded files, off the event loop.

When a message refers to hub uploads (:meth:`hub.core.Hub.post_message`, the one way in for
every door) or someone asks for it (``POST /api/rooms/{room}/attachments/{id}/process``),
each :class:`AttachmentHandler` whose media types match the file and whose plugin is enabled
in the room gets a **job**. Jobs run at most ``attachment_max_jobs`` at a time, each in its
own child process (``attachment_start_method``, ``forkserver`` by default: a fork of a
small server process, never of the hub with its event loop and threads) so that it can be
killed: past the handler's ``timeout`` it is killed and the job fails with "timed out"; its
address space is capped at ``memory_mb`` (``RLIMIT_AS``); a crash is a failed job too. The
message is stored and delivered before any job starts and never waits for one.

A handler may instead be an ``async`` function run **in the hub process** (``run_async``),
for network-bound work such as asking a model: no child process, but the same queueing,
frames, timeout (the coroutine is cancelled and the job fails), result storage and failure
reporting; at most ``attachment_max_async_jobs`` of them run at a time (their own slots,
so a slow model never holds up the CPU-bound jobs). It gets the hub's ``HubAPI``.

Results are stored by content hash and handler name (:meth:`Store.save_attachment_result`):
the same bytes, uploaded again in any room, are not processed again (the room is told the
stored result, ``cached: true``) unless re-processing is asked for. The room sees each job as
``attachment`` frames: ``queued``, ``running``, then ``done`` (with a summary) or ``failed``
(with the error). Handlers come from the ``lydian_attachment_handlers`` hook; this module
knows nothing of plugins: the hub passes ``handlers_for(room)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import inspect
import logging
import multiprocessing
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from hub.base.auth import Identity
from hub.base.protocol import AttachmentEvent
from hub.media.attachments import (
    AttachmentStore,
    StoredAttachment,
    UnknownAttachment,
    UploadRejected,
    file_response,
)
from hub.store.store import AttachmentResult, DerivedAttachment, Store

log = logging.getLogger(__name__)

HANDLER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
MiB = 1024 * 1024
START_METHODS = ("forkserver", "spawn")
"""Never ``fork``: a fork of the hub copies its event loop, threads and sockets mid-use."""
MAX_HASHES = 10_000
"""Content hashes remembered per attachment id (the rest are hashed again when asked)."""


class AttachmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a handler is told about the file it gets (its bytes come separately)."""

    id: str
    filename: str
    media_type: str  # sniffed from the bytes by the hub
    size: int
    sha256: str
    room: str
    settings: dict[str, Any] = {}
    """The plugin's settings for ``room`` (JSON types), for handlers with ``room_settings``."""
    password: str | None = None
    """Only in the job a ``/password`` retry started (never stored, never logged)."""
    uploaded_by: str = ""
    """The user id of the upload's owner (e.g. whom a model call made for the file is
    charged to)."""
    parent: str = ""
    """For a file another handler found inside an upload (``embedded``): that upload's id."""

    def __repr__(self) -> str:  # the password never reaches a log line or a traceback
        secret = ", password=***" if self.password is not None else ""
        return f"AttachmentInfo(id={self.id!r}, filename={self.filename!r}{secret})"


class DerivedFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A file a handler derived from the one it read, returned in :attr:`HandlerResult.files`.

    ``role``: ``"embedded"``, a file found inside it (an image of a PDF page): the hub keeps
    it as an upload of the room and runs the room's handlers on it (one level: files
    embedded in an embedded file are not kept); ``"replacement"``, a copy the room is shown
    instead of the original (faces blurred): the download of the original serves it.
    ``media_type`` is checked against the bytes like any upload (they decide).
    ``priority``: when several handlers made replacements, the highest is served.
    ``meta``: JSON facts about it (``{"page": 3}``), kept with the reference."""

    name: str
    media_type: str
    data: bytes
    role: Literal["embedded", "replacement"]
    priority: int = 0
    meta: dict[str, Any] = {}


class HandlerResult(msgspec.Struct, kw_only=True):
    """What a handler returns: ``summary`` for people (one line or a few), ``markdown`` for
    agents and "copy text", ``data`` anything structured (JSON types), ``warnings``;
    ``files`` it derived (:class:`DerivedFile`), and ``withhold``: a reason for the room
    not to be served the original any more (e.g. refused by a moderation policy).

    ``reusable=False``: the result says something about the hub rather than the file (e.g.
    "no vision model is configured"); it is stored and shown, but the same bytes sent again
    get a new job instead of it."""

    summary: str = ""
    markdown: str = ""
    data: dict[str, Any] = {}
    warnings: list[str] = []
    reusable: bool = True
    files: list[DerivedFile] = []
    withhold: str = ""


class HandlerError(Exception):
    """Raise it from a handler for a failure whose message is shown as it is (bad input)."""


RunFunction = Callable[[bytes, AttachmentInfo], HandlerResult]
AsyncRunFunction = Callable[[bytes, AttachmentInfo, Any], Awaitable[HandlerResult]]
"""``async def run(data, info, hub) -> HandlerResult``, run in the hub process (``hub`` is
the ``HubAPI``)."""


@dataclass(frozen=True)
class AttachmentHandler:
    """One thing a plugin does with attachments of some media types.

    ``run`` is called in a child process: it must be a top-level function of an importable
    module (it is pickled by name). ``media_types`` are patterns: ``"application/pdf"``,
    ``"image/*"``, ``"*/*"``. Limits: ``timeout`` seconds of wall time, ``memory_mb`` of
    address space for the whole child process, ``max_bytes`` of input (larger files fail at
    once, no process started).

    ``run_async`` instead of ``run``: an ``async`` function ``(data, info, hub)`` awaited in
    the hub process, for network-bound work (a model call), never CPU-bound work (it shares
    the hub's event loop: it must not block). ``timeout`` cancels it; ``memory_mb`` does
    not apply.
    """

    name: str
    media_types: tuple[str, ...]
    run: RunFunction | None = None
    timeout: float = 60.0
    memory_mb: int = 1024
    max_bytes: int = 50 * MiB
    description: str = ""
    room_settings: bool = False
    """``run`` gets the plugin's settings for the room in ``info.settings``; a stored result
    is then reused only where the settings are the same (they are kept in its ``data``)."""
    run_async: AsyncRunFunction | None = None

    @property
    def in_hub(self) -> bool:
        """Whether the handler runs in the hub process (``run_async``), not in a child."""
        return self.run_async is not None

    review: bool | Callable[[dict[str, Any]], bool] = False
    """A reviewer: in a room where it reviews, the original is not served until its job on
    the file is done (423 "being reviewed"), nor if the job failed (withheld: fail closed).
    A function gets the plugin's settings for the room (JSON types, called in the hub, so
    keep it quick) and says whether it reviews there (e.g. only under a blur or refuse
    policy)."""

    def reviews(self, settings: dict[str, Any]) -> bool:
        """Whether this handler holds the original back in a room with these settings."""
        if callable(self.review):
            try:
                return bool(self.review(settings))
            except Exception:  # a broken predicate reviews: the safe side
                log.warning("review predicate of %s failed", self.name, exc_info=True)
                return True
        return bool(self.review)

    def matches(self, media_type: str) -> bool:
        media_type = media_type.split(";", 1)[0].strip().lower()
        return any(fnmatch.fnmatchcase(media_type, p.lower()) for p in self.media_types)


def check_handler(handler: Any) -> str | None:
    """Why ``handler`` cannot be used (None if it can): type, name, patterns, limits."""
    if not isinstance(handler, AttachmentHandler):
        return f"expected AttachmentHandler items, got {handler!r:.100}"
    if not HANDLER_NAME.match(handler.name):
        return f"invalid handler name {handler.name!r:.50} (lowercase letters, digits, _ . -)"
    if isinstance(handler.media_types, str) or not handler.media_types:
        return f"handler {handler.name!r}: media_types must be a non-empty list of patterns"
    if handler.timeout <= 0 or handler.memory_mb <= 0 or handler.max_bytes <= 0:
        return f"handler {handler.name!r}: timeout, memory_mb and max_bytes must be positive"
    if (handler.run is None) == (handler.run_async is None):
        return f"handler {handler.name!r}: give either run or run_async, not both or neither"
    if handler.run_async is not None:
        if not inspect.iscoroutinefunction(handler.run_async):
            return f"handler {handler.name!r}: run_async must be an async function"
        return None
    qualname = getattr(handler.run, "__qualname__", "<")
    if qualname.count("<") or "." in qualname:
        return f"handler {handler.name!r}: run must be a top-level function (it is pickled)"
    if not isinstance(handler.review, bool) and not callable(handler.review):
        return f"handler {handler.name!r}: review must be a bool or a function of the settings"
    return None


HandlersFor = Callable[[str], list[tuple[str, AttachmentHandler]]]
"""``room -> [(plugin, handler)]``: the handlers that may run in a room."""
Publish = Callable[[str, AttachmentEvent], Awaitable[None]]
SettingsFor = Callable[[str, str], dict[str, Any]]
"""``(plugin, room) -> settings`` as JSON types: for handlers with ``room_settings``."""
SETTINGS_KEY = "settings"
"""Where a ``room_settings`` handler's result keeps the settings it was made with."""
REUSABLE_KEY = "reusable"
"""``False`` in a stored result's ``data`` when it must not be reused for the same bytes:
``HandlerResult.reusable=False``, or a failure of an in-hub handler (a model that errors or
hangs says nothing about the file)."""
CANCEL_GRACE = 1.0
"""Seconds an in-hub handler cut off at its timeout has to finish its cancellation (close
its connections) before its slot goes to the next job."""
Spawn = Callable[..., Any]


# ------------------------------------------------------------------ the child process


STARTED = b"!"
"""A child's first message: it runs (interpreter started, handler unpickled)."""
START_TIMEOUT = 60.0
"""Seconds a child may take to start (``spawn`` imports the hub; a busy machine is slow)
before the job fails; the handler's own ``timeout`` starts once it runs."""


def _child(conn: Connection, run: RunFunction, path: str, info: AttachmentInfo, mb: int) -> None:
    """A job's child process: cap memory, read the file, run the handler, send the result."""
    import resource

    try:
        conn.send_bytes(STARTED)  # the handler's timeout counts from here, not process start
        resource.setrlimit(resource.RLIMIT_AS, (mb * MiB, mb * MiB))
        data = Path(path).read_bytes()
        result = run(data, info)
        if not isinstance(result, HandlerResult):
            raise TypeError(f"the handler returned {type(result).__name__}, not HandlerResult")
        try:
            encoded = msgspec.msgpack.encode(result)  # derived files' bytes stay bytes
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"the handler's result cannot be sent: {exc}") from None
        conn.send_bytes(b"+" + encoded)
    except MemoryError:
        conn.send_bytes(b"-" + f"exceeded its memory limit of {mb} MB".encode())
    except HandlerError as exc:
        conn.send_bytes(b"-" + str(exc).encode())
    except BaseException as exc:  # anything a handler raises is its failure, reported
        conn.send_bytes(b"-" + f"{type(exc).__name__}: {exc}"[:2000].encode())
    finally:
        conn.close()


async def _readable(fd: int) -> None:
    """Wait until ``fd`` can be read (data or end of file) without blocking the loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Read an in-hub handler's outcome so that one left behind (cut off at its timeout,
    cancelled at shutdown) is never logged as "exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


class JobFailed(Exception):
    """A job that gave no result: timed out, over its memory, crashed, or raised."""


# ------------------------------------------------------------------ the pipeline


ROLES = ("embedded", "replacement")
MAX_DERIVED_FILES = 32
MAX_DERIVED_BYTES = 64 * MiB


@dataclass
class Serving:
    """What the download of an upload serves in its room (:meth:`AttachmentPipeline.serving`).

    ``shown``: ``original``; ``replacement`` (a handler's copy, in ``replacement``);
    ``withheld`` (``reason``, from ``handler``): refused; ``reviewing``: a reviewer has not
    finished with it yet. ``final``: nothing pending could change the answer (the original
    may then be cached by browsers)."""

    shown: str = "original"
    reason: str = ""
    handler: str = ""
    replacement: DerivedAttachment | None = None
    final: bool = True

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shown": self.shown}
        if self.reason:
            out["reason"] = self.reason
        if self.handler:
            out["handler"] = self.handler
        if self.replacement is not None:
            out["replacement"] = self.replacement.id
        return out


@dataclass
class PipelineStats:
    jobs: int = 0  # child processes started
    in_hub: int = 0  # jobs of in-hub (``run_async``) handlers started
    done: int = 0
    failed: int = 0
    cached: int = 0  # results found stored for the same bytes
    derived: int = 0  # derived files kept as uploads
    by_handler: dict[str, int] = field(default_factory=dict)  # jobs per handler


class AttachmentPipeline:
    """Jobs of attachment handlers on hub uploads, bounded and isolated (module docstring)."""

    def __init__(
        self,
        store: Store,
        attachments: AttachmentStore,
        handlers_for: HandlersFor,
        publish: Publish,
        spawn: Spawn,
        *,
        max_jobs: int = 2,
        start_method: str = "forkserver",
        settings_for: SettingsFor | None = None,
        api: Any = None,
        max_async_jobs: int = 4,
        max_derived_files: int = MAX_DERIVED_FILES,
        max_derived_bytes: int = MAX_DERIVED_BYTES,
    ) -> None:
        if start_method not in START_METHODS:
            raise ValueError(
                f"attachment_start_method must be one of {START_METHODS}, not {start_method!r}"
            )
        self.store = store
        self.attachments = attachments
        self.handlers_for = handlers_for
        self.publish = publish
        self.spawn = spawn
        self.slots = asyncio.Semaphore(max(1, max_jobs))
        self.async_slots = asyncio.Semaphore(max(1, max_async_jobs))  # in-hub handlers
        self.api = api  # the HubAPI in-hub handlers get
        self.start_method = start_method
        self.settings_for = settings_for
        self.max_derived_files = max_derived_files
        self.max_derived_bytes = max_derived_bytes
        self.stats = PipelineStats()
        self._context: Any = None
        self._hashes: dict[str, str] = {}  # attachment id -> sha256 (uploads never change)
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._asked: set[tuple[str, str]] = set()  # reviews a download asked for, starting
        self._children: set[multiprocessing.process.BaseProcess] = set()
        self._in_hub: set[asyncio.Task[HandlerResult]] = set()
        self._stopping = False
        self._expected: dict[str, int] = {}  # attachment id -> submissions not yet started
        self._changed = asyncio.Event()  # set (then replaced) when a job or submission ends

    def _ctx(self) -> Any:
        if self._context is None:
            ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":  # children start with the SDK imported
                ctx.set_forkserver_preload(["hub.sdk"])
            self._context = ctx
        return self._context

    async def describe(self, attachment_id: str) -> tuple[StoredAttachment, str]:
        """An upload's sidecar and the sha256 of its bytes (hashed once, in a thread)."""
        meta = await asyncio.to_thread(self.attachments.get, attachment_id)
        digest = self._hashes.get(attachment_id)
        if digest is None:
            digest = await asyncio.to_thread(self._hash, attachment_id)
            if len(self._hashes) >= MAX_HASHES:
                self._hashes.clear()
            self._hashes[attachment_id] = digest
        return meta, digest

    def _hash(self, attachment_id: str) -> str:
        sha = hashlib.sha256()
        with self.attachments.blob_path(attachment_id).open("rb") as f:
            while chunk := f.read(MiB):
                sha.update(chunk)
        return sha.hexdigest()

    async def submit(
        self,
        room: str,
        attachment_ids: list[str],
        *,
        force: bool = False,
        only: set[str] | None = None,
        password: str | None = None,
        parent: str = "",
    ) -> list[str]:
        """Start the jobs for these uploads in ``room``; the ``attachment:handler`` pairs
        queued. Stored results of the same bytes are announced instead, unless ``force``
        (re-processing on request). ``only`` restricts to handlers with these names.
        ``password`` reaches the handlers' child processes in :class:`AttachmentInfo` for
        these jobs only: it is never stored, logged or published. ``parent``: these are
        files embedded in that upload of ``room`` (they may be kept in the room where the
        same bytes were first processed); their own embedded files are not processed."""
        handlers = [(p, h) for p, h in self.handlers_for(room) if only is None or h.name in only]
        if not handlers:
            return []
        queued: list[str] = []
        for attachment_id in attachment_ids:
            try:
                meta, digest = await self.describe(attachment_id)
            except (UnknownAttachment, FileNotFoundError):
                continue
            if meta.room != room and not (parent and meta.parent):
                continue
            info = AttachmentInfo(
                id=meta.id,
                filename=meta.name,
                media_type=meta.media_type,
                size=meta.size,
                sha256=digest,
                room=room,
                password=password,
                uploaded_by=meta.uploaded_by,
                parent=parent,
            )
            for plugin, handler in handlers:
                if not handler.matches(meta.media_type):
                    continue
                job_info = info
                if handler.room_settings and self.settings_for is not None:
                    settings = self.settings_for(plugin, room)
                    job_info = msgspec.structs.replace(info, settings=settings)
                review = handler.reviews(self._settings(plugin, handler, room))
                key = (digest, handler.name)
                if key in self._inflight and password is None:  # being processed right now
                    queued.append(f"{attachment_id}:{handler.name}")
                    continue
                if not force:
                    stored = await self.store.attachment_results(digest, handler.name)
                    if (
                        stored
                        and (
                            not handler.room_settings
                            or stored[0].data.get(SETTINGS_KEY) == job_info.settings
                        )
                        and stored[0].data.get(REUSABLE_KEY, True)
                        and await asyncio.to_thread(self._files_present, stored[0])
                    ):
                        self.stats.cached += 1
                        await self._announce(
                            info, handler.name, stored[0], cached=True, review=review
                        )
                        await self._embedded(info, stored[0])
                        continue
                await self._event(info, handler.name, "queued", review=review)
                task = self.spawn(self._job(plugin, handler, job_info), name=f"attachment:{key[1]}")
                self._inflight[key] = task
                task.add_done_callback(lambda _t, key=key: self._job_ended(key))
                queued.append(f"{attachment_id}:{handler.name}")
        return queued

    def submit_soon(self, room: str, attachment_ids: list[str]) -> Awaitable[list[str]]:
        """:meth:`submit`, to be run as a task (a message just posted): the uploads count as
        awaited by :meth:`wait_results` from this call on, before the task has started, so
        that an agent answering the same message waits for their jobs."""
        for attachment_id in attachment_ids:
            self._expected[attachment_id] = self._expected.get(attachment_id, 0) + 1
        return self._submit_expected(room, attachment_ids)

    async def _submit_expected(self, room: str, attachment_ids: list[str]) -> list[str]:
        try:
            return await self.submit(room, attachment_ids)
        finally:
            for attachment_id in attachment_ids:
                left = self._expected.get(attachment_id, 0) - 1
                if left > 0:
                    self._expected[attachment_id] = left
                else:
                    self._expected.pop(attachment_id, None)
            self._notify()

    def _notify(self) -> None:
        """Wake every :meth:`wait_results` (each checks again what it waits for)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def pending(self, attachment_id: str, digest: str) -> list[str]:
        """What an upload still waits for in this process: the handlers with a job on its
        bytes, or ``["(queued)"]`` while the submission of a message carrying it has not
        run yet; empty when nothing is running."""
        running = sorted(name for sha, name in self._inflight if sha == digest)
        if running:
            return running
        return ["(queued)"] if attachment_id in self._expected else []

    async def wait_results(self, attachment_id: str, timeout: float) -> list[AttachmentResult]:
        """Every stored result of an upload's bytes once no job on them is queued or running
        in this process (at once if none is), like :meth:`results`. Event-driven: woken
        when a job or a submission ends. :class:`TimeoutError` (naming the handlers still
        at work) past ``timeout`` seconds; :class:`UnknownAttachment` for no such upload."""
        try:
            meta, digest = await self.describe(attachment_id)
        except FileNotFoundError:
            raise UnknownAttachment(attachment_id) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            changed = self._changed  # taken before checking: a change meanwhile sets it
            busy = self.pending(attachment_id, digest)
            if not busy:
                return await self.store.attachment_results(digest)
            try:
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
            except TimeoutError:
                raise TimeoutError(
                    f"{meta.name}: still being processed after {timeout:g} s ({', '.join(busy)})"
                ) from None

    async def results(self, attachment_id: str) -> tuple[StoredAttachment, list[AttachmentResult]]:
        """An upload and every result stored for its bytes; :class:`UnknownAttachment`."""
        try:
            meta, digest = await self.describe(attachment_id)
        except FileNotFoundError:
            raise UnknownAttachment(attachment_id) from None
        return meta, await self.store.attachment_results(digest)

    def _job_ended(self, key: tuple[str, str]) -> None:
        self._inflight.pop(key, None)
        self._notify()

    async def _event(self, info: AttachmentInfo, handler: str, status: str, **fields: Any) -> None:
        frame = AttachmentEvent(
            room=info.room,
            attachment=info.id,
            handler=handler,
            status=status,
            filename=info.filename,
            parent=info.parent,
            **fields,
        )
        try:
            await self.publish(info.room, frame)
        except Exception:  # a lost progress frame never fails the job
            log.warning("could not publish %s/%s %s", info.id, handler, status, exc_info=True)

    async def _announce(
        self,
        info: AttachmentInfo,
        handler: str,
        result: AttachmentResult,
        cached: bool = False,
        review: bool = False,
    ) -> None:
        replacement = _replacement(result)
        await self._event(
            info,
            handler,
            result.status,
            summary=result.summary,
            error=result.error,
            cached=cached,
            review=review,
            withheld=result.withhold if result.status == "done" else "",
            replacement=replacement.id if replacement else "",
            embedded=sum(f.role == "embedded" for f in result.files),
        )

    def _settings(self, plugin: str, handler: AttachmentHandler, room: str) -> dict[str, Any]:
        """The plugin's settings for ``room`` (for ``review`` predicates), {} without any."""
        if self.settings_for is None or handler.review in (True, False):
            return {}
        return self.settings_for(plugin, room)

    def _files_present(self, result: AttachmentResult) -> bool:
        """Whether every file a stored result refers to is still kept (else: run again)."""
        return all(self.attachments.blob_path(f.id).exists() for f in result.files)

    async def _embedded(self, info: AttachmentInfo, result: AttachmentResult) -> None:
        """The room's handlers on the files embedded in ``info``'s file (one level only)."""
        if info.parent or result.status != "done" or self._stopping:
            return
        ids = [f.id for f in result.files if f.role == "embedded"]
        if ids:
            self.spawn(
                self.submit(info.room, ids, parent=info.id), name=f"attach-embedded:{info.id}"
            )

    async def _keep_files(
        self, handler: AttachmentHandler, info: AttachmentInfo, out: HandlerResult
    ) -> tuple[list[DerivedAttachment], list[str], str]:
        """Keep what a handler derived as uploads of the room, within the bounds: the
        references, warnings, and a reason to withhold the original when a replacement
        could not be kept (its handler meant the original not to be shown)."""
        kept: list[DerivedAttachment] = []
        warnings: list[str] = []
        withhold = ""
        total = 0
        # replacements first: they decide what the room sees; then in the handler's order
        for file in sorted(out.files, key=lambda f: f.role != "replacement"):
            name = file.name[:200] or "derived"
            why = ""
            if file.role == "embedded" and info.parent:
                why = "files embedded in an embedded file are not processed (one level only)"
            elif len(kept) >= self.max_derived_files:
                why = f"over the limit of {self.max_derived_files} derived files per result"
            elif total + len(file.data) > self.max_derived_bytes:
                why = f"over the limit of {self.max_derived_bytes:,} bytes of derived files"
            if not why:
                try:
                    meta = await self.attachments.save_derived(
                        info.room,
                        name,
                        file.data,
                        file.media_type,
                        parent=info.id,
                        role=file.role,
                        handler=handler.name,
                    )
                except UploadRejected as exc:
                    why = exc.detail
                else:
                    total += len(file.data)
                    self.stats.derived += 1
                    kept.append(
                        DerivedAttachment(
                            id=meta.id,
                            name=meta.name,
                            media_type=meta.media_type,
                            size=meta.size,
                            sha256=await asyncio.to_thread(_sha256, file.data),
                            role=file.role,
                            url=meta.public().url,
                            priority=file.priority,
                            meta=file.meta,
                        )
                    )
                    continue
            warnings.append(f"derived file {name!r} ({file.role}) not kept: {why}")
            if file.role == "replacement" and not withhold:
                withhold = f"the copy to show instead ({name}) could not be kept: {why}"
        return kept, warnings, withhold

    async def _job(self, plugin: str, handler: AttachmentHandler, info: AttachmentInfo) -> None:
        async with self.async_slots if handler.in_hub else self.slots:
            review = handler.reviews(self._settings(plugin, handler, info.room))
            await self._event(info, handler.name, "running", review=review)
            started = time.monotonic()
            result = AttachmentResult(
                handler=handler.name,
                status="failed",
                sha256=info.sha256,
                plugin=plugin,
                media_type=info.media_type,
                attachment_id=info.id,
            )
            try:
                out = await self._run(handler, info)
            except JobFailed as exc:
                result.error = str(exc)
            except Exception as exc:  # the pipeline's own trouble: still a clear failure
                log.exception("attachment job %s on %s failed", handler.name, info.id)
                result.error = f"could not run the handler: {type(exc).__name__}: {exc}"
            else:
                result.status = "done"
                result.summary, result.markdown = out.summary, out.markdown
                result.data, result.warnings = out.data, list(out.warnings)
                if handler.room_settings:
                    result.data = {**result.data, SETTINGS_KEY: info.settings}
                if not out.reusable:
                    result.data = {**result.data, REUSABLE_KEY: False}
                result.withhold = out.withhold[:1000]
                if out.files:
                    result.files, notes, withhold = await self._keep_files(handler, info, out)
                    result.warnings.extend(notes)
                    result.withhold = result.withhold or withhold
            if result.status == "failed" and handler.in_hub:
                result.data = {REUSABLE_KEY: False}
            result.seconds = round(time.monotonic() - started, 3)
            await self._finish(info, handler, result, plugin)
        await self._embedded(info, result)

    async def _finish(
        self,
        info: AttachmentInfo,
        handler: AttachmentHandler,
        result: AttachmentResult,
        plugin: str = "",
    ) -> None:
        """Count, store and announce a job's end (before its slot goes to the next job)."""
        if self._stopping:  # killed by the shutdown: not the file's fault, nothing to keep
            return
        if result.status == "done":
            self.stats.done += 1
        else:
            self.stats.failed += 1
            log.info("attachment %s: handler %s failed: %s", info.id, handler.name, result.error)
        try:
            await self.store.save_attachment_result(result)
        except Exception:
            log.warning("could not store the result of %s on %s", handler.name, info.id)
        review = handler.reviews(self._settings(plugin, handler, info.room))
        await self._announce(info, handler.name, result, review=review)

    async def _run(self, handler: AttachmentHandler, info: AttachmentInfo) -> HandlerResult:
        """One child process: its result, or :class:`JobFailed` saying why there is none."""
        if info.size > handler.max_bytes:
            raise JobFailed(
                f"the file has {info.size:,} bytes; {handler.name} takes at most "
                f"{handler.max_bytes:,}"
            )
        if handler.run_async is not None:
            return await self._run_in_hub(handler, handler.run_async, info)
        assert handler.run is not None  # check_handler: one of run and run_async
        ctx = self._ctx()
        reader, writer = ctx.Pipe(duplex=False)
        path = str(self.attachments.blob_path(info.id))
        proc = ctx.Process(
            target=_child,
            args=(writer, handler.run, path, info, handler.memory_mb),
            name=f"lydian-attachment-{handler.name}",
            daemon=True,
        )
        self.stats.jobs += 1
        self.stats.by_handler[handler.name] = self.stats.by_handler.get(handler.name, 0) + 1
        try:
            await asyncio.to_thread(proc.start)
        except Exception as exc:  # e.g. ``run`` could not be pickled
            reader.close()
            writer.close()
            raise JobFailed(f"could not start the handler: {type(exc).__name__}: {exc}") from None
        writer.close()  # the child holds its end: EOF here once it exits
        self._children.add(proc)
        try:
            try:
                await asyncio.wait_for(_readable(reader.fileno()), START_TIMEOUT)
            except TimeoutError:
                raise JobFailed(f"the handler did not start within {START_TIMEOUT:g} s") from None
            try:
                raw = reader.recv_bytes()
                if raw == STARTED:
                    try:
                        await asyncio.wait_for(_readable(reader.fileno()), handler.timeout)
                    except TimeoutError:
                        raise JobFailed(f"timed out after {handler.timeout:g} s") from None
                    raw = reader.recv_bytes()
            except (EOFError, OSError):
                await self._reap(proc)
                raise JobFailed(self._crash_reason(proc, handler)) from None
        finally:
            reader.close()
            await self._reap(proc)
            self._children.discard(proc)
            with contextlib.suppress(Exception):
                proc.close()
        if raw[:1] == b"-":
            raise JobFailed(raw[1:].decode(errors="replace"))
        try:
            return msgspec.msgpack.decode(raw[1:], type=HandlerResult)
        except msgspec.DecodeError as exc:  # ValidationError included: garbage ``files``
            raise JobFailed(f"the handler's result is not valid: {exc}") from None

    async def _run_in_hub(
        self, handler: AttachmentHandler, run: AsyncRunFunction, info: AttachmentInfo
    ) -> HandlerResult:
        """An in-hub handler's result, or :class:`JobFailed`: past its ``timeout`` it is
        cancelled (given :data:`CANCEL_GRACE` to finish) and the job fails."""
        self.stats.in_hub += 1
        self.stats.by_handler[handler.name] = self.stats.by_handler.get(handler.name, 0) + 1
        data = await asyncio.to_thread(self.attachments.blob_path(info.id).read_bytes)

        async def call() -> HandlerResult:
            return await run(data, info, self.api)

        task = asyncio.create_task(call(), name=f"attachment-in-hub:{handler.name}")
        task.add_done_callback(_retrieved)
        self._in_hub.add(task)
        try:
            done, _ = await asyncio.wait({task}, timeout=handler.timeout)
            if not done:  # never waits on the handler's cooperation for longer than the grace
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_GRACE)
                raise JobFailed(f"timed out after {handler.timeout:g} s")
        except asyncio.CancelledError:  # the hub stops: the handler stops with it
            task.cancel()
            raise
        finally:
            self._in_hub.discard(task)
        try:
            result = task.result()
        except HandlerError as exc:
            raise JobFailed(str(exc)) from None
        except asyncio.CancelledError:
            raise JobFailed("the handler was cancelled") from None
        except Exception as exc:  # anything a handler raises is its failure, reported
            raise JobFailed(f"{type(exc).__name__}: {exc}"[:2000]) from None
        if not isinstance(result, HandlerResult):
            raise JobFailed(f"the handler returned {type(result).__name__}, not HandlerResult")
        try:  # checked as a child's result is: what is stored is what was returned
            return msgspec.msgpack.decode(msgspec.msgpack.encode(result), type=HandlerResult)
        except (TypeError, msgspec.MsgspecError) as exc:
            raise JobFailed(f"the handler's result is not valid: {exc}") from None

    @staticmethod
    def _crash_reason(proc: multiprocessing.process.BaseProcess, handler: AttachmentHandler) -> str:
        code = proc.exitcode
        if code is not None and code < 0:
            return f"the handler crashed (signal {-code}; memory limit {handler.memory_mb} MB)"
        return f"the handler exited without a result (exit code {code})"

    async def _reap(self, proc: multiprocessing.process.BaseProcess) -> None:
        """Kill ``proc`` if it still runs and wait for it to exit, off the event loop."""
        if proc.exitcode is None:
            try:
                await asyncio.wait_for(_readable(proc.sentinel), 1.0)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    proc.kill()
                await _readable(proc.sentinel)
        proc.join(0)

    async def serving(self, meta: StoredAttachment) -> Serving:
        """What the download of upload ``meta`` serves, by the results of the handlers
        enabled in its room that take its type: a withheld original (a result's
        ``withhold``, or a reviewer's failed job: fail closed) before one being reviewed (a
        reviewer's job queued or running, or not run yet with the room's settings) before a
        replacement (highest ``priority``, then handler name) before the original. A
        replacement copy is itself always served as it is. A review a download finds missing
        is started (a file a message carries, not one still pending)."""
        if meta.role == "replacement":
            return Serving()
        handlers = [(p, h) for p, h in self.handlers_for(meta.room) if h.matches(meta.media_type)]
        if not handlers:
            return Serving()
        _, digest = await self.describe(meta.id)
        stored = {r.handler: r for r in await self.store.attachment_results(digest)}
        withheld: Serving | None = None
        reviewing: list[str] = []
        replacements: list[tuple[int, str, DerivedAttachment]] = []
        final = True
        for plugin, handler in handlers:
            settings = self._settings(plugin, handler, meta.room)
            result = stored.get(handler.name)
            if result is not None and handler.room_settings and self.settings_for is not None:
                if result.data.get(SETTINGS_KEY) != self.settings_for(plugin, meta.room):
                    result = None  # made with another room's settings: not this room's answer
            busy = (digest, handler.name) in self._inflight
            final = final and result is not None and not busy
            if handler.reviews(settings) and (result is None or busy):
                reviewing.append(handler.name)
                continue
            if result is None:
                continue
            if result.status == "failed":
                if handler.reviews(settings) and withheld is None:
                    withheld = Serving(
                        "withheld",
                        f"the review by {handler.name} failed ({result.error}); the file "
                        "is withheld until it is processed again",
                        handler.name,
                    )
                continue
            if result.withhold and withheld is None:
                withheld = Serving("withheld", result.withhold, handler.name)
            replacement = _replacement(result)
            if replacement is not None:
                replacements.append((replacement.priority, handler.name, replacement))
        if withheld is not None:
            return withheld
        if reviewing:
            await self._ask_review(meta, digest, reviewing)
            names = ", ".join(reviewing)
            return Serving("reviewing", f"being reviewed ({names}); try again shortly", names)
        if replacements:
            copy = max(replacements, key=lambda r: (r[0], r[1]))
            if not await asyncio.to_thread(self.attachments.blob_path(copy[2].id).exists):
                reason = "the copy to show instead is missing; have the file processed again"
                return Serving("withheld", reason, copy[1])
            return Serving("replacement", handler=copy[1], replacement=copy[2], final=final)
        return Serving(final=final)

    async def _ask_review(self, meta: StoredAttachment, digest: str, names: list[str]) -> None:
        """Start the reviews a download found missing (once; not for pending uploads)."""
        keys = {(digest, n) for n in names} - set(self._inflight) - self._asked
        if not keys or await asyncio.to_thread(self.attachments.is_pending, meta.id):
            return
        self._asked |= keys

        async def ask() -> None:
            try:
                room = meta.room
                await self.submit(room, [meta.id], only={n for _, n in keys}, parent=meta.parent)
            finally:
                self._asked -= keys

        self.spawn(ask(), name=f"attachment-review:{meta.id}")

    def stop(self) -> None:
        """Kill every running child and cancel every in-hub handler (hub shutdown); their
        jobs store nothing."""
        self._stopping = True
        for proc in list(self._children):
            with contextlib.suppress(Exception):
                proc.kill()
        for task in list(self._in_hub):
            task.cancel()


def _replacement(result: AttachmentResult) -> DerivedAttachment | None:
    """The copy a result asks to be shown instead of the original (the first, if several)."""
    if result.status != "done":
        return None
    return next((f for f in result.files if f.role == "replacement"), None)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ HTTP routes


async def _visible_attachment(
    request: Request[Identity, Any, Any], room_id: str, attachment_id: str
) -> tuple[Any, str, StoredAttachment]:
    hub = request.app.state.hub
    room = await hub.visible_room(room_id, request.user)  # else 404/403 (app handler)
    missing = NotFoundException(f"no attachment {attachment_id!r} in {room.id!r}")
    try:
        meta = await asyncio.to_thread(hub.attachment_pipeline.attachments.get, attachment_id)
    except UnknownAttachment:
        raise missing from None
    if meta.room != room.id:
        raise missing
    return hub, room.id, meta


@get("/api/rooms/{room_id:str}/attachments/{attachment_id:str}/results", tags=["attachments"])
async def attachment_results(
    request: Request[Identity, Any, Any], room_id: FromPath[str], attachment_id: FromPath[str]
) -> dict[str, Any]:
    """What the attachment handlers made of this upload (``done`` or ``failed`` each), what
    its download serves (``shown``), and, under each derived file, that file's own results
    (an image embedded in a PDF, read by OCR)."""
    hub, _, _ = await _visible_attachment(request, room_id, attachment_id)
    pipeline: AttachmentPipeline = hub.attachment_pipeline
    meta, results = await pipeline.results(attachment_id)
    out = []
    for result in results:
        item = msgspec.to_builtins(result)
        for ref, file in zip(result.files, item.get("files", ()), strict=False):
            found = await pipeline.store.attachment_results(ref.sha256)
            file["results"] = [msgspec.to_builtins(r) for r in found]
        out.append(item)
    shown = await pipeline.serving(meta)
    return {"attachment": meta.public(), "shown": shown.public(), "results": out}


@get("/api/rooms/{room_id:str}/attachments/{attachment_id:str}/original", tags=["attachments"])
async def attachment_original(
    request: Request[Identity, Any, Any], room_id: FromPath[str], attachment_id: FromPath[str]
) -> Any:
    """The original bytes of an upload whatever the room's handlers decided (a replacement
    shown, withheld, under review): for its uploader and admins only, never cached."""
    hub, _, meta = await _visible_attachment(request, room_id, attachment_id)
    if meta.uploaded_by != request.user.id and not request.user.is_admin:
        raise HTTPException(
            status_code=403, detail="only the uploader or an admin may fetch the original"
        )
    path = hub.attachment_pipeline.attachments.blob_path(attachment_id)
    data = await asyncio.to_thread(path.read_bytes)
    response = file_response(meta, data, cache=False)
    response.headers["Lydian-Shown"] = "original"
    return response


class ProcessRequest(msgspec.Struct, forbid_unknown_fields=True):
    handlers: list[str] | None = None  # only these (default: every handler enabled here)


@post(
    "/api/rooms/{room_id:str}/attachments/{attachment_id:str}/process",
    status_code=HTTP_202_ACCEPTED,
    tags=["attachments"],
)
async def process_attachment(
    request: Request[Identity, Any, Any],
    room_id: FromPath[str],
    attachment_id: FromPath[str],
    data: JSONBody[ProcessRequest | None] = None,
) -> dict[str, Any]:
    """Run the handlers enabled in the room on this upload again (e.g. after enabling one);
    progress arrives as ``attachment`` frames. For its uploader and admins (it costs CPU)."""
    hub, room, meta = await _visible_attachment(request, room_id, attachment_id)
    if meta.uploaded_by != request.user.id and not request.user.is_admin:
        raise HTTPException(
            status_code=403, detail="only the uploader or an admin may process this file again"
        )
    only = set(data.handlers) if data and data.handlers else None
    queued = await hub.process_attachment(room, attachment_id, handlers=only)
    if not queued:
        raise HTTPException(
            status_code=409,
            detail="no attachment handler enabled in this room takes this file"
            + (f" (asked for {sorted(only)})" if only else ""),
        )
    return {"queued": [q.split(":", 1)[1] for q in queued]}


class PasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    password: str

    def __repr__(self) -> str:
        return "PasswordRequest(password=***)"


@post(
    "/api/rooms/{room_id:str}/attachments/{attachment_id:str}/password",
    status_code=HTTP_202_ACCEPTED,
    tags=["attachments"],
)
async def attachment_password(
    request: Request[Identity, Any, Any],
    room_id: FromPath[str],
    attachment_id: FromPath[str],
    data: JSONBody[PasswordRequest],
) -> dict[str, Any]:
    """Process an encrypted upload again with its password (``{"password": ...}``), for its
    uploader and admins. The password is used for these jobs only: never stored or logged."""
    hub, room, meta = await _visible_attachment(request, room_id, attachment_id)
    queued = await retry_with_password(hub, room, meta, request.user, data.password)
    return {"queued": [q.split(":", 1)[1] for q in queued]}


class PasswordRefused(Exception):
    """A password retry that cannot run: ``status`` (403, 400, 409) and a clear detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def retry_with_password(
    hub: Any, room: str, meta: StoredAttachment, identity: Identity, password: str
) -> list[str]:
    """The checks of ``/password`` and its REST route, then the jobs (HTTPException)."""
    try:
        return await password_jobs(hub, room, meta, identity, password)
    except PasswordRefused as exc:
        raise HTTPException(status_code=exc.status, detail=exc.detail) from None


async def password_jobs(
    hub: Any, room: str, meta: StoredAttachment, identity: Identity, password: str
) -> list[str]:
    """Re-run the handlers enabled in ``room`` on ``meta`` with ``password`` (once, for
    these jobs): only its uploader or an admin; :class:`PasswordRefused` otherwise."""
    if meta.uploaded_by != identity.id and not identity.is_admin:
        raise PasswordRefused(403, "only the uploader or an admin may give this file's password")
    if not password or len(password) > 1024:
        raise PasswordRefused(400, "the password must be 1 to 1024 characters")
    queued: list[str] = await hub.process_attachment(room, meta.id, password=password)
    if not queued:
        raise PasswordRefused(409, "no attachment handler enabled in this room takes this file")
    return queued


ROUTES = [attachment_results, attachment_original, process_attachment, attachment_password]
