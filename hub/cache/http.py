"""HTTP response caching: per-route rules, strong ETags, ``If-None-Match`` → 304.

Rules match the request path (a regular expression, full match). A ``private`` rule keys
entries by the authenticated user and roles (``scope["user"]``, set by the JWT middleware
that runs first), answers ``Cache-Control: private, no-cache`` and ``Vary: Authorization``, so
one user's response is never served to another. ``no_store`` rules (AI routes, streams,
sockets) are never cached and say ``no-store``; no rule can cache them. Cached entries
are dropped by the rule's events (templated from the path's named groups), the same
events the query cache uses (``room:<id>``, ``rooms``), and by ``user:<id>``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Message,
    Receive,
    Scope,
    Send,
)

from hub.cache.errors import CacheError
from hub.cache.manager import CacheManager

log = logging.getLogger(__name__)

NEVER_CACHED = (r"/v1(/.*)?", r".*/stream(s)?(/.*)?", r"/ws", r"/api/cache/.*", r".*/ws")
"""AI routes, streams, sockets and the cache's own stats: ``no-store``, whatever the rules."""

_DROPPED_HEADERS = {b"content-length", b"date", b"etag", b"cache-control", b"vary", b"x-cache"}


class HttpCacheRule(msgspec.Struct, frozen=True):
    """How responses of matching GET routes are cached."""

    name: str
    pattern: str
    ttl: float = 60.0
    strategy: str = "ttl"
    private: bool = True
    events: tuple[str, ...] = ()
    max_age: int = 0
    """Seconds a client may reuse the response without asking; 0 = revalidate (no-cache)."""
    no_store: bool = False


class CachedResponse(msgspec.Struct, array_like=True):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: str


DEFAULT_RULES = (
    HttpCacheRule("rooms", r"/api/rooms/?", events=("rooms",)),
    HttpCacheRule("room", r"/api/rooms/(?P<room_id>[^/]+)", events=("room:{room_id}", "rooms")),
    HttpCacheRule(
        "room-members", r"/api/rooms/(?P<room_id>[^/]+)/members", events=("room:{room_id}",)
    ),
    HttpCacheRule(
        "room-history", r"/api/rooms/(?P<room_id>[^/]+)/messages", events=("room:{room_id}",)
    ),
)


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(header: str, etag: str) -> bool:
    """``If-None-Match`` uses the weak comparison (RFC 9110 13.1.2)."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class HttpCache:
    """Rules plus the cache manager; the middleware reads it from ``app.state.hub``."""

    def __init__(self, cache: CacheManager, rules: Iterable[HttpCacheRule] = DEFAULT_RULES):
        self.cache = cache
        self.rules: list[tuple[re.Pattern[str], HttpCacheRule]] = []
        self._never = [re.compile(p) for p in NEVER_CACHED]
        for rule in rules:
            self.add_rule(rule)

    def add_rule(self, rule: HttpCacheRule) -> None:
        """Add (or replace, by name) a rule; plugins call this for their own routes."""
        pattern = re.compile(rule.pattern)
        self.rules = [(p, r) for p, r in self.rules if r.name != rule.name]
        self.rules.append((pattern, rule))
        self.cache.configure(f"http-{rule.name}", strategy=rule.strategy, ttl=rule.ttl)

    def match(self, path: str) -> tuple[HttpCacheRule | None, dict[str, str], bool]:
        """``(rule, path groups, never_cache)`` for ``path``."""
        if any(p.fullmatch(path) for p in self._never):
            return None, {}, True
        for pattern, rule in self.rules:
            found = pattern.fullmatch(path)
            if found:
                return rule, found.groupdict(), rule.no_store
        return None, {}, False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _with(headers: list[tuple[bytes, bytes]], **extra: str) -> list[tuple[bytes, bytes]]:
    out = [(k, v) for k, v in headers if k.lower() not in _DROPPED_HEADERS]
    out += [(k.replace("_", "-").encode(), v.encode()) for k, v in extra.items()]
    return out


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes, more: bool = False) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": body, "more_body": more}


def _cache_control(rule: HttpCacheRule) -> str:
    scope = "private" if rule.private else "public"
    return f"{scope}, max-age={rule.max_age}" if rule.max_age else f"{scope}, no-cache"


def _vary(rule: HttpCacheRule, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    existing = [v.decode() for k, v in headers if k.lower() == b"vary"]
    if rule.private:
        existing.append("Authorization")
    return {"vary": ", ".join(dict.fromkeys(existing))} if existing else {}


async def _send_response(
    send: Send, rule: HttpCacheRule, resp: CachedResponse, inm: str | None, state: str, head: bool
) -> None:
    headers = {"etag": resp.etag, "cache_control": _cache_control(rule), "x_cache": state}
    headers.update(_vary(rule, resp.headers))
    if inm is not None and etag_matches(inm, resp.etag):
        start = _with([h for h in resp.headers if h[0].lower() != b"content-type"], **headers)
        await send(_start(304, start))
        await send(_body(b""))
        return
    start = _with(resp.headers, content_length=str(len(resp.body)), **headers)
    await send(_start(resp.status, start))
    await send(_body(b"" if head else resp.body))


def http_cache_middleware(app: ASGIApp) -> ASGIApp:
    """Litestar middleware factory (listed after the JWT middleware, so the user is known)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        hub = getattr(scope["app"].state, "hub", None)
        http: HttpCache | None = getattr(hub, "http_cache", None)
        if http is None:
            await app(scope, receive, send)
            return
        rule, groups, never = http.match(scope["path"])
        if never:
            await app(scope, receive, _no_store(send))
            return
        if rule is None:
            await app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await app(scope, receive, send)
            return
        user = getattr(scope.get("user"), "id", None)
        if rule.private and not user:
            await app(scope, receive, _no_store(send))
            return
        await _cached(http, rule, groups, user, app, scope, receive, send)

    return middleware


def _no_store(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k != b"cache-control"]
            message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
        await send(message)

    return wrapped


async def _cached(
    http: HttpCache,
    rule: HttpCacheRule,
    groups: dict[str, str],
    user: str | None,
    app: ASGIApp,
    scope: HTTPScope,
    receive: Receive,
    send: Send,
) -> None:
    cache = http.cache
    namespace = f"http-{rule.name}"
    query = scope.get("query_string", b"").decode("latin-1")
    if rule.private:  # who, and with which roles: an admin's view is not a member's
        roles = ",".join(sorted(getattr(scope.get("user"), "roles", ()) or ()))
        key = f"{user}#{roles}|{scope['path']}?{query}"
    else:
        key = f"{scope['path']}?{query}"
    inm = _header(scope, b"if-none-match")
    head = scope["method"] == "HEAD"
    try:
        hit = await cache.get(key, namespace=namespace, type=CachedResponse | None)
    except CacheError as exc:  # an entry that no longer decodes: ignore, refill below
        log.warning("http cache: %s", exc)
        hit = None
    if hit is not None:
        await _send_response(send, rule, hit, inm, "HIT", head)
        return

    epoch = cache.epoch
    start = _start(500, [])  # replaced by the app's own
    chunks: list[bytes] = []
    passthrough = False

    async def capture(message: Message) -> None:
        nonlocal passthrough, start
        if passthrough:
            await send(message)
        elif message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("more_body") and sum(map(len, chunks)) > cache.max_value_bytes:
                passthrough = True  # too big to cache: stream the rest through
                await send({**start, "headers": _with(list(start["headers"]))})
                await send(_body(b"".join(chunks), more=True))
        else:
            await send(message)

    await app(scope, receive, capture)
    if passthrough:
        return
    body = b"".join(chunks)
    headers = list(start["headers"])
    resp = CachedResponse(start["status"], headers, body, strong_etag(body))
    cacheable = (
        resp.status == 200
        and not head
        and not any(k.lower() == b"set-cookie" for k, _ in headers)
        and not any(k.lower() == b"cache-control" and b"no-store" in v.lower() for k, v in headers)
    )
    if not cacheable:
        await send(start)
        await send(_body(body))
        return
    events = [e.format(**groups) for e in rule.events]
    if user:
        events.append(f"user:{user}")
    try:
        await cache.put(key, resp, namespace=namespace, events=events, if_epoch=epoch)
    except CacheError as exc:
        log.info("http cache: not cached: %s", exc)
    await _send_response(send, rule, resp, inm, "MISS", head)
