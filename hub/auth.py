"""Signed tokens (Litestar's JWT support) carrying user id, display name and roles."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import msgspec
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import Token

ALGORITHM = "HS256"
ISSUER = "lydian"


class Identity(msgspec.Struct, frozen=True):
    """Who is on the other end of a socket or request."""

    id: str
    name: str
    roles: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_guest(self) -> bool:
        return "guest" in self.roles


class TokenExpired(NotAuthorizedException):
    """The token's signature is fine but its ``exp`` has passed."""


def issue_token(identity: Identity, secret: str, ttl_seconds: int) -> str:
    """Sign a token for ``identity`` valid for ``ttl_seconds``."""
    token = Token(
        sub=identity.id,
        exp=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        iss=ISSUER,
        extras={"name": identity.name, "roles": list(identity.roles)},
    )
    return token.encode(secret=secret, algorithm=ALGORITHM)


def verify_token(encoded: str, secret: str) -> Identity:
    """Check signature, issuer and expiry; raise :class:`TokenExpired` or a 401 error."""
    try:
        token = Token.decode(encoded, secret=secret, algorithm=ALGORITHM, issuer=ISSUER)
    except NotAuthorizedException as exc:
        if "expired" in str(exc.detail).lower() or "expired" in str(exc.__cause__ or "").lower():
            raise TokenExpired("token expired") from None
        raise
    name = token.extras.get("name") or token.sub
    roles = token.extras.get("roles") or []
    if not isinstance(name, str) or not isinstance(roles, list):
        raise NotAuthorizedException("malformed token claims")
    return Identity(id=token.sub, name=name, roles=tuple(str(r) for r in roles))


def guest_identity(name: str | None = None) -> Identity:
    """A fresh anonymous identity, for configurations that allow guests."""
    suffix = secrets.token_hex(3)
    clean = (name or "").strip()[:40]
    return Identity(id=f"guest-{suffix}", name=clean or f"Guest {suffix}", roles=("guest",))
