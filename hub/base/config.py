"""Hub settings: embedded defaults, overridden by a TOML file and the environment.

Precedence (last wins): built-in defaults < ``lydian.toml`` (``[hub]`` table, path in
``LYDIAN_CONFIG``) < environment variables (``LYDIAN_*``, plus ``DATABASE_URL`` and
``REDIS_URL``).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec


class Settings(msgspec.Struct, kw_only=True):
    """Everything the core needs to run. Plugins declare their own settings structs."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    data_dir: str = ".lydian"
    database_url: str | None = None
    db_pool_min: int = 1
    db_pool_max: int = 10
    redis_url: str | None = None
    redis_prefix: str = "lydian"
    presence_ttl: float = 15.0
    secret: str | None = None
    token_ttl_seconds: int = 7 * 24 * 3600
    allow_guests: bool = True
    # identity (issue 13): DMs, tokens, guests (docs/security.md)
    guest_dm_targets: str = "none"  # whom guests may DM: none | admins | any | "id1,id2"
    revocation_reload_interval: float = 30.0  # re-read revoked tokens (missed announcements)
    auto_migrate: bool = True
    max_frame_bytes: int = 64 * 1024
    ws_compression: bool = False  # permessage-deflate: costs CPU per frame per socket
    max_text_chars: int = 16_000
    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 60.0
    auth_timeout: float = 10.0
    # operations (issue 13, helper robust): database timeouts, readiness, shutdown
    db_connect_timeout: float = 5.0  # opening a PostgreSQL connection
    db_statement_timeout: float = 10.0  # one statement (PostgreSQL); SQLite's busy timeout
    db_acquire_timeout: float = 5.0  # waiting for a free pooled PostgreSQL connection
    store_retry_after: float = 2.0  # told to clients with store_unavailable / 503 Retry-After
    readyz_timeout: float = 2.0  # /readyz: the database (and Redis) must answer within this
    shutdown_grace: float = 2.0  # on shutdown: time for reconnect frames to flush before 1001
    shutdown_retry_after: float = 1.0  # the reconnect hint's retry_after (plus client jitter)
    typing_ttl: float = 6.0
    send_queue_frames: int = 1024
    # frames queued for an in-process room subscriber (Hub.subscribe: plugins, the bridge);
    # one that falls this far behind loses its queue and resumes from the store
    subscriber_queue_frames: Annotated[int, msgspec.Meta(ge=1)] = 1024
    max_replay: int = 5000
    history_page_max: int = 200
    stream_flush_interval: float = 0.03  # at most one stream_delta per stream this often
    stream_flush_chars: int = 512  # ...unless this much text is waiting
    stream_first_token_timeout: float = 60.0  # an answer fails if its first token takes longer
    stream_idle_timeout: float = 30.0  # ...or if the next token takes longer than this
    cache_max_entries: int = 10_000  # L1 (in-process) bound on entries
    cache_max_bytes: int = 64 * 1024 * 1024  # L1 bound on bytes
    cache_default_ttl: float = 300.0
    cache_max_value_bytes: int = 1024 * 1024  # larger values are served uncached
    cache_loader_timeout: float = 10.0
    cache_redis_prefix: str = ""  # L2 keys and channel; "" = per database, see hub.cache.setup
    cache_warm_hottest: int = 100  # previous run's hottest keys loaded into L1 at startup
    max_upload_bytes: int = 10 * 1024 * 1024
    max_attachments_per_message: int = 10
    # abuse limits (issue 13; hub/limits.py, docs/security.md "Limits"). A spec is
    # "ROLE=N/UNIT[:BURST],..." (roles guest, user, admin, agent, * = the others; UNIT s|m|h|d;
    # N and BURST may end in k/M/G; "off" = no limit); per user unless it says otherwise.
    limits: bool = True  # False turns every limit below off
    limit_messages: str = "guest=1/s:20,user=5/s:100,admin=20/s:400,agent=off"  # send, direct
    limit_messages_socket: str = "guest=2/s:20,user=10/s:100,admin=off,agent=off"
    limit_typing: str = "*=2/s:10,agent=off"  # typing frames; over it they are dropped silently
    limit_typing_socket: str = "*=4/s:10,agent=off"
    limit_commands: str = "guest=1/s:5,user=2/s:30,admin=off,agent=off"  # command frames
    limit_commands_socket: str = "guest=1/s:5,user=4/s:30,admin=off,agent=off"
    limit_strikes: int = 20  # refused frames within the retry window, then close 1008
    limit_sockets: str = "guest=5,user=30,admin=100,agent=off"  # open at once (count, no rate)
    limit_rooms: str = "user=20/h:20,admin=off,agent=off"  # rooms created (POST /api/rooms)
    room_creators: str = "user"  # who may create rooms: "user" (any non-guest) or "admin"
    limit_guest_tokens: str = "20/m:30"  # guest tokens minted per client address
    limit_rest_address: str = "100/s:500"  # REST requests per client address
    limit_rest: str = "guest=5/s:50,user=20/s:200,admin=off,agent=off"  # REST requests
    limit_uploads_address: str = "1/s:30"  # uploads per client address
    limit_uploads: str = "guest=10/h:10,user=1/s:30,admin=off,agent=off"  # uploads
    limit_upload_bytes: str = "guest=20M/d,user=1G/d,admin=off,agent=off"  # bytes per day
    limit_upload_bytes_room: str = "2G/d"  # bytes uploaded into one room per day
    models_for_guests: bool = False  # guests may use agents (@assistant, /ask) and /v1
    limit_model_requests: str = "guest=20/d,user=500/d,admin=off,agent=off"  # agent answers, /v1
    limit_model_tokens: str = "guest=20k/d,user=1M/d,admin=off,agent=off"  # tokens answered
    cors_origins: str = ""  # "https://a.example,https://b.example" may call the API (or "*")
    # HTTP read timeouts and upload retention (issue 13, widgetops)
    http_header_timeout: float = 10.0  # a request's line and headers must arrive within this
    http_body_timeout: float = 30.0  # longest wait for the next piece of a request body
    http_body_min_rate: int = 1024  # bytes/s a body must average after its first timeout (0 = off)
    upload_orphan_grace: float = 24 * 3600.0  # unreferenced uploads are deleted after this
    upload_sweep_interval: float = 3600.0  # a replica sweeps orphans this often; 0: never
    # attachment pipeline (issue 15): handler jobs at once per process, each in a child process
    attachment_max_jobs: int = 2
    attachment_start_method: str = "forkserver"  # or "spawn" (never "fork": the loop's threads)
    attachment_max_async_jobs: int = 4  # in-hub (network-bound) handler jobs at once per process
    attachment_max_derived_files: int = 32  # files one handler result may keep (embedded, copies)
    attachment_max_derived_bytes: int = 64 * 1024 * 1024  # their bytes together, per result
    log_level: str = "info"
    plugins: str | None = None  # allow-list "a,b" (env LYDIAN_PLUGINS); None loads every plugin
    trace_hooks: bool = False  # log every plugin hook call (env LYDIAN_TRACE_HOOKS=1)
    plugin_hook_timeout: float = 5.0
    plugin_max_failures: int = 3  # consecutive failures before a plugin is switched off in a room
    plugin_config: dict[str, dict[str, Any]] = {}  # the config file's [plugins.NAME] tables

    @property
    def sqlite_path(self) -> Path:
        return Path(self.data_dir) / "lydian.sqlite3"

    def resolved_database_url(self) -> str:
        """``DATABASE_URL`` if set, else the embedded SQLite file under ``data_dir``."""
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    def resolved_secret(self) -> str:
        """The signing secret; generated once and kept under ``data_dir`` when not configured."""
        if self.secret:
            return self.secret
        path = Path(self.data_dir) / "secret"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        path.write_text(value)
        path.chmod(0o600)
        return value


_ENV_ALIASES = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}
_TOML_TABLES = ("hub", "plugins")

DEFAULT = "default"
OVERRIDE = "override"
"""Provenance labels (see :func:`load_settings`); the others are ``env NAME`` and the
config file's path."""


class SettingsError(ValueError):
    """A bad setting: the message is one line naming the variable (or file key) and what
    was expected, e.g. ``LYDIAN_PORT: expected an integer, got 'abc'``."""


def env_var(field: str) -> str:
    """The environment variable of a :class:`Settings` field."""
    return _ENV_ALIASES.get(field, f"LYDIAN_{field.upper()}")


def describe_type(field_type: Any) -> str:
    """A type as an operator reads it: ``an integer``, ``a number``, ``true or false``..."""
    import msgspec.inspect as mi

    return _describe(mi.type_info(field_type))


def _describe(info: Any) -> str:
    import msgspec.inspect as mi

    while isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        kinds = [_describe(t) for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(dict.fromkeys(kinds)) or "nothing"
    names = {
        mi.IntType: "an integer",
        mi.FloatType: "a number",
        mi.BoolType: "true or false",
        mi.StrType: "a string",
        mi.DictType: "a table",
        mi.ListType: "a list",
    }
    for kind, text in names.items():
        if isinstance(info, kind):
            low = getattr(info, "ge", None)
            return text if low is None else f"{text} of at least {low}"
    return type(info).__name__.removesuffix("Type").lower()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(raw: str, field_type: Any) -> Any:
    """Turn an environment string into the field's type through msgspec's own conversion."""
    text = raw.strip()
    if text.lower() in {"true", "false"}:
        text = text.lower()
    try:
        return msgspec.json.decode(text.encode(), type=field_type, strict=False)
    except msgspec.DecodeError:
        return msgspec.convert(raw, field_type, strict=False)


def _convert(value: Any, field_type: Any, where: str) -> Any:
    try:
        return msgspec.convert(value, field_type, strict=False)
    except msgspec.ValidationError:
        raise SettingsError(
            f"{where}: expected {describe_type(field_type)}, got {_shown(value)}"
        ) from None


def _read_config_file(path: Path) -> dict[str, Any]:
    """The config file's tables; unknown tables and ``[hub]`` keys are refused with the
    closest valid name."""
    import difflib

    try:
        document = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read it: {exc.strerror or exc}") from None

    def refuse(where: str, what: str, key: str, valid: list[str]) -> SettingsError:
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"
        return SettingsError(f"{where}: unknown {what} {key!r}{hint}")

    for table in document:
        if table not in _TOML_TABLES:
            raise refuse(str(path), "table", table, list(_TOML_TABLES))
    hub = document.get("hub", {})
    if not isinstance(hub, dict):
        raise SettingsError(f"{path}: 'hub' must be a table ([hub])")
    valid = [f.name for f in msgspec.structs.fields(Settings) if f.name != "plugin_config"]
    for key in hub:
        if key not in valid:
            raise refuse(f"{path} [hub]", "setting", key, valid)
    return document


def load_settings(
    env: dict[str, str] | None = None,
    *,
    sources: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings` from the config file, the environment and explicit overrides.

    This is the one place that knows the sources and their precedence: pass a dict as
    ``sources`` and it is filled with where each field's value came from (``"default"``,
    the config file's path, ``"env NAME"`` or ``"override"``). A bad value raises
    :class:`SettingsError` (one line naming the variable and the expected type)."""
    env = dict(os.environ if env is None else env)
    fields = {field.name: field for field in msgspec.structs.fields(Settings)}
    values: dict[str, Any] = {}
    origin: dict[str, str] = dict.fromkeys(fields, DEFAULT)
    config_path = Path(env.get("LYDIAN_CONFIG", "lydian.toml"))
    if config_path.is_file():
        document = _read_config_file(config_path)
        for key, value in document.get("hub", {}).items():
            values[key] = _convert(value, fields[key].type, f"{config_path} [hub] {key}")
            origin[key] = str(config_path)
        if "plugins" in document:
            values["plugin_config"] = document["plugins"]
            origin["plugin_config"] = str(config_path)
    for field in fields.values():
        name = env_var(field.name)
        if name in env and env[name] != "":
            try:
                values[field.name] = _coerce(env[name], field.type)
            except (msgspec.ValidationError, ValueError):
                raise SettingsError(
                    f"{name}: expected {describe_type(field.type)}, got {_shown(env[name])}"
                ) from None
            origin[field.name] = f"env {name}"
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in fields:
            raise SettingsError(f"unknown setting {key!r}")
        values[key] = value
        origin[key] = OVERRIDE
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:  # an override out of range (TOML/env are checked above)
        raise SettingsError(f"invalid setting: {exc}") from None
    if sources is not None:
        sources.update(origin)
    return settings
