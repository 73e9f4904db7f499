"""The import contracts of ``.importlinter`` hold on this checkout, and each one can fail.

Every contract is checked on the real tree; then, for each contract, a copy of the packages
gets one import that breaks it and import-linter must report that contract broken. The
checks run in a subprocess whose ``PYTHONPATH`` holds only the tree being checked.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
PACKAGES = {  # import name -> where it lives in the checkout
    "hub": ROOT / "hub",
    "lydian_plugins": ROOT / "plugins" / "lydian_plugins",
    "lydian_adapters": ROOT / "adapters" / "lydian_adapters",
}
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def contracts() -> dict[str, str]:
    """``{contract id: contract name}`` as written in ``.importlinter``."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG, encoding="utf-8")
    prefix = "importlinter:contract:"
    return {s[len(prefix) :]: parser[s]["name"] for s in parser.sections() if s.startswith(prefix)}


def lint(path: str, config: Path, *only: str) -> subprocess.CompletedProcess[str]:
    """Run import-linter (no cache) on the packages found on ``path``."""
    args = [str(config), "--no-cache", "--no-logo"]
    for contract in only:
        args += ["--contract", contract]
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-c", LINT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        timeout=120,
    )


def test_every_contract_is_kept_on_this_checkout():
    found = contracts()
    assert {"hub-layers", "hub-acyclic", "hub-not-builtins", "builtins-independent"} <= set(found)
    path = os.pathsep.join(str(p.parent) for p in PACKAGES.values())
    done = lint(path, CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in found.values():
        assert f"{name} KEPT" in done.stdout, done.stdout
    assert f"Contracts: {len(found)} kept, 0 broken." in done.stdout, done.stdout


# (contract broken, file of the copy to change, what to append to it, why it breaks)
VIOLATIONS = [
    pytest.param(
        "hub-layers", "hub/base/protocol.py", "from hub.web import app\n", id="base-imports-web"
    ),
    pytest.param(
        "hub-layers",
        "hub/ai/agents.py",
        "import typing\n\nif typing.TYPE_CHECKING:\n    from hub.core import Hub\n",
        id="type-only-import-of-core-counts",
    ),
    pytest.param(
        "hub-layers", "hub/newfloor/__init__.py", '"""A package on no floor."""\n', id="no-floor"
    ),
    pytest.param(
        "hub-acyclic",
        "hub/store/engines.py",
        "import hub.store.piccolo_conf\n",  # piccolo_conf imports engines: a circle in a floor
        id="circle-inside-store",
    ),
    pytest.param(
        "hub-not-builtins", "hub/core.py", "import lydian_plugins.echo\n", id="hub-imports-plugin"
    ),
    pytest.param(
        "builtins-independent",
        "lydian_plugins/echo/__init__.py",
        "import lydian_adapters.bridge\n",
        id="plugin-imports-adapter",
    ),
]


@pytest.mark.parametrize(("contract", "target", "line"), VIOLATIONS)
def test_each_contract_reports_a_violation(tmp_path, contract, target, line):
    src = tmp_path / "src"
    for name, package in PACKAGES.items():
        shutil.copytree(package, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / ".importlinter"
    shutil.copy(CONFIG, config)
    path = src / target
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line)
    name = contracts()[contract]

    done = lint(str(src), config, contract)

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{name} BROKEN" in done.stdout, done.stdout
    assert "Contracts: 0 kept, 1 broken." in done.stdout, done.stdout
    if contract == "hub-acyclic":  # a circle inside one floor: only this contract sees it
        others = lint(str(src), config, "hub-layers")
        assert others.returncode == 0, others.stdout + others.stderr
