"""Signed tokens (Litestar's JWT support) carrying user id, display name and roles."""

from __future__ import annotations

import secrets
import unicodedata
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
    jti: str | None = None  # the token's id (revocation); None for guests without a token
    exp: float | None = None  # the token's expiry (epoch seconds); a socket closes then

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_guest(self) -> bool:
        return "guest" in self.roles


class TokenExpired(NotAuthorizedException):
    """The token's signature is fine but its ``exp`` has passed."""


def new_jti() -> str:
    return secrets.token_urlsafe(16)


def issue_token(identity: Identity, secret: str, ttl_seconds: float) -> str:
    """Sign a token for ``identity`` valid for ``ttl_seconds``, with a fresh token id."""
    token = Token(
        sub=identity.id,
        exp=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        iss=ISSUER,
        jti=new_jti(),
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
    return identity_of(token)


def identity_of(token: Token) -> Identity:
    """The identity a decoded token carries (a 401 error if its claims are malformed)."""
    name = token.extras.get("name") or token.sub
    roles = token.extras.get("roles") or []
    if not isinstance(name, str) or not isinstance(roles, list):
        raise NotAuthorizedException("malformed token claims")
    jti = token.jti if isinstance(token.jti, str) else None
    return Identity(
        id=token.sub,
        name=name,
        roles=tuple(str(r) for r in roles),
        jti=jti,
        exp=token.exp.timestamp(),
    )


class TokenClaims(msgspec.Struct, frozen=True):
    """What ``lydian token revoke`` needs from a token: its id, user and expiry."""

    jti: str | None
    sub: str
    exp: float | None


def token_claims(encoded: str, secret: str) -> TokenClaims:
    """Check a token's signature and issuer (not its expiry) and return its claims."""
    import jwt

    try:
        payload = jwt.decode(
            encoded,
            key=secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise NotAuthorizedException(f"not a token of this hub: {exc}") from None
    jti = payload.get("jti")
    exp = payload.get("exp")
    return TokenClaims(
        jti=jti if isinstance(jti, str) else None,
        sub=str(payload.get("sub", "")),
        exp=float(exp) if isinstance(exp, (int, float)) else None,
    )


GUEST_NAME_MAX = 40


def clean_name(name: str | None) -> str:
    """A display name with control and format characters (bidi overrides, zero-width)
    removed and whitespace collapsed; "" if nothing printable is left."""
    if not name:
        return ""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in name
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    return " ".join(kept.split())[:GUEST_NAME_MAX].strip()


def guest_identity(name: str | None = None) -> Identity:
    """A fresh anonymous identity, for configurations that allow guests. The name is
    cleaned (no control or format characters, never blank)."""
    suffix = secrets.token_hex(3)
    clean = clean_name(name)
    return Identity(id=f"guest-{suffix}", name=clean or f"Guest {suffix}", roles=("guest",))
