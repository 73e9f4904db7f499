"""``lydian config show`` (the effective settings, secrets masked, and where each came from)
and ``lydian doctor`` (can this hub run: database, migrations, Redis, plugins, system tools).

Where a value came from is recorded by :func:`hub.config.load_settings` (and
:func:`hub.plugin_config.load_plugin_settings` for plugins): this module only shows it.

A plugin declares the system tools it needs with a module (or object) attribute::

    LYDIAN_REQUIREMENTS = ["tesseract", "espeak-ng?"]  # a trailing "?": optional

(or a callable returning such a list). ``lydian doctor`` looks each up with
:func:`shutil.which`: a missing required tool fails, a missing optional one warns.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from hub.base.config import Settings, load_settings
from hub.plugin_host.settings import MASK

SECRET_NAME = re.compile(
    r"(^|_)(secret|password|passwd|pwd|token|api_?key|key|credentials?|dsn)$", re.IGNORECASE
)
"""Setting names whose text values are masked even when not declared secret."""

_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
"""URL query parameters whose values are masked (``sslpassword``, ``api_key``, ``token``...)."""

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


# ----------------------------------------------------------------------------- masking


def mask_url(url: str) -> str:
    """``scheme://user:********@host/db?password=********``: the password (and secret-looking
    query parameters) hidden, the rest kept so the operator sees where it points."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to hide (urlunsplit would also rewrite sqlite:///x)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_value(name: str, value: Any, secret: bool = False) -> Any:
    """A value as ``config show`` prints it: secrets masked (set or not), URLs without their
    password, nested tables masked key by key."""
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(name, v) for v in value]
    if not isinstance(value, str):
        return value
    if secret or SECRET_NAME.search(name):
        return MASK if value else ""
    if _URL.match(value):
        return mask_url(value)
    return value


# ----------------------------------------------------------------------------- config show


class Row(msgspec.Struct):
    name: str
    value: Any
    source: str


def _plugin_rows(
    settings: Settings, file_label: str, env: Mapping[str, str]
) -> dict[str, list[Row]]:
    """Each installed plugin's settings (validated by its own struct), or the raw
    ``[plugins.NAME]`` table of a plugin that is not loaded."""
    from hub.plugin_host.settings import PluginConfigError, load_plugin_settings

    host = _quiet_host(settings)
    out: dict[str, list[Row]] = {}
    for impl in host._impls("lydian_plugin_settings"):
        name = impl.plugin_name
        sources: dict[str, str] = {}
        try:
            struct = impl.function()
            if struct is None:
                continue
            loaded = load_plugin_settings(
                name,
                struct,
                settings.plugin_config.get(name),
                env,
                sources=sources,
                file_label=file_label,
            )
        except PluginConfigError as exc:
            out[name] = [Row("(invalid)", str(exc), "")]
            continue
        except Exception as exc:
            out[name] = [Row("(error)", f"{type(exc).__name__}: {exc}", "")]
            continue
        values = msgspec.to_builtins(loaded.values)
        out[name] = [
            Row(key, mask_value(key, value, "secret" in loaded.flags.get(key, ())), sources[key])
            for key, value in values.items()
        ]
    for name, table in settings.plugin_config.items():
        if name not in out and isinstance(table, dict):
            out[name] = [
                Row(key, mask_value(key, value), f"{file_label} (plugin not loaded)")
                for key, value in table.items()
            ]
    return dict(sorted(out.items()))


def effective_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    """``{"config_file": ..., "hub": [Row], "plugins": {name: [Row]}}`` with secrets masked."""
    import os

    sources: dict[str, str] = {}
    settings = load_settings(env, sources=sources)
    environ = os.environ if env is None else env
    path = Path(environ.get("LYDIAN_CONFIG", "lydian.toml"))
    rows = []
    for field in msgspec.structs.fields(Settings):
        if field.name == "plugin_config":
            continue
        value = getattr(settings, field.name)
        source = sources[field.name]
        if field.name == "secret" and not value:
            source += f" (generated into {Path(settings.data_dir) / 'secret'})"
        rows.append(Row(field.name, mask_value(field.name, value), source))
    return {
        "config_file": f"{path} ({'read' if path.is_file() else 'not found'})",
        "hub": rows,
        "plugins": _plugin_rows(settings, str(path), environ),
    }


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value if value else '""'
    return msgspec.json.encode(value).decode()


def _table(rows: Iterable[Row]) -> list[str]:
    rows = list(rows)
    if not rows:
        return []
    width = max(len(r.name) for r in rows)
    values = [_shown(r.value) for r in rows]
    vwidth = min(40, max(len(v) for v in values))
    return [
        f"  {r.name.ljust(width)}  {v.ljust(vwidth)}  {r.source}".rstrip()
        for r, v in zip(rows, values, strict=True)
    ]


def config_show(args: argparse.Namespace) -> int:
    config = effective_config()
    if args.json:
        print(msgspec.json.encode(config).decode())
        return 0
    print(f"config file: {config['config_file']}")
    print("[hub]")
    print("\n".join(_table(config["hub"])))
    for name, rows in config["plugins"].items():
        print(f"[plugins.{name}]")
        print("\n".join(_table(rows)))
    return 0


# ----------------------------------------------------------------------------- doctor

OK, WARN, FAIL = "ok", "warn", "FAIL"


class Check(msgspec.Struct):
    status: str
    name: str
    detail: str


def requirements_of(plugin: Any) -> list[str]:
    """The executables a plugin declares in ``LYDIAN_REQUIREMENTS`` ("name" or "name?")."""
    declared = getattr(plugin, "LYDIAN_REQUIREMENTS", None)
    if declared is None:
        return []
    if callable(declared):
        declared = declared()
    if isinstance(declared, str):
        declared = [declared]
    return [str(item) for item in declared]


async def _probe(probe: Callable[[], Any], timeout: float) -> tuple[bool, str]:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            detail = await probe()
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return False, text[:200]
    ms = (time.perf_counter() - start) * 1000
    return True, f"{detail} ({ms:.0f} ms)" if detail else f"answers ({ms:.0f} ms)"


async def _store_checks(settings: Settings, timeout: float) -> list[Check]:
    from hub.store.store import Store

    url = settings.resolved_database_url()
    shown = mask_url(url)
    if url.startswith("sqlite") and not settings.sqlite_path.exists() and not settings.database_url:
        status = WARN if settings.auto_migrate else FAIL
        return [
            Check(OK, "database", f"{shown}: embedded SQLite, created on the first serve"),
            Check(status, "migrations", "none applied yet (serve applies them; or lydian migrate)"),
        ]
    store: Store | None = None

    async def connect() -> str:
        nonlocal store
        store = await Store.open(
            url,
            migrate=False,
            pool_min=1,
            pool_max=1,
            connect_timeout=timeout,
            statement_timeout=timeout,
            acquire_timeout=timeout,
        )
        await store.ping()
        return f"{shown} answers"

    checks: list[Check] = []
    try:
        with warnings.catch_warnings():  # piccolo warns on stderr too; the check says it
            warnings.simplefilter("ignore")
            ok, detail = await _probe(connect, timeout)
        checks.append(Check(OK if ok else FAIL, "database", detail if ok else f"{shown}: {detail}"))
        if not ok:
            checks.append(Check(FAIL, "migrations", "unknown: the database does not answer"))
            return checks
        assert store is not None
        pending: list[str] = []

        async def migrations() -> str:
            pending.extend(await store.pending_migrations())
            return ""

        ok, detail = await _probe(migrations, timeout)
        if not ok and re.search(r"does not exist|no such table", detail):
            status = WARN if settings.auto_migrate else FAIL
            checks.append(Check(status, "migrations", "none applied yet; run lydian migrate"))
        elif not ok:
            checks.append(Check(FAIL, "migrations", f"cannot read them: {detail}"))
        elif pending:
            status = WARN if settings.auto_migrate else FAIL
            checks.append(
                Check(
                    status,
                    "migrations",
                    f"{len(pending)} not applied ({', '.join(pending)}); run lydian migrate"
                    + (" (serve applies them: auto_migrate)" if settings.auto_migrate else ""),
                )
            )
        else:
            checks.append(Check(OK, "migrations", "all applied"))
    finally:
        if store is not None:
            try:
                await asyncio.wait_for(store.close(), timeout)
            except Exception:  # the verdict is made; closing a dead pool must not hang
                pass
    return checks


async def _redis_check(settings: Settings, timeout: float) -> Check:
    if not settings.redis_url:
        detail = "not configured (one process; rooms and presence in memory)"
        return Check(FAIL if settings.workers > 1 else OK, "redis", detail)
    from redis.asyncio import Redis

    client = Redis.from_url(
        settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    shown = mask_url(settings.redis_url)
    try:

        async def ping() -> str:
            await client.ping()
            return f"{shown} answers"

        ok, detail = await _probe(ping, timeout)
    finally:
        try:
            await asyncio.wait_for(client.aclose(), timeout)
        except Exception:
            pass
    return Check(OK if ok else FAIL, "redis", detail if ok else f"{shown}: {detail}")


def _quiet_host(settings: Settings) -> Any:
    """The installed plugins, discovered without logging (the reports say what failed)."""
    from hub.plugin_host.host import PluginHost

    logging.disable(logging.CRITICAL)
    try:
        return PluginHost(settings)
    finally:
        logging.disable(logging.NOTSET)


def _plugin_checks(settings: Settings) -> list[Check]:
    from hub.cli.plugins import check_settings

    host = _quiet_host(settings)
    config_errors = check_settings(host, settings)
    named = {n.strip() for n in (settings.plugins or "").split(",") if n.strip()}
    checks = []
    for name in sorted(named - set(host.names())):
        checks.append(Check(FAIL, f"plugin {name}", "named in LYDIAN_PLUGINS but not installed"))
    tools: dict[str, list[tuple[str, bool]]] = {}
    for record in sorted(host._records.values(), key=lambda r: r.name):
        error = record.error or config_errors.get(record.name)
        if error:
            # a plugin the operator asked for, or configured wrongly, must work
            required = record.name in named or record.name in config_errors
            checks.append(Check(FAIL if required else WARN, f"plugin {record.name}", error))
            continue
        checks.append(Check(OK, f"plugin {record.name}", f"loaded {record.version}".rstrip()))
        try:
            needs = requirements_of(record.plugin)
        except Exception as exc:
            checks.append(
                Check(FAIL, f"plugin {record.name}", f"LYDIAN_REQUIREMENTS: {exc}".splitlines()[0])
            )
            continue
        for need in needs:
            optional = need.endswith("?")
            tools.setdefault(need.rstrip("?"), []).append((record.name, optional))
    for tool, users in sorted(tools.items()):
        who = ", ".join(sorted({name for name, _ in users}))
        found = shutil.which(tool)
        if found:
            checks.append(Check(OK, f"tool {tool}", f"{found} (for {who})"))
        else:
            optional = all(opt for _, opt in users)
            checks.append(
                Check(
                    WARN if optional else FAIL,
                    f"tool {tool}",
                    f"not found on PATH ({'optional ' if optional else ''}for {who})",
                )
            )
    return checks


async def diagnose(settings: Settings, timeout: float) -> list[Check]:
    """Every check, in the order they are printed."""
    from hub.access.limits import LimitSpecError, check_settings

    checks = [Check(OK, "config", "settings are valid")]
    try:
        check_settings(settings)
    except LimitSpecError as exc:
        checks = [Check(FAIL, "config", str(exc))]
    if settings.secret:
        checks.append(Check(OK, "secret", "set"))
    else:
        where = Path(settings.data_dir) / "secret"
        shared = " (replicas sharing Redis need one LYDIAN_SECRET)" if settings.redis_url else ""
        checks.append(Check(WARN if shared else OK, "secret", f"generated into {where}{shared}"))
    store, redis = await asyncio.gather(
        _store_checks(settings, timeout), _redis_check(settings, timeout)
    )
    checks.extend(store)
    checks.append(redis)
    checks.extend(await asyncio.to_thread(_plugin_checks, settings))
    return checks


def doctor(args: argparse.Namespace) -> int:
    settings = load_settings()
    checks = asyncio.run(diagnose(settings, args.timeout))
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"{check.status:<4}  {check.name.ljust(width)}  {check.detail}")
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        print(f"lydian doctor: {len(failed)} check(s) failed", file=sys.stderr)
    return 1 if failed else 0


def add_operator_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``config show`` and ``doctor`` to the ``lydian`` parser."""
    config = sub.add_parser("config", help="inspect the settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser(
        "show", help="effective settings, secrets masked, and where each value came from"
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=config_show)

    check = sub.add_parser(
        "doctor", help="check database, migrations, Redis, plugins and the tools they need"
    )
    check.add_argument(
        "--timeout", type=float, default=3.0, help="seconds each network check may take"
    )
    check.set_defaults(func=doctor)
