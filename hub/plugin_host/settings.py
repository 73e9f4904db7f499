"""Plugin settings: a msgspec Struct per plugin, filled from the config file and environment.

Sources, last wins: the struct's defaults < the ``[plugins.NAME]`` table of the config file
< ``LYDIAN_PLUGIN_<NAME>_<FIELD>`` environment variables. Fields annotated with
:data:`Secret` come only from the environment and are masked wherever settings are shown.
Fields annotated with :data:`PerRoom` may be overridden in ``[plugins.NAME.rooms.ROOM]``.

    class Settings(msgspec.Struct):
        api_key: Annotated[str, Secret] = ""
        max_dice: Annotated[int, PerRoom] = 100
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect as mi

from hub.base.config import _coerce

Secret = msgspec.Meta(extra={"secret": True})
"""Annotate a field ``Annotated[str, Secret]``: environment only, never echoed back."""

PerRoom = msgspec.Meta(extra={"per_room": True})
"""Annotate a field ``Annotated[int, PerRoom]``: rooms may override it in the config file."""

MASK = "********"


class PluginConfigError(ValueError):
    """Invalid settings for one plugin: names the plugin, the field and the reason."""

    def __init__(self, plugin: str, field: str | None, reason: str) -> None:
        self.plugin = plugin
        self.field = field
        self.reason = reason
        where = f" field {field!r}" if field else ""
        super().__init__(f"plugin {plugin!r}: invalid setting{where}: {reason}")


def _flags(struct: type[msgspec.Struct]) -> dict[str, set[str]]:
    """``{field name: {"secret", "per_room"}}`` from the fields' ``Meta(extra=...)``."""
    out: dict[str, set[str]] = {}
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    for field in info.fields:
        flags: set[str] = set()
        kind = field.type
        while isinstance(kind, mi.Metadata):
            flags |= {k for k, v in (kind.extra or {}).items() if v}
            kind = kind.type
        out[field.name] = flags
    return out


def env_name(plugin: str, field: str) -> str:
    """The environment variable for one field: ``LYDIAN_PLUGIN_<NAME>_<FIELD>``."""
    clean = "".join(c if c.isalnum() else "_" for c in plugin).upper()
    return f"LYDIAN_PLUGIN_{clean}_{field.upper()}"


def _field_from_error(exc: msgspec.ValidationError) -> str | None:
    text = str(exc)
    if "`$." in text:
        return text.split("`$.", 1)[1].split("`", 1)[0].split(".")[0].split("[")[0]
    if "required field `" in text:
        return text.split("required field `", 1)[1].split("`", 1)[0]
    return None


class PluginSettings:
    """A plugin's validated settings, global and per room."""

    def __init__(
        self,
        plugin: str,
        struct: type[msgspec.Struct],
        values: msgspec.Struct,
        rooms: dict[str, msgspec.Struct],
        flags: dict[str, set[str]],
    ) -> None:
        self.plugin = plugin
        self.struct = struct
        self.values = values
        self.rooms = rooms
        self.flags = flags

    def for_room(self, room: str | None) -> msgspec.Struct:
        return self.rooms.get(room, self.values) if room is not None else self.values

    def secrets(self) -> list[str]:
        """Non-empty secret values, so error texts can be scrubbed of them."""
        out = []
        for name, flags in self.flags.items():
            value = getattr(self.values, name, None)
            if "secret" in flags and isinstance(value, str) and value:
                out.append(value)
        return out

    def public(self, room: str | None = None) -> dict[str, Any]:
        """The settings as builtins with every secret masked (set or not)."""
        data = msgspec.to_builtins(self.for_room(room))
        for name, flags in self.flags.items():
            if "secret" in flags and name in data:
                data[name] = MASK if data[name] else ""
        return data


def load_plugin_settings(
    plugin: str,
    struct: Any,
    table: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    *,
    sources: dict[str, str] | None = None,
    file_label: str = "config file",
) -> PluginSettings:
    """Validate one plugin's settings or raise :class:`PluginConfigError`. A dict passed as
    ``sources`` is filled with where each field came from: ``"default"``, ``file_label``
    (the ``[plugins.NAME]`` table) or ``"env NAME"``."""
    if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
        raise PluginConfigError(
            plugin,
            None,
            f"lydian_plugin_settings must return a msgspec.Struct type, got {struct!r}",
        )
    env = os.environ if env is None else env
    flags = _flags(struct)
    table = dict(table or {})
    rooms_table = table.pop("rooms", {}) or {}
    values: dict[str, Any] = {}
    origin: dict[str, str] = dict.fromkeys(flags, "default")
    for key, value in table.items():
        if key not in flags:
            raise PluginConfigError(plugin, key, "unknown setting")
        if "secret" in flags[key]:
            raise PluginConfigError(
                plugin, key, f"secrets come only from the environment ({env_name(plugin, key)})"
            )
        values[key] = value
        origin[key] = file_label
    fields = {f.name: f for f in msgspec.structs.fields(struct)}
    for name in flags:
        raw = env.get(env_name(plugin, name))
        if raw is None or raw == "":
            continue
        try:
            values[name] = _coerce(raw, fields[name].type)
        except (msgspec.ValidationError, ValueError) as exc:
            raise PluginConfigError(plugin, name, f"{env_name(plugin, name)}: {exc}") from None
        origin[name] = f"env {env_name(plugin, name)}"
    base = _convert(plugin, struct, values)
    rooms: dict[str, msgspec.Struct] = {}
    if not isinstance(rooms_table, Mapping):
        raise PluginConfigError(plugin, "rooms", "must be a table of room tables")
    for room, overrides in rooms_table.items():
        if not isinstance(overrides, Mapping):
            raise PluginConfigError(plugin, f"rooms.{room}", "must be a table")
        for key in overrides:
            if key not in flags:
                raise PluginConfigError(plugin, f"rooms.{room}.{key}", "unknown setting")
            if "per_room" not in flags[key]:
                raise PluginConfigError(
                    plugin, f"rooms.{room}.{key}", "this setting cannot be overridden per room"
                )
        rooms[room] = _convert(plugin, struct, {**values, **overrides})
    if sources is not None:
        sources.update(origin)
    return PluginSettings(plugin, struct, base, rooms, flags)


def _convert(plugin: str, struct: type[msgspec.Struct], values: dict[str, Any]) -> msgspec.Struct:
    try:
        return msgspec.convert(values, struct, strict=False)
    except msgspec.ValidationError as exc:
        raise PluginConfigError(plugin, _field_from_error(exc), str(exc)) from None
