"""``lydian plugin new NAME``: render ``plugin_template/`` into a new installable package.

Template files end in ``.tmpl`` (so tools leave them alone) and may contain, in their
text and in their paths, the placeholders ``{{name}}`` (plugin and command name),
``{{module}}`` (Python package), ``{{dist}}`` (distribution name), ``{{title}}`` and
``{{env}}`` (prefix of the plugin's environment variables) and ``{{hub_requirement}}``
(the compatible ``lydian-hub`` range: this version up to the next major).
"""

from __future__ import annotations

import re
from pathlib import Path

import hub

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def template_dir() -> Path:
    """The template shipped in the wheel, or the one in a source checkout."""
    package = Path(hub.__file__).resolve().parent
    for candidate in (package / "_plugin_template", package.parent / "plugin_template"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("plugin_template not found next to the hub package")


def hub_requirement(version: str | None = None) -> str:
    """``lydian-hub>=MAJOR.MINOR,<MAJOR+1`` for ``version`` (default: this hub's): the SDK
    keeps its promise within a major version (see :mod:`hub.sdk`)."""
    text = version or hub.__version__
    match = re.match(r"(\d+)\.(\d+)", text)
    if match is None:
        raise ValueError(f"hub version {text!r} does not start with MAJOR.MINOR")
    major, minor = int(match[1]), int(match[2])
    return f"lydian-hub>={major}.{minor},<{major + 1}"


def placeholders(name: str) -> dict[str, str]:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"plugin name {name!r}: use lowercase letters, digits and '_', starting with a letter"
        )
    return {
        "name": name,
        "module": f"lydian_{name}",
        "dist": f"lydian-{name.replace('_', '-')}",
        "title": name.replace("_", " ").title(),
        "env": f"LYDIAN_PLUGIN_{name.upper()}_",
        "hub_requirement": hub_requirement(),
    }


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def render_plugin(name: str, parent: Path | str = ".", template: Path | None = None) -> Path:
    """Write the new package to ``parent/lydian-NAME`` and return that directory."""
    values = placeholders(name)
    source = template or template_dir()
    target = Path(parent) / values["dist"]
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    for path in sorted(source.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        relative = _fill(str(path.relative_to(source)), values).removesuffix(".tmpl")
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_fill(path.read_text(), values))
    return target
