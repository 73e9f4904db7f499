"""A test-only plugin with one attachment handler that does what the file tells it to.

``probe`` takes text files: ``raise`` raises, ``hang`` sleeps past its timeout, ``memory``
allocates far beyond its memory limit, ``exit`` ends its process without a result; anything
else is counted in words. ``run`` functions are top level: the pipeline pickles them by name.
"""

from __future__ import annotations

import os
import time

from hub.sdk import (
    AttachmentHandler,
    AttachmentInfo,
    DerivedFile,
    HandlerError,
    HandlerResult,
    hookimpl,
)

TIMEOUT = 2.0
MEMORY_MB = 512


def probe(data: bytes, info: AttachmentInfo) -> HandlerResult:
    text = data.decode()
    if text.startswith("raise"):
        raise ValueError("probe was told to fail")
    if text.startswith("hang"):
        time.sleep(3600)
    if text.startswith("memory"):
        hog = bytearray(4 * MEMORY_MB * 1024 * 1024)
        return HandlerResult(summary=f"allocated {len(hog)} bytes")
    if text.startswith("exit"):
        os._exit(3)
    return HandlerResult(
        summary=f"{len(text.split())} words",
        markdown=text,
        data={"pid": os.getpid(), "sha256": info.sha256, "filename": info.filename},
    )


class ProbePlugin:
    """Registered by the tests with ``add_plugin(server, ProbePlugin(), "probe")``."""

    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [
            AttachmentHandler(
                name="probe",
                media_types=("text/plain",),
                run=probe,
                timeout=TIMEOUT,
                memory_mb=MEMORY_MB,
            )
        ]


class BadHandlers:
    """A plugin whose handler cannot run in a child process (a lambda cannot be pickled)."""

    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [AttachmentHandler("bad", ("text/*",), run=lambda data, info: HandlerResult())]


# ------------------------------------------------------------------ derived files

REVIEW_TIMEOUT = 60.0


def derive(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """``derive`` takes text files and derives what the first line says:

    ``embed N`` (N text files, each saying ``embed 1 ...``: a loop if the hub let it), ``replace``
    (a redacted copy), ``withhold``, ``garbage`` (``files`` that are not files), ``badrole``,
    ``binary`` (bytes no upload may hold), ``big N SIZE`` (N files of SIZE bytes each)."""
    words = data.decode().split()
    command, args = words[0], words[1:]
    summary = f"derive {command}" + (f" (from {info.parent})" if info.parent else "")
    if command == "embed":
        files = [
            DerivedFile(
                name=f"part{i}.txt",
                media_type="text/plain",
                data=f"embed 1 part {i}\n".encode(),
                role="embedded",
                meta={"index": i},
            )
            for i in range(int(args[0]))
        ]
        return HandlerResult(summary=summary, files=files)
    if command == "replace":
        copy = DerivedFile(
            name="redacted.txt",
            media_type="text/plain",
            data=b"redacted copy\n",
            role="replacement",
        )
        return HandlerResult(summary=summary, files=[copy])
    if command == "withhold":
        return HandlerResult(summary=summary, withhold="withheld as the file said")
    if command == "garbage":
        return HandlerResult(summary=summary, files=["not a file"])  # type: ignore[list-item]
    if command == "badrole":
        odd = DerivedFile(name="x.txt", media_type="text/plain", data=b"x", role="other")  # type: ignore[arg-type]
        return HandlerResult(summary=summary, files=[odd])
    if command == "binary":
        blob = DerivedFile(
            name="blob.bin",
            media_type="application/octet-stream",
            data=b"\x00\x01\x02\x03 not a supported file",
            role="embedded",
        )
        return HandlerResult(summary=summary, files=[blob])
    if command == "big":
        count, size = int(args[0]), int(args[1])
        files = [
            DerivedFile(
                name=f"big{i}.txt", media_type="text/plain", data=b"b" * size, role="embedded"
            )
            for i in range(count)
        ]
        return HandlerResult(summary=summary, files=files)
    return HandlerResult(summary=summary)


def review(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """``review`` (a reviewer) takes text files: ``review PATH`` reads the named pipe PATH
    (blocking until the test writes to it: the job stays ``running`` until then), and fails
    if it reads ``fail``; any other file passes at once."""
    words = data.decode().split()
    verdict = "pass"
    if words[:1] == ["review"] and len(words) > 1:
        with open(words[1]) as pipe:
            verdict = pipe.read().strip()
    if verdict == "fail":
        raise HandlerError("the reviewer was told to fail")
    return HandlerResult(summary=f"reviewed: {verdict}")


class DeriverPlugin:
    """``add_plugin(server, DeriverPlugin(), "deriver")``: the ``derive`` handler."""

    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [AttachmentHandler("derive", ("text/plain",), run=derive, timeout=30.0)]


class ReviewerPlugin:
    """``add_plugin(server, ReviewerPlugin(), "reviewer")``: the ``review`` handler."""

    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [
            AttachmentHandler(
                "review", ("text/plain",), run=review, timeout=REVIEW_TIMEOUT, review=True
            )
        ]
