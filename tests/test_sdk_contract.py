"""Acceptance: plugins and adapters import only ``hub.sdk`` (the ``sdk-only`` contract of
``.importlinter``), and the contract fails when one of them imports a hub internal."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hub.sdk

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = "sdk-only"
SECTION = f"importlinter:contract:{CONTRACT}"
LINT_IMPORTS = shutil.which("lint-imports") or "lint-imports"


def _config(tmp_path: Path, source: str) -> Path:
    """``.importlinter`` as it is, with the contract checked for ``source`` only."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    assert config.has_section(SECTION), f".importlinter has no contract {CONTRACT!r}"
    sources = config[SECTION]["source_modules"].split()
    assert sorted(sources) == ["lydian_adapters", "lydian_plugins"]
    config[SECTION]["source_modules"] = source
    out = tmp_path / ".importlinter"
    with out.open("w") as f:
        config.write(f)
    return out


def _lint(config: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(config), "--contract", CONTRACT, "--no-cache"],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


TREE = [ROOT, ROOT / "plugins", ROOT / "adapters"]


@pytest.mark.parametrize("source", ["lydian_plugins", "lydian_adapters"])
def test_the_built_ins_import_only_the_sdk(tmp_path, source):
    result = _lint(_config(tmp_path, source), TREE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout, result.stdout


def test_a_plugin_importing_a_hub_internal_breaks_the_contract(tmp_path):
    copy = tmp_path / "plugins"
    shutil.copytree(ROOT / "plugins" / "lydian_plugins", copy / "lydian_plugins")
    echo = copy / "lydian_plugins" / "echo" / "__init__.py"
    echo.write_text(echo.read_text() + "\nfrom hub.core import Hub  # noqa: E402\n")
    config = _config(tmp_path, "lydian_plugins")
    result = _lint(config, [copy, ROOT, ROOT / "adapters"])  # the copy, not plugins/
    assert result.returncode != 0, result.stdout
    assert "0 kept, 1 broken" in result.stdout, result.stdout
    assert "lydian_plugins is not allowed to import hub.core" in result.stdout, result.stdout
    assert "lydian_plugins.echo -> hub.core" in result.stdout, result.stdout


def test_the_sdk_exports_what_it_names():
    """Every name in ``hub.sdk.__all__`` exists, and the SDK never imports the floors
    above it (``hub.core``, ``hub.web``, ``hub.cli``)."""
    assert all(hasattr(hub.sdk, name) for name in hub.sdk.__all__)
    code = (
        "import sys, hub.sdk; "
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['hub', 'core'], ['hub', 'web'], ['hub', 'cli'])))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in TREE)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
