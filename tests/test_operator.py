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

import pytest

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


# ------------------------------------------------------------ a bad setting is one line


def _one_line_refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LYDIAN_PORT", "abc", "LYDIAN_PORT: expected an integer, got 'abc'"),
        ("LYDIAN_PRESENCE_TTL", "soon", "LYDIAN_PRESENCE_TTL: expected a number, got 'soon'"),
        (
            "LYDIAN_ALLOW_GUESTS",
            "maybe",
            "LYDIAN_ALLOW_GUESTS: expected true or false, got 'maybe'",
        ),
    ],
)
def test_a_bad_environment_setting_is_one_line_and_exit_2(tmp_path, variable, value, expected):
    result = _run("serve", cwd=tmp_path, env={**CLEAN_ENV, variable: value})
    assert _one_line_refusal(result) == f"lydian: {expected}"


@pytest.mark.parametrize("command", [("migrate",), ("plugins", "list"), ("token", "alice")])
def test_every_command_refuses_a_bad_setting_the_same_way(tmp_path, command):
    result = _run(*command, cwd=tmp_path, env={**CLEAN_ENV, "LYDIAN_DB_POOL_MAX": "ten"})
    assert _one_line_refusal(result) == "lydian: LYDIAN_DB_POOL_MAX: expected an integer, got 'ten'"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[hub]\nport = "abc"\n', "lydian.toml [hub] port: expected an integer, got 'abc'"),
        (
            "[hub]\nprot = 8001\n",
            "lydian.toml [hub]: unknown setting 'prot' (did you mean 'port'?)",
        ),
        (
            "[hub]\nredis_ulr = 'redis://x'\n",
            "lydian.toml [hub]: unknown setting 'redis_ulr' (did you mean 'redis_url'?)",
        ),
        ("[hbu]\nport = 1\n", "lydian.toml: unknown table 'hbu' (did you mean 'hub'?)"),
        ("[hub\n", "lydian.toml: not valid TOML: Expected ']' at the end of a table declaration"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, toml, expected):
    (tmp_path / "lydian.toml").write_text(toml)
    line = _one_line_refusal(_run("serve", cwd=tmp_path, env=CLEAN_ENV))
    assert line.startswith(f"lydian: {expected}"), line


def test_a_bad_limit_spec_still_stops_serve_with_one_line(tmp_path):
    env = {**CLEAN_ENV, "LYDIAN_LIMIT_MESSAGES": "user=fast"}
    line = _one_line_refusal(_run("serve", cwd=tmp_path, env=env))
    assert line.startswith("lydian: LYDIAN_LIMIT_MESSAGES: bad entry 'user=fast'"), line


def test_load_settings_refuses_bad_values_with_settings_error(tmp_path):
    from hub.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"^LYDIAN_WORKERS: expected an integer, got 'two'$"):
        load_settings(env={"LYDIAN_WORKERS": "two", "LYDIAN_CONFIG": "/nonexistent"})
    config = tmp_path / "x.toml"
    config.write_text("[hub]\nmax_text_chars = [1]\n")
    with pytest.raises(SettingsError, match=r"x.toml \[hub\] max_text_chars: expected an integer"):
        load_settings(env={"LYDIAN_CONFIG": str(config)})
    # a good file still loads, and the environment still wins over it
    config.write_text('[hub]\nport = 8100\nhost = "0.0.0.0"\n[plugins.echo]\nprefix = "x"\n')
    settings = load_settings(env={"LYDIAN_CONFIG": str(config), "LYDIAN_PORT": "8200"})
    assert (settings.port, settings.host) == (8200, "0.0.0.0")
    assert settings.plugin_config == {"echo": {"prefix": "x"}}


# ------------------------------------------------------------ version and packaging


def test_version_prints_the_one_version(tmp_path):
    import hub

    result = _run("--version", cwd=tmp_path, env={**CLEAN_ENV, "PYTHONPATH": str(HERE)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"lydian {hub.__version__}\n"


def test_the_version_has_one_source_and_the_wheel_ships_py_typed(tmp_path):
    """pyproject.toml has no version of its own: hatch reads hub/__init__.py's, and the
    wheel built from this tree carries that version and the ``py.typed`` marker."""
    import tomllib
    import zipfile

    import hub

    project = tomllib.loads((HERE / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "hub/__init__.py"
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=HERE,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert "hub/py.typed" in names
    assert f"\nVersion: {hub.__version__}\n" in text
