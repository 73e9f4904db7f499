"""Operator basics (issue 14): plugins whose library is missing, ``--version``, ``config show``,
bad settings in one line, ``doctor``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.test_cli import CLEAN_ENV, _serve

HERE = Path(__file__).resolve().parent.parent

BLOCKER = textwrap.dedent(
    '''
    """Pretend some libraries are not installed: importing them fails like a plain install."""
    import os
    import sys


    class _Blocker:
        names = set(os.environ["LYDIAN_TEST_BLOCK_IMPORTS"].split(","))

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, _Blocker())
    '''
)


def _env_without(tmp_path: Path, *modules: str, **extra: str) -> dict[str, str]:
    """An environment whose interpreters cannot import ``modules`` (a ``sitecustomize`` on
    PYTHONPATH installs a meta-path finder that refuses them)."""
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join([str(HERE), str(site)])
    return {
        **CLEAN_ENV,
        "PYTHONPATH": path,
        "LYDIAN_TEST_BLOCK_IMPORTS": ",".join(modules),
        **extra,
    }


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ------------------------------------------------------------ plugins whose library is missing


async def test_serve_without_the_adapter_libraries_says_so_in_one_line_each(tmp_path):
    env = _env_without(tmp_path, "slack_bolt", "discord")
    proc, _port = await _serve(tmp_path, env)
    proc.send_signal(signal.SIGINT)
    output = await asyncio.to_thread(lambda: proc.communicate(timeout=15)[0])
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert "ModuleNotFoundError" not in output, output
    for name in ("slack", "discord"):
        lines = [line for line in output.splitlines() if f"plugin {name!r}" in line]
        assert lines == [
            f"plugin {name!r} not loaded: needs the 'adapters' extra "
            f'(pip install "lydian-hub[adapters]"); module '
            f"{'slack_bolt' if name == 'slack' else 'discord'!r} is missing"
        ], output


def test_plugins_list_shows_the_missing_library_as_the_status(tmp_path):
    env = _env_without(tmp_path, "slack_bolt")
    result = _run("plugins", "list", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "not loaded: needs the 'adapters' extra" in rows["slack"]
    assert rows["discord"].rstrip().endswith("ok")  # the other adapter is untouched
    assert result.stderr.count("\n") == 1 and "plugin 'slack' not loaded" in result.stderr


def test_a_plugin_that_raises_on_import_is_one_line_naming_the_place(tmp_path):
    """Not a missing library but a bug: still one line (type, message, file:line)."""
    from hub.plugins import PluginNotLoaded, load_entry_point

    pkg = tmp_path / "broken_plugin_mod.py"
    pkg.write_text("x = 1\nraise RuntimeError('boom\\nsecond line')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib.metadata

        ep = importlib.metadata.EntryPoint("broken", "broken_plugin_mod", "lydian.plugins")
        try:
            load_entry_point(ep)
        except PluginNotLoaded as exc:
            text = str(exc)
        else:
            raise AssertionError("the import did not fail")
    finally:
        sys.path.remove(str(tmp_path))
    assert text.startswith("plugin 'broken' not loaded: import failed: RuntimeError: boom (")
    assert text.endswith("broken_plugin_mod.py:2)") and "\n" not in text
