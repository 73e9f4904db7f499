"""Request guards shared by every HTTP route: JSON nesting depth, checked before decoding.

msgspec (and so Litestar) decodes nested JSON recursively; about 1,000 levels end in a
``RecursionError`` (an HTTP 500). A JSON body nested deeper than
:data:`hub.protocol.MAX_JSON_DEPTH` is refused with 400 before any route decodes it.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from hub.base.protocol import MAX_JSON_DEPTH, json_too_deep

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_SCANNED_BODY = 10_000_000
"""Litestar's default ``request_max_body_size``: a larger body is passed on unscanned, for
Litestar to refuse (413) as it reads it."""


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return False


def json_depth_middleware(app: ASGIApp) -> ASGIApp:
    """Litestar middleware factory: buffer a JSON request body, refuse it (400) when nested
    deeper than ``MAX_JSON_DEPTH``, else hand it on unchanged (Litestar buffers JSON bodies
    whole anyway). Other requests pass through untouched."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or scope["method"] not in _BODY_METHODS
            or not _is_json(scope)
        ):
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        final: ReceiveMessage | None = None
        more = True
        while more and size <= MAX_SCANNED_BODY:
            message = await receive()
            if message["type"] != "http.request":
                final = message  # the client went away; let the app see it
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if final is None and not more and json_too_deep(body, MAX_JSON_DEPTH):
            detail = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
            payload = b'{"status_code":400,"detail":"' + detail.encode() + b'"}'
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
            await send(start)
            end: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": payload,
                "more_body": False,
            }
            await send(end)
            return
        replayed = False

        async def replay() -> ReceiveMessage:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more}
            if final is not None:
                return final
            return await receive()

        await app(scope, replay, send)

    return middleware
