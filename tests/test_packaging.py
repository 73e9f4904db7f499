"""Acceptance: the distribution as a user installs it, in a fresh virtual environment.

The wheel of this checkout is built (``pip wheel``, the same PEP 517 build ``pip install .``
runs) and installed with its dependencies into a new venv; then ``lydian --version``, what
the install put into site-packages, and ``lydian serve`` on a plain install: it starts with no
traceback, and the adapters whose libraries are missing (slack-bolt and discord.py are in the
``adapters`` extra) say so in one line each. The README's first command, ``pip install -e .
&& lydian serve``, gets the same ``lydian serve`` check in a second venv.

Each venv is made once for the module. Installing the dependencies takes half a minute with a
warm pip cache (the package index configured for pip on this machine is used).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import hub
from tests.procs import STARTUP_TIMEOUT, clean_env
from tests.support import eventually, free_port

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT = 900.0
"""Bound on building and installing (dependencies from the package index; pip's cache helps)."""

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 300)


@dataclass
class Venv:
    path: Path
    log: str  # what the install printed

    @property
    def bin(self) -> Path:
        return self.path / "bin"


def _env(**extra: str) -> dict[str, str]:
    """No hub settings, and nothing that points Python at this checkout or another env: the
    venv's ``lydian`` must run the installed code."""
    env = clean_env(**extra)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def _run(args: list[str | Path], cwd: Path, timeout: float = INSTALL_TIMEOUT) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{output[-4000:]}"
    return output


def _make_venv(where: Path, *install: str | Path) -> Venv:
    """A new venv at ``where`` with ``pip install *install`` (dependencies included)."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    log = _run(
        [where / "bin" / "python", "-m", "pip", "install", "--progress-bar", "off", *install],
        where.parent,
    )
    return Venv(where, log)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """``pip install`` of the wheel built from this checkout into a new venv."""
    root = tmp_path_factory.mktemp("wheel-install")
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, ROOT], root)
    wheels = list(dist.glob("lydian_hub-*.whl"))
    assert len(wheels) == 1, wheels
    assert wheels[0].name.startswith(f"lydian_hub-{hub.__version__}-")
    return _make_venv(root / "venv", wheels[0])


@pytest.fixture(scope="module")
def editable_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The README's first command, ``pip install -e .``, in a new venv."""
    root = tmp_path_factory.mktemp("editable-install")
    return _make_venv(root / "venv", "-e", ROOT)


def _probe(venv: Venv, cwd: Path) -> dict[str, object]:
    """Where the venv's Python finds things."""
    code = (
        "import importlib.util, json, sysconfig, hub\n"
        "print(json.dumps({'purelib': sysconfig.get_paths()['purelib'], 'hub': hub.__file__,"
        " 'plugins': importlib.util.find_spec('plugins') is not None,"
        " 'adapters': importlib.util.find_spec('adapters') is not None}))"
    )
    return json.loads(_run([venv.bin / "python", "-c", code], cwd, timeout=60))


def test_lydian_version_is_the_package_version(wheel_venv: Venv) -> None:
    out = _run([wheel_venv.bin / "lydian", "--version"], wheel_venv.path, timeout=60)
    assert out.strip() == f"lydian {hub.__version__}"


def test_site_packages_gains_no_generic_top_level_names(wheel_venv: Venv, tmp_path: Path) -> None:
    probe = _probe(wheel_venv, tmp_path)
    site = Path(str(probe["purelib"]))
    assert Path(str(probe["hub"])).is_relative_to(site), probe  # the installed code, not ours
    assert not (site / "plugins").exists() and not (site / "adapters").exists()
    assert probe["plugins"] is False and probe["adapters"] is False, probe
    dist_info = site / f"lydian_hub-{hub.__version__}.dist-info"
    added = {
        line.split(",", 1)[0].split("/", 1)[0]
        for line in (dist_info / "RECORD").read_text().splitlines()
        if line and not line.startswith("..")  # ../../../bin/lydian: the console script
    }
    assert added == {"hub", "lydian_plugins", "lydian_adapters", dist_info.name}


async def _serve(venv: Venv, tmp_path: Path, stop: signal.Signals) -> tuple[int, str]:
    """Run ``lydian serve`` from ``venv`` until ``/readyz`` answers 200, stop it with ``stop``;
    return its exit code and everything it printed."""
    port = free_port()
    env = _env(LYDIAN_PORT=str(port), LYDIAN_DATA_DIR=str(tmp_path / "data"))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv.bin / "lydian"), "serve"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"lydian serve exited {proc.returncode}:\n{log.read_text()}"
                    )
                try:
                    resp = await http.get("/readyz")
                except httpx.TransportError:
                    return False
                return resp.status_code == 200

            await eventually(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what="/readyz")
            health = (await http.get("/healthz")).json()
            assert health["pid"] == proc.pid, "another process answers on the port"
        proc.send_signal(stop)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log.read_text()


def _assert_plain_start(code: int, output: str, stop: signal.Signals) -> None:
    assert "Traceback" not in output, output
    # a clean exit: 0 or, after a complete shutdown, the signal itself (uvicorn re-raises
    # SIGTERM once it has shut down, so that a supervisor sees how its child ended)
    assert code in (0, -stop), f"exit code {code}:\n{output}"
    assert "Application shutdown complete" in output, output
    # the built-ins are found through their entry points, like any third party's plugin
    assert re.search(r"plugin 'echo' .*started", output), output
    for plugin, library in (("slack", "slack_bolt"), ("discord", "discord")):
        lines = [line for line in output.splitlines() if f"'{plugin}'" in line]
        assert len(lines) == 1, f"{plugin}: {lines}"
        assert "not loaded" in lines[0] and "adapters" in lines[0] and library in lines[0]


async def test_plain_install_serves_without_traceback(wheel_venv: Venv, tmp_path: Path) -> None:
    _assert_plain_start(*await _serve(wheel_venv, tmp_path, signal.SIGINT), signal.SIGINT)


async def test_readme_first_command_serves_without_traceback(
    editable_venv: Venv, tmp_path: Path
) -> None:
    probe = _probe(editable_venv, tmp_path)
    assert Path(str(probe["hub"])).is_relative_to(ROOT), probe  # editable: this checkout
    _assert_plain_start(*await _serve(editable_venv, tmp_path, signal.SIGTERM), signal.SIGTERM)


def test_readme_commands_are_the_ones_tested() -> None:
    """The README's two commands, as this module (first) and .ci/run (second) run them."""
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e . && lydian serve" in readme
    assert 'pip install -e ".[test]" && python -m pytest' in readme
    assert 'pip install -q -e ".[test]" && python -m pytest' in (ROOT / ".ci" / "run").read_text()
