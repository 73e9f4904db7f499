"""A test-only plugin with one attachment handler that does what the file tells it to.

``probe`` takes text files: ``raise`` raises, ``hang`` sleeps past its timeout, ``memory``
allocates far beyond its memory limit, ``exit`` ends its process without a result; anything
else is counted in words. ``run`` functions are top level: the pipeline pickles them by name.
"""

from __future__ import annotations

import os
import time

from hub.sdk import AttachmentHandler, AttachmentInfo, HandlerResult, hookimpl

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
