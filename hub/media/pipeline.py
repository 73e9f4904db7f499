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
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from hub.base.auth import Identity
from hub.base.protocol import AttachmentEvent
from hub.media.attachments import AttachmentStore, StoredAttachment, UnknownAttachment
from hub.store.store import AttachmentResult, Store

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

    def __repr__(self) -> str:  # the password never reaches a log line or a traceback
        secret = ", password=***" if self.password is not None else ""
        return f"AttachmentInfo(id={self.id!r}, filename={self.filename!r}{secret})"


class HandlerResult(msgspec.Struct, kw_only=True):
    """What a handler returns: ``summary`` for people (one line or a few), ``markdown`` for
    agents and "copy text", ``data`` anything structured (JSON types), ``warnings``.

    ``reusable=False``: the result says something about the hub rather than the file (e.g.
    "no vision model is configured"); it is stored and shown, but the same bytes sent again
    get a new job instead of it."""

    summary: str = ""
    markdown: str = ""
    data: dict[str, Any] = {}
    warnings: list[str] = []
    reusable: bool = True


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
        conn.send_bytes(b"+" + msgspec.json.encode(result))
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


@dataclass
class PipelineStats:
    jobs: int = 0  # child processes started
    in_hub: int = 0  # jobs of in-hub (``run_async``) handlers started
    done: int = 0
    failed: int = 0
    cached: int = 0  # results found stored for the same bytes
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
        self.stats = PipelineStats()
        self._context: Any = None
        self._hashes: dict[str, str] = {}  # attachment id -> sha256 (uploads never change)
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}
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
    ) -> list[str]:
        """Start the jobs for these uploads in ``room``; the ``attachment:handler`` pairs
        queued. Stored results of the same bytes are announced instead, unless ``force``
        (re-processing on request). ``only`` restricts to handlers with these names.
        ``password`` reaches the handlers' child processes in :class:`AttachmentInfo` for
        these jobs only: it is never stored, logged or published."""
        handlers = [(p, h) for p, h in self.handlers_for(room) if only is None or h.name in only]
        if not handlers:
            return []
        queued: list[str] = []
        for attachment_id in attachment_ids:
            try:
                meta, digest = await self.describe(attachment_id)
            except (UnknownAttachment, FileNotFoundError):
                continue
            if meta.room != room:
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
            )
            for plugin, handler in handlers:
                if not handler.matches(meta.media_type):
                    continue
                job_info = info
                if handler.room_settings and self.settings_for is not None:
                    settings = self.settings_for(plugin, room)
                    job_info = msgspec.structs.replace(info, settings=settings)
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
                    ):
                        self.stats.cached += 1
                        await self._announce(info, handler.name, stored[0], cached=True)
                        continue
                await self._event(info, handler.name, "queued")
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
            **fields,
        )
        try:
            await self.publish(info.room, frame)
        except Exception:  # a lost progress frame never fails the job
            log.warning("could not publish %s/%s %s", info.id, handler, status, exc_info=True)

    async def _announce(
        self, info: AttachmentInfo, handler: str, result: AttachmentResult, cached: bool = False
    ) -> None:
        await self._event(
            info,
            handler,
            result.status,
            summary=result.summary,
            error=result.error,
            cached=cached,
        )

    async def _job(self, plugin: str, handler: AttachmentHandler, info: AttachmentInfo) -> None:
        async with self.async_slots if handler.in_hub else self.slots:
            await self._event(info, handler.name, "running")
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
            if result.status == "failed" and handler.in_hub:
                result.data = {REUSABLE_KEY: False}
            result.seconds = round(time.monotonic() - started, 3)
            await self._finish(info, handler, result)

    async def _finish(
        self, info: AttachmentInfo, handler: AttachmentHandler, result: AttachmentResult
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
        await self._announce(info, handler.name, result)

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
            return msgspec.json.decode(raw[1:], type=HandlerResult)
        except msgspec.ValidationError as exc:
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
        try:  # JSON types only, as a child's result is: what is stored is what was returned
            return msgspec.json.decode(msgspec.json.encode(result), type=HandlerResult)
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

    def stop(self) -> None:
        """Kill every running child and cancel every in-hub handler (hub shutdown); their
        jobs store nothing."""
        self._stopping = True
        for proc in list(self._children):
            with contextlib.suppress(Exception):
                proc.kill()
        for task in list(self._in_hub):
            task.cancel()


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
    """What the attachment handlers made of this upload (``done`` or ``failed`` each)."""
    hub, _, _ = await _visible_attachment(request, room_id, attachment_id)
    meta, results = await hub.attachment_pipeline.results(attachment_id)
    return {
        "attachment": meta.public(),
        "results": [msgspec.to_builtins(r) for r in results],
    }


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


ROUTES = [attachment_results, process_attachment, attachment_password]
