"""Abuse limits (issue 13): token buckets per role, shared by every replica.

A limit is a token bucket: it holds at most ``burst`` tokens and refills at ``rate`` tokens
per second; each action takes ``cost`` tokens (1 for a message, the byte count for an
upload) or is refused with the seconds until it would fit (``retry_after``).

Every limit is a setting holding a compact spec, one entry per role::

    limit_messages = "guest=1/s:20,user=5/s:100,admin=20/s:400,agent=off"

``ROLE=N/UNIT[:BURST]``: ``N`` actions per ``UNIT`` (``s``, ``m``, ``h``, ``d``), at most
``BURST`` at once (default ``N``); ``N`` and ``BURST`` may end in ``k``, ``M`` or ``G``
(x1024, for bytes). ``off`` means no limit. Roles are ``guest``, ``user``, ``admin``,
``agent`` and ``*`` (every role not named); an entry without ``ROLE=`` is ``*``. A role
neither named nor covered by ``*`` is not limited. Counts (``limit_sockets``) are plain
``ROLE=N``. A bad spec fails at startup with one line naming the setting.

Backends: in memory (the embedded default: a dict of buckets, checked without awaiting)
or Redis (``REDIS_URL``: one Lua script per check, atomic, keys expire once full again).
If Redis fails, checks fall back to this replica's memory buckets (logged once) instead of
blocking chat; Redis is used again once it answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from hub.base.errors import CommandError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from hub.base.auth import Identity
    from hub.base.config import Settings

log = logging.getLogger(__name__)

ROLES = ("guest", "user", "admin", "agent")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SUFFIX = {"": 1, "k": 1024, "K": 1024, "M": 1024**2, "G": 1024**3}
_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)([kKMG]?)$")

RATE_LIMITS = {
    # name: (setting, what it counts) -- documented in docs/security.md
    "messages": "limit_messages",
    "messages_socket": "limit_messages_socket",
    "typing": "limit_typing",
    "typing_socket": "limit_typing_socket",
    "commands": "limit_commands",
    "commands_socket": "limit_commands_socket",
    "rooms": "limit_rooms",
    "guest_tokens": "limit_guest_tokens",
    "rest_address": "limit_rest_address",
    "rest": "limit_rest",
    "uploads_address": "limit_uploads_address",
    "uploads": "limit_uploads",
    "upload_bytes": "limit_upload_bytes",
    "upload_bytes_room": "limit_upload_bytes_room",
    "model_requests": "limit_model_requests",
    "model_tokens": "limit_model_tokens",
}
COUNT_LIMITS = {"sockets": "limit_sockets"}


class LimitSpecError(ValueError):
    """A limit setting that cannot be parsed; the message is one line naming the setting."""


class ModelRefused(CommandError):
    """Model use refused: ``code`` is ``forbidden`` (guests, when they may not) or
    ``rate_limited`` (with ``retry_after`` seconds). A command raising it answers an
    ``error`` frame with that code."""

    def __init__(self, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.retry_after = retry_after


class Rate(msgspec.Struct, frozen=True):
    rate: float  # tokens per second
    burst: float  # bucket size

    @property
    def period(self) -> float:
        """Seconds for an empty bucket to fill again."""
        return self.burst / self.rate


def role_of(identity: Identity) -> str:
    """The role whose limits apply: admin, agent, guest, else user."""
    roles = identity.roles
    if "admin" in roles:
        return "admin"
    if "agent" in roles:
        return "agent"
    if "guest" in roles:
        return "guest"
    return "user"


def _number(text: str, setting: str, entry: str) -> float:
    match = _NUMBER.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise LimitSpecError(
            f"LYDIAN_{setting.upper()}: bad entry {entry!r}: {text!r} is not a positive number"
            " (optionally with k, M or G); use 'off' for no limit"
        )
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def _entries(spec: str, setting: str) -> Iterable[tuple[str, str, str]]:
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        role, _, value = entry.rpartition("=")
        role = role.strip() or "*"
        if role not in ROLES and role != "*":
            raise LimitSpecError(
                f"LYDIAN_{setting.upper()}: bad entry {entry!r}: unknown role {role!r}"
                f" (roles: {', '.join(ROLES)}, *)"
            )
        yield role, value.strip(), entry


def _by_role(values: dict[str, Any]) -> dict[str, Any]:
    """The value for every role, ``*`` filling the roles not named."""
    default = values.get("*")
    return {role: values.get(role, default) for role in ROLES}


def parse_rates(spec: str, setting: str) -> dict[str, Rate | None]:
    """``"guest=1/s:20,user=5/s,admin=off"`` -> a :class:`Rate` (or None: unlimited) per role."""
    values: dict[str, Rate | None] = {}
    for role, value, entry in _entries(spec, setting):
        if value.lower() == "off":
            values[role] = None
            continue
        amount, _, burst = value.partition(":")
        count, slash, unit = amount.partition("/")
        if not slash or unit.strip() not in _UNITS:
            raise LimitSpecError(
                f"LYDIAN_{setting.upper()}: bad entry {entry!r}: expected ROLE=N/UNIT[:BURST]"
                " with UNIT s, m, h or d, or ROLE=off"
            )
        n = _number(count, setting, entry)
        size = _number(burst, setting, entry) if burst.strip() else n
        values[role] = Rate(rate=n / _UNITS[unit.strip()], burst=size)
    return _by_role(values)


def parse_counts(spec: str, setting: str) -> dict[str, int | None]:
    """``"guest=5,user=30,admin=off"`` -> a maximum (or None: unlimited) per role."""
    values: dict[str, int | None] = {}
    for role, value, entry in _entries(spec, setting):
        if value.lower() == "off":
            values[role] = None
            continue
        if not value.isdigit() or int(value) < 1:
            raise LimitSpecError(
                f"LYDIAN_{setting.upper()}: bad entry {entry!r}: expected ROLE=N (a positive"
                " integer) or ROLE=off"
            )
        values[role] = int(value)
    return _by_role(values)


def check_settings(settings: Settings) -> None:
    """Parse every limit setting now, so a bad value stops startup with a one-line error."""
    Limits(settings)


# ---------------------------------------------------------------------------- buckets


class Bucket:
    """One token bucket's state: ``tokens`` left at time ``ts``."""

    __slots__ = ("tokens", "ts")

    def __init__(self, tokens: float, ts: float) -> None:
        self.tokens = tokens
        self.ts = ts

    def take(self, rate: Rate, now: float, cost: float = 1.0, force: bool = False) -> float:
        """Take ``cost`` tokens: 0.0 if done, else the seconds until they would be there.

        ``force`` takes them even if that leaves the bucket in debt (a cost known only
        afterwards, such as a model's tokens): later takes wait until it is paid back."""
        tokens = self.tokens + (now - self.ts) * rate.rate
        if tokens > rate.burst:
            tokens = rate.burst
        if tokens >= cost or force:
            self.tokens = tokens - cost
            self.ts = now
            return 0.0
        return (cost - tokens) / rate.rate


class MemoryBuckets:
    """Buckets of one process, keyed by string; full buckets are pruned now and then."""

    PRUNE_EVERY = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}
        self._rates: dict[str, Rate] = {}
        self._takes = 0

    def take(self, key: str, rate: Rate, cost: float = 1.0, force: bool = False) -> float:
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            self._takes += 1
            if self._takes >= self.PRUNE_EVERY:
                self.prune(now)
            bucket = self.buckets[key] = Bucket(rate.burst, now)
            self._rates[key] = rate
        return bucket.take(rate, now, cost, force)

    def prune(self, now: float | None = None) -> None:
        """Forget buckets that are full again (they would start full anyway)."""
        now = self.clock() if now is None else now
        self._takes = 0
        for key, bucket in list(self.buckets.items()):
            rate = self._rates[key]
            if bucket.tokens + (now - bucket.ts) * rate.rate >= rate.burst:
                del self.buckets[key]
                del self._rates[key]


_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'n', 't')
local tokens = burst
if v[1] then
  tokens = math.min(burst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
end
if tokens >= cost or force then
  tokens = tokens - cost
  redis.call('HSET', KEYS[1], 'n', tostring(tokens), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
  return '0'
end
return tostring((cost - tokens) / rate)
"""

_OPEN_SOCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

_REFRESH_SOCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[i - 1], 'XX', now + ttl, ARGV[i])
  redis.call('PEXPIRE', KEYS[i - 1], ttl)
end
return 1
"""


class Limits:
    """Every abuse limit of a hub: ``hub.limits`` (gateway, REST, uploads, plugins).

    ``local`` is True when the buckets live in this process: then :meth:`take_now` answers
    without awaiting. Otherwise :meth:`take` asks Redis (or the memory fallback).
    """

    def __init__(
        self,
        settings: Settings,
        redis: Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.enabled = settings.limits
        self.rates: dict[str, dict[str, Rate | None]] = {
            name: parse_rates(getattr(settings, setting), setting)
            for name, setting in RATE_LIMITS.items()
        }
        self.counts: dict[str, dict[str, int | None]] = {
            name: parse_counts(getattr(settings, setting), setting)
            for name, setting in COUNT_LIMITS.items()
        }
        if settings.room_creators not in ("user", "admin"):
            raise LimitSpecError(
                f"LYDIAN_ROOM_CREATORS: {settings.room_creators!r} is not 'user' or 'admin'"
            )
        if settings.limit_strikes < 1:
            raise LimitSpecError("LYDIAN_LIMIT_STRIKES: must be at least 1")
        self.memory = MemoryBuckets(clock)
        self.redis = redis
        self.local = redis is None
        self.prefix = f"{settings.redis_prefix}:rl"
        self.socket_ttl_ms = int(max(settings.presence_ttl, 3.0) * 1000)
        self._redis_ok = True
        self._retry_at = 0.0
        self._sockets: dict[str, set[str]] = {}  # user -> connection ids (memory backend)
        self._own_sockets: dict[str, str] = {}  # connection id -> user (Redis backend)
        self._roles: dict[str, str] = {}  # user -> role other than "user", as last seen
        if redis is not None:
            self._take_script = redis.register_script(_TAKE)
            self._open_script = redis.register_script(_OPEN_SOCKET)
            self._refresh_script = redis.register_script(_REFRESH_SOCKETS)

    # ------------------------------------------------------------ rates

    def rate(self, name: str, role: str) -> Rate | None:
        """The limit ``name`` for ``role``; None when it is off."""
        if not self.enabled:
            return None
        return self.rates[name][role]

    def take_now(self, name: str, role: str, key: str, cost: float = 1.0) -> float:
        """A check in this process's buckets (no await): 0.0, or seconds to wait."""
        rate = self.rates[name][role] if self.enabled else None
        if rate is None:
            return 0.0
        return self.memory.take(f"{name}:{key}", rate, cost)

    async def take(
        self, name: str, role: str, key: str, cost: float = 1.0, force: bool = False
    ) -> float:
        """A check shared by every replica: 0.0 if allowed (tokens taken), else seconds to wait."""
        rate = self.rates[name][role] if self.enabled else None
        if rate is None:
            return 0.0
        if self.redis is None or (not self._redis_ok and not self._retry_redis()):
            return self.memory.take(f"{name}:{key}", rate, cost, force)
        try:
            wait = await self._take_script(
                keys=[f"{self.prefix}:{name}:{key}"],
                args=[repr(rate.rate), repr(rate.burst), repr(float(cost)), int(force)],
            )
        except Exception as exc:
            self._redis_failed(exc)
            return self.memory.take(f"{name}:{key}", rate, cost, force)
        self._redis_back()
        return float(wait)

    def _retry_redis(self) -> bool:
        """After a failure, try Redis again at most once a second."""
        return time.monotonic() >= self._retry_at

    def _redis_failed(self, exc: Exception) -> None:
        if self._redis_ok:
            log.warning("Redis unreachable (%s): rate limits are per replica until it is back", exc)
        self._redis_ok = False
        self._retry_at = time.monotonic() + 1.0

    def _redis_back(self) -> None:
        if not self._redis_ok:
            self._redis_ok = True
            log.warning("Redis is back: rate limits are shared by the replicas again")

    # ------------------------------------------------------------ model use

    def note_role(self, user_id: str, role: str) -> None:
        """Remember a user's role (seen at hello or on a request), for paths that only
        know the user id, such as a message mentioning an agent."""
        if role == "user":
            self._roles.pop(user_id, None)
            return
        if len(self._roles) >= 100_000:
            self._roles.clear()
        self._roles[user_id] = role

    def role_for(self, user_id: str) -> str:
        """The role of a user seen by this process (guest ids look like ``guest-…``)."""
        role = self._roles.get(user_id)
        if role is not None:
            return role
        return "guest" if user_id.startswith("guest-") else "user"

    async def check_model(self, role: str, user_id: str) -> None:
        """Before a model runs for ``user_id``: raise :class:`ModelRefused` if they may not
        (guests unless ``models_for_guests``) or have used up their requests or tokens."""
        if role == "guest" and not self.settings.models_for_guests:
            raise ModelRefused("forbidden", "guests cannot use the models on this hub")
        for name, what in (("model_requests", "model requests"), ("model_tokens", "tokens")):
            wait = await self.take(name, role, user_id)
            if wait:
                retry_after = math.ceil(wait * 1000) / 1000
                raise ModelRefused(
                    "rate_limited",
                    f"you have used your {what} for now; try again in {retry_after:g} s",
                    retry_after,
                )

    async def charge_model_tokens(self, role: str, user_id: str, tokens: int) -> None:
        """Count the tokens of an answer (known only afterwards: it may leave a debt)."""
        if tokens > 0:
            await self.take("model_tokens", role, user_id, cost=tokens, force=True)

    # ------------------------------------------------------------ sockets per user

    async def open_socket(self, role: str, user_id: str, conn_id: str) -> bool:
        """Count a new socket of ``user_id``; False when they have their maximum open."""
        limit = self.counts["sockets"][role] if self.enabled else None
        if limit is None:
            return True
        if self.redis is not None and (self._redis_ok or self._retry_redis()):
            try:
                ok = await self._open_script(
                    keys=[f"{self.prefix}:sockets:{user_id}"],
                    args=[limit, conn_id, self.socket_ttl_ms],
                )
            except Exception as exc:
                self._redis_failed(exc)
            else:
                self._redis_back()
                if ok:
                    self._own_sockets[conn_id] = user_id
                return bool(ok)
        conns = self._sockets.setdefault(user_id, set())
        if len(conns) >= limit:
            return False
        conns.add(conn_id)
        return True

    async def close_socket(self, user_id: str, conn_id: str) -> None:
        conns = self._sockets.get(user_id)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self._sockets[user_id]
        if self._own_sockets.pop(conn_id, None) is not None and self.redis is not None:
            try:
                await self.redis.zrem(f"{self.prefix}:sockets:{user_id}", conn_id)
            except Exception as exc:  # its entry expires after socket_ttl_ms
                self._redis_failed(exc)

    async def refresh_sockets(self) -> None:
        """Keep this replica's socket entries alive in Redis (they expire if it dies)."""
        if self.redis is None or not self._own_sockets:
            return
        items = list(self._own_sockets.items())
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            await self._refresh_script(
                keys=[f"{self.prefix}:sockets:{user}" for _, user in chunk],
                args=[self.socket_ttl_ms, *(conn for conn, _ in chunk)],
            )

    async def keep_socket_counts(self) -> None:
        """Forever: :meth:`refresh_sockets` every third of the entries' lifetime."""
        while True:
            await asyncio.sleep(self.socket_ttl_ms / 3000)
            try:
                await self.refresh_sockets()
            except Exception as exc:  # Redis away: entries expire, counted again when back
                log.debug("socket count refresh failed: %s", exc)


def retry_header(wait: float) -> str:
    """``Retry-After`` is whole seconds: rounded up, at least 1."""
    return str(max(1, math.ceil(wait)))


# ---------------------------------------------------------------------------- HTTP

UNLIMITED_PATHS = ("/healthz", "/livez", "/readyz")


def client_address(scope: Any) -> str:
    """The client's address (uvicorn puts a trusted proxy's ``X-Forwarded-For`` here)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def too_many(wait: float, detail: str) -> Exception:
    """HTTP 429 with ``Retry-After`` (whole seconds) and ``retry_after`` in the JSON body."""
    from litestar.exceptions import TooManyRequestsException

    retry_after = math.ceil(wait * 1000) / 1000
    return TooManyRequestsException(
        detail=f"{detail}; try again in {retry_after:g} s",
        headers={"Retry-After": retry_header(wait)},
        extra={"retry_after": retry_after},
    )


async def check_http(
    limits: Limits, name: str, role: str, key: str, what: str, cost: float = 1.0
) -> None:
    """Take ``cost`` tokens of ``name`` or raise a 429 saying ``what`` was too much
    (413 when ``cost`` is more than the limit's whole burst: it could never pass)."""
    rate = limits.rate(name, role)
    if rate is None:
        return
    if cost > rate.burst:
        from litestar.exceptions import HTTPException

        raise HTTPException(
            status_code=413, detail=f"{what}: {cost:.0f} is more than the limit of {rate.burst:.0f}"
        )
    if limits.local:
        wait = limits.take_now(name, role, key, cost)
    else:
        wait = await limits.take(name, role, key, cost)
    if wait:
        raise too_many(wait, f"too many {what}")


def _hub_limits(scope: Any) -> Limits | None:
    if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
        return None
    hub = getattr(scope["app"].state, "hub", None)
    return getattr(hub, "limits", None)


def address_limits_middleware(app: Any) -> Any:
    """Litestar middleware, outermost (before authentication, so requests with a bad token
    count too): HTTP requests per client address (``limit_rest_address``)."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        limits = _hub_limits(scope)
        if limits is not None:
            address = client_address(scope)
            await check_http(limits, "rest_address", "user", address, "requests from this address")
        await app(scope, receive, send)

    return middleware


def rest_limits_middleware(app: Any) -> Any:
    """Litestar middleware after the JWT middleware: HTTP requests per user (``limit_rest``)."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        limits = _hub_limits(scope)
        user = scope.get("user") if limits is not None else None
        if limits is not None and user is not None and hasattr(user, "roles"):
            role = role_of(user)
            if role != "user":
                limits.note_role(user.id, role)
            await check_http(limits, "rest", role, user.id, "requests")
        await app(scope, receive, send)

    return middleware


def limits_first(app_config: Any) -> Any:
    """``on_app_init`` hook (after the JWT one): put the address limit before authentication."""
    app_config.middleware.insert(0, address_limits_middleware)
    return app_config
