"""``lydian`` command line: serve, migrate, token, config show, doctor, plugins; ``--version``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from hub import __version__
from hub.base.auth import Identity, issue_token
from hub.base.config import SettingsError, load_settings

TRANSPORT_MAX_FRAME = 16 * 1024 * 1024
"""uvicorn closes (1009) above this; frames between the hub's limit and this get an error frame."""


def _http_protocol() -> str:
    """uvicorn's httptools protocol with request read timeouts (hub.web.timeouts)."""
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        print("lydian: httptools missing, HTTP requests have no read timeouts", file=sys.stderr)
        return "auto"
    return "hub.web.timeouts:TimedHttpToolsProtocol"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hub.access.limits import LimitSpecError, check_settings

    settings = load_settings(host=args.host, port=args.port, workers=args.workers)
    try:
        check_settings(settings)
    except LimitSpecError as exc:
        print(f"lydian: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1 and not settings.redis_url:
        print(
            "lydian: --workers > 1 needs REDIS_URL so that the workers share rooms", file=sys.stderr
        )
        return 2
    if args.host:
        os.environ["LYDIAN_HOST"] = args.host
    print(
        f"Lydian hub on http://{settings.host}:{settings.port}  "
        f"(store: {settings.resolved_database_url().split('://')[0]}, "
        f"docs: /schema, socket: /ws)",
        flush=True,
    )
    from hub.cli.serving import run

    config = uvicorn.Config(
        "hub.web.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http=_http_protocol(),
        ws_max_size=TRANSPORT_MAX_FRAME,
        ws_ping_interval=None,
        ws_per_message_deflate=settings.ws_compression,
        log_level=settings.log_level,
        proxy_headers=True,
        lifespan="on",
    )
    run(config)  # uvicorn.run, with sockets told to reconnect (1001) before shutdown
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from hub.store.store import Store

    settings = load_settings()

    async def run() -> None:
        store = await Store.open(settings.resolved_database_url(), migrate=True)
        await store.close()

    asyncio.run(run())
    print(f"migrated {settings.resolved_database_url().split('://')[0]} store")
    return 0


def _token(args: argparse.Namespace) -> int:
    if args.user == "revoke" and args.target:
        return _revoke(args.target)
    if args.target:
        print("lydian: 'token' takes one user id (or: lydian token revoke TOKEN)", file=sys.stderr)
        return 2
    settings = load_settings()
    roles = ["admin"] if args.admin else []
    identity = Identity(id=args.user, name=args.name or args.user, roles=tuple(roles))
    print(issue_token(identity, settings.resolved_secret(), args.ttl or settings.token_ttl_seconds))
    return 0


def _revoke(target: str) -> int:
    """Revoke a token (or a token id) in the database and tell running replicas (Redis)."""
    from litestar.exceptions import NotAuthorizedException

    from hub.access.identity import REVOKE_CHANNEL
    from hub.base.auth import token_claims
    from hub.realtime.broker import Broker
    from hub.store.store import Store

    settings = load_settings()
    sub: str | None = None
    exp: float | None = None
    if target.count(".") == 2:  # a JWT: header.payload.signature
        try:
            claims = token_claims(target, settings.resolved_secret())
        except NotAuthorizedException as exc:
            print(f"lydian: {exc.detail}", file=sys.stderr)
            return 1
        if claims.jti is None:
            print(
                "lydian: this token has no id (issued before revocation existed); it stays "
                "valid until it expires (rotate the hub secret to withdraw it now)",
                file=sys.stderr,
            )
            return 1
        jti, sub, exp = claims.jti, claims.sub, claims.exp
    else:
        jti = target

    async def run() -> bool:
        from datetime import UTC, datetime

        store = await Store.open(settings.resolved_database_url(), migrate=settings.auto_migrate)
        try:
            expires = datetime.fromtimestamp(exp, UTC) if exp is not None else None
            new = await store.revoke_token(jti, user_id=sub, expires_at=expires, by="cli")
        finally:
            await store.close()
        if settings.redis_url:  # running replicas close its sockets now (else within
            broker = Broker.from_redis_url(settings.redis_url, settings.redis_prefix)
            try:  # revocation_reload_interval)
                await broker.publish(REVOKE_CHANNEL, jti.encode())
            finally:
                await broker.stop()
        return new

    new = asyncio.run(run())
    print(f"revoked token {jti}" + ("" if new else " (it was revoked already)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lydian", description="Lydian chat-ops hub")
    parser.add_argument("--version", action="version", version=f"lydian {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the hub (embedded defaults unless configured)")
    serve.add_argument("--host", help="bind address (env LYDIAN_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env LYDIAN_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="processes (env LYDIAN_WORKERS, default 1)")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=_migrate)

    token = sub.add_parser(
        "token",
        help="print a signed token for local use; 'token revoke TOKEN-OR-ID' withdraws one",
    )
    token.add_argument("user", help="user id (or 'revoke')")
    token.add_argument("target", nargs="?", help="with 'revoke': the token or its id (jti)")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    token.set_defaults(func=_token)

    from hub.cli.operator import add_operator_commands
    from hub.cli.plugins import add_plugin_commands

    add_operator_commands(sub)
    add_plugin_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hub.access.limits import LimitSpecError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, LimitSpecError) as exc:  # a bad setting: one line, no traceback
        print(f"lydian: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
