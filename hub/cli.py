"""``lydian`` command line: serve, migrate, token."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from hub.auth import Identity, issue_token
from hub.config import load_settings

TRANSPORT_MAX_FRAME = 16 * 1024 * 1024
"""uvicorn closes (1009) above this; frames between the hub's limit and this get an error frame."""


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hub.limits import LimitSpecError, check_settings

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
    uvicorn.run(
        "hub.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        ws_max_size=TRANSPORT_MAX_FRAME,
        ws_ping_interval=None,
        ws_per_message_deflate=settings.ws_compression,
        log_level=settings.log_level,
        proxy_headers=True,
        lifespan="on",
    )
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
    settings = load_settings()
    roles = ["admin"] if args.admin else []
    identity = Identity(id=args.user, name=args.name or args.user, roles=tuple(roles))
    print(issue_token(identity, settings.resolved_secret(), args.ttl or settings.token_ttl_seconds))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lydian", description="Lydian chat-ops hub")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the hub (embedded defaults unless configured)")
    serve.add_argument("--host", help="bind address (env LYDIAN_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env LYDIAN_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="processes (env LYDIAN_WORKERS, default 1)")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=_migrate)

    token = sub.add_parser("token", help="print a signed token for local use")
    token.add_argument("user", help="user id")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    token.set_defaults(func=_token)

    from hub.plugin_cli import add_plugin_commands

    add_plugin_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
