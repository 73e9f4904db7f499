"""REST: revoke a token (admins: any token or token id; anyone: their own token)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import JSONBody

from hub.base.auth import Identity, token_claims
from hub.core import Hub


class RevokeToken(msgspec.Struct):
    """Either the token itself or its id (``jti``, as ``lydian token revoke`` prints it)."""

    token: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    jti: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class Revoked(msgspec.Struct, omit_defaults=True):
    jti: str
    already: bool = False  # it was revoked before
    user: str | None = None
    expires_at: float | None = None


@post("/api/tokens/revoke", status_code=200, tags=["auth"])
async def revoke_token(
    request: Request[Identity, Any, Any], data: JSONBody[RevokeToken]
) -> Revoked:
    """Revoke a token on every replica: refused from now on, its sockets closed (4403).

    Admins may revoke any token, by token or id; anyone may revoke a token of their own
    (sign out everywhere with that token)."""
    hub: Hub = request.app.state.hub
    user: Identity = request.user
    if (data.token is None) == (data.jti is None):
        raise ValidationException("give either 'token' or 'jti'")
    sub: str | None = None
    exp: float | None = None
    if data.token is not None:
        try:
            claims = token_claims(data.token, hub.secret)
        except NotAuthorizedException as exc:
            raise ValidationException(str(exc.detail)) from None
        if claims.jti is None:
            raise ValidationException(
                "this token has no id (issued before revocation existed); it stays valid "
                "until it expires: rotate the hub secret to withdraw such tokens"
            )
        jti, sub, exp = claims.jti, claims.sub, claims.exp
    else:
        assert data.jti is not None
        jti = data.jti
    if not user.is_admin and (sub is None or sub != user.id):
        raise PermissionDeniedException("only admins can revoke other users' tokens")
    new = await hub.revocations.revoke(jti, user_id=sub, expires_at=exp, by=user.id)
    return Revoked(jti=jti, already=not new, user=sub, expires_at=exp)


token_routes = [revoke_token]
