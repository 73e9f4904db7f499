"""A test-only plugin with an **in-hub** attachment handler (``run_async``) that does what
the file tells it to.

``aprobe`` takes text files: ``raise`` raises, ``refuse`` raises ``HandlerError``, ``hang``
sleeps past its timeout, ``deaf`` ignores its cancellation and goes on until the test sets
:data:`RELEASE`, ``wait`` waits for :data:`GATE`, ``badtype`` returns something that is not
a ``HandlerResult``, ``badjson`` a result whose data are not JSON types, ``hubnote`` a result
that must not be reused (``reusable=False``); anything else is counted in words, with what
the hub (``HubAPI``) says about the room.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.sdk import AttachmentHandler, AttachmentInfo, HandlerError, HandlerResult, hookimpl

TIMEOUT = 1.5
GATE = asyncio.Event()
"""``wait`` jobs go on once it is set (module level: the hub runs in the test's loop)."""
RELEASE = asyncio.Event()
"""A ``deaf`` job, which ignored its cancellation, ends once it is set."""
LATE: list[str] = []
"""Attachment ids of ``deaf`` jobs that ended after their cancellation."""


async def aprobe(data: bytes, info: AttachmentInfo, hub: Any) -> HandlerResult:
    text = data.decode()
    if text.startswith("raise"):
        raise ValueError("aprobe was told to fail")
    if text.startswith("refuse"):
        raise HandlerError("aprobe refuses this file")
    if text.startswith("hang"):
        await asyncio.sleep(3600)
    if text.startswith("deaf"):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # a badly written handler: goes on regardless
            await RELEASE.wait()
            LATE.append(info.id)
            return HandlerResult(summary="too late")
    if text.startswith("wait"):
        await GATE.wait()
    if text.startswith("badtype"):
        return "not a result"  # type: ignore[return-value]
    if text.startswith("badjson"):
        return HandlerResult(data={"thing": object()})
    if text.startswith("hubnote"):
        return HandlerResult(summary="nothing to say about it yet", reusable=False)
    room = await hub.room(info.room)  # the HubAPI, used from the hub's own loop
    return HandlerResult(
        summary=f"{len(text.split())} words in {room.name}",
        markdown=text,
        data={"size": len(data), "uploaded_by": info.uploaded_by, "sha256": info.sha256},
    )


def not_async(data: bytes, info: AttachmentInfo, hub: Any) -> HandlerResult:
    return HandlerResult()


class AsyncProbePlugin:
    """Registered by the tests with ``add_plugin(server, AsyncProbePlugin(), "aprobe")``."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout

    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [
            AttachmentHandler(
                name="aprobe", media_types=("text/plain",), run_async=aprobe, timeout=self.timeout
            )
        ]


class BothRuns:
    """A handler given both ``run`` and ``run_async``: its plugin stays off."""

    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        from tests.attachment_handlers import probe

        return [AttachmentHandler("both", ("text/*",), run=probe, run_async=aprobe)]


class SyncRunAsync:
    """``run_async`` that is not an ``async`` function: its plugin stays off."""

    @hookimpl
    def lydian_attachment_handlers(self) -> list[AttachmentHandler]:
        return [AttachmentHandler("syncasync", ("text/*",), run_async=not_async)]  # type: ignore[arg-type]
