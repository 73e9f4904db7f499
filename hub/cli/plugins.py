"""``lydian plugins list``, ``lydian plugins reload`` and ``lydian plugin new NAME``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from hub.base.config import Settings, load_settings
from hub.cli.scaffold import render_plugin
from hub.plugin_host.host import PluginHost
from hub.plugin_host.settings import PluginConfigError, load_plugin_settings


def check_settings(host: PluginHost, settings: Settings) -> dict[str, str]:
    """Validate every plugin's settings without starting it: ``{plugin: error}``."""
    errors: dict[str, str] = {}
    for impl in host._impls("lydian_plugin_settings"):
        try:
            struct = impl.function()
            if struct is not None:
                load_plugin_settings(
                    impl.plugin_name, struct, settings.plugin_config.get(impl.plugin_name)
                )
        except PluginConfigError as exc:
            errors[impl.plugin_name] = str(exc)
        except Exception as exc:
            errors[impl.plugin_name] = f"lydian_plugin_settings: {type(exc).__name__}: {exc}"
    return errors


async def _enabled_rooms(settings: Settings) -> dict[str, dict[str, bool]]:
    from hub.store.store import Store

    store = await Store.open(settings.resolved_database_url(), migrate=settings.auto_migrate)
    try:
        return await store.room_plugins()
    finally:
        await store.close()


def plugins_list(_: argparse.Namespace) -> int:
    settings = load_settings()
    host = PluginHost(settings)
    errors = check_settings(host, settings)
    try:
        enabled = asyncio.run(_enabled_rooms(settings))
    except Exception as exc:
        print(f"lydian: cannot read room enablement from the store: {exc}", file=sys.stderr)
        enabled = {}
    rows = [("NAME", "VERSION", "HOOKS", "ROOMS", "STATUS")]
    for info in host.infos():
        rooms = sorted(r for r, names in enabled.items() if names.get(info.name))
        if info.default_enabled:
            rooms.insert(0, "(default on)")
        status = info.error or errors.get(info.name) or "ok"
        hooks = ",".join(h.removeprefix("lydian_") for h in info.hooks)
        rows.append((info.name, info.version or "-", hooks or "-", ",".join(rooms) or "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]))
    return 0


def _hub_url(settings: Settings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{settings.port}"


def plugins_reload(args: argparse.Namespace) -> int:
    """Ask a running hub to rescan (``POST /api/plugins/reload``) with an admin token
    signed by the hub's secret; its replicas follow. Exit 1 if a plugin failed to load."""
    from hub.base.auth import Identity, issue_token

    settings = load_settings()
    url = (args.url or _hub_url(settings)).rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        print(f"lydian: --url must look like http://127.0.0.1:8000, not {url!r}", file=sys.stderr)
        return 2
    identity = Identity(id="lydian-cli", name="lydian plugins reload", roles=("admin",))
    token = issue_token(identity, settings.resolved_secret(), 60)
    request = urllib.request.Request(
        f"{url}/api/plugins/reload",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            body = resp.read()
        result = json.loads(body)
        if not isinstance(result, dict) or not isinstance(result.get("failed"), dict):
            raise ValueError("not a reload report")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            detail = str(json.loads(text)["detail"])
        except (ValueError, KeyError, TypeError):
            detail = " ".join(text.split())
        print(f"lydian: the hub refused the reload ({exc.code}): {detail[:200]}", file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"lydian: cannot reach the hub at {url}: {reason}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"lydian: {url} answered, but not as a Lydian hub: {body[:100]!r}", file=sys.stderr)
        return 2
    failed = result.get("failed") or {}
    print(f"rescanned plugins at {url} (other replicas follow)")
    print(f"new: {', '.join(result.get('new') or []) or 'none'}")
    print(f"reloaded: {', '.join(result.get('reloaded') or []) or 'none'}")
    print("failed: " + ("; ".join(f"{n} ({e})" for n, e in sorted(failed.items())) or "none"))
    return 1 if failed else 0


def plugin_new(args: argparse.Namespace) -> int:
    try:
        target = render_plugin(args.name, Path(args.dir))
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"lydian: {exc}", file=sys.stderr)
        return 2
    print(f"created {target}")
    print(f"next: pip install -e {target}; then, in a room: /plugins enable {args.name}")
    return 0


def add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``plugins list``, ``plugins reload`` and ``plugin new`` to the ``lydian`` parser."""
    plugins = sub.add_parser("plugins", help="inspect installed plugins")
    plugins_sub = plugins.add_subparsers(dest="plugins_command", required=True)
    listing = plugins_sub.add_parser(
        "list", help="name, version, hooks, rooms where enabled, status"
    )
    listing.set_defaults(func=plugins_list)
    reload = plugins_sub.add_parser(
        "reload",
        help="make a running hub pick up plugins installed since it started (admin call)",
    )
    reload.add_argument(
        "--url",
        help="the hub's base URL (default: http://127.0.0.1:PORT, PORT from LYDIAN_PORT, 8000)",
    )
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    reload.set_defaults(func=plugins_reload)

    plugin = sub.add_parser("plugin", help="create plugins")
    plugin_sub = plugin.add_subparsers(dest="plugin_command", required=True)
    new = plugin_sub.add_parser("new", help="render plugin_template/ into a new package")
    new.add_argument("name", help="plugin name: lowercase letters, digits, '_'")
    new.add_argument("--dir", default=".", help="parent folder (default: current)")
    new.set_defaults(func=plugin_new)
