"""Operator basics (issue 14): plugins whose library is missing, ``--version``, ``config show``,
bad settings in one line, ``doctor``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from asyncio.subprocess import PIPE
from pathlib import Path

import msgspec
import pytest

from tests.support import free_port
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


async def test_an_adapter_missing_its_configuration_says_so_in_one_line(tmp_path):
    """Slack with a bot token but no way for events to come in warns once; an adapter with
    no token says it stays idle (info)."""
    env = {
        **CLEAN_ENV,
        "LYDIAN_LOG_LEVEL": "info",
        "LYDIAN_PLUGIN_SLACK_BOT_TOKEN": "xoxb-test",
        "LYDIAN_PLUGIN_SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/",
    }
    proc, _port = await _serve(tmp_path, env)
    proc.send_signal(signal.SIGINT)
    output = await asyncio.to_thread(lambda: proc.communicate(timeout=15)[0])
    assert "Traceback" not in output, output
    slack = [
        line for line in output.splitlines() if "plugin 'slack': no LYDIAN_PLUGIN_SLACK" in line
    ]
    assert len(slack) == 1 and "nothing from Slack reaches the hub" in slack[0], output
    assert "xoxb-test" not in output
    idle = [line for line in output.splitlines() if "plugin 'discord' idle" in line]
    assert len(idle) == 1 and idle[0].endswith("LYDIAN_PLUGIN_DISCORD_BOT_TOKEN is not set")


def test_plugins_list_shows_the_missing_library_as_the_status(tmp_path):
    env = _env_without(tmp_path, "slack_bolt")
    result = _run("plugins", "list", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "not loaded: needs the 'adapters' extra" in rows["slack"]
    assert rows["discord"].rstrip().endswith("ok")  # the other adapter is untouched
    assert result.stderr.count("\n") == 1 and "plugin 'slack' not loaded" in result.stderr


def test_the_hint_names_the_extra_the_requirement_or_just_the_module():
    """From the distribution's metadata: an optional extra (not the test extra that also
    lists it), a plain requirement (a broken install), or an unknown module."""
    import importlib.metadata

    from hub.plugin_host.host import missing_library_hint

    dist = importlib.metadata.distribution("lydian-hub")
    assert missing_library_hint(dist, "discord.ext").startswith(
        "needs the 'adapters' extra (pip install \"lydian-hub[adapters]\")"
    )
    assert missing_library_hint(dist, "pluggy") == (
        "needs 'pluggy', which is not installed (pip install \"lydian-hub\")"
    )
    assert missing_library_hint(dist, "no_such_lib") == (
        "needs the Python module 'no_such_lib', which is not installed"
    )
    assert (
        missing_library_hint(None, "x.y") == "needs the Python module 'x', which is not installed"
    )


def test_a_plugin_that_raises_on_import_is_one_line_naming_the_place(tmp_path):
    """Not a missing library but a bug: still one line (type, message, file:line)."""
    from hub.plugin_host.host import PluginNotLoaded, load_entry_point

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
    from hub.base.config import SettingsError, load_settings

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


# ------------------------------------------------------------ config show


def test_config_show_masks_secrets_and_names_each_source(tmp_path):
    (tmp_path / "lydian.toml").write_text(
        "[hub]\nport = 8100\n[plugins.echo]\nmax_dice = 7\n"
        '[plugins.slack]\nbot_token = "xoxb-file-secret"\napi_url = "https://u:pw9@slack.test/"\n'
    )
    env = _env_without(
        tmp_path,
        "slack_bolt",  # a plugin that is not loaded: its raw table is shown, still masked
        LYDIAN_SECRET="hub-signing-secret-1",
        LYDIAN_WORKERS="3",
        DATABASE_URL="postgresql://postgres:dbpass-2@db.test:5432/lydian?sslpassword=qp-3",
        REDIS_URL="redis://:redispass-4@redis.test:6379/0",
        LYDIAN_PLUGIN_OPENAI_PROVIDER_API_KEY="sk-apikey-5",
        LYDIAN_PLUGIN_OPENAI_PROVIDER_BASE_URL="https://user:urlpass-6@llm.test/v1",
    )
    text = _run("config", "show", cwd=tmp_path, env=env)
    as_json = _run("config", "show", "--json", cwd=tmp_path, env=env)
    for result in (text, as_json):
        assert result.returncode == 0, result.stderr
        for secret in ("signing-secret-1", "dbpass-2", "qp-3", "redispass-4", "apikey-5"):
            assert secret not in result.stdout + result.stderr
        for secret in ("urlpass-6", "xoxb-file-secret", "pw9"):
            assert secret not in result.stdout + result.stderr
    config = json.loads(as_json.stdout)
    hub = {row["name"]: row for row in config["hub"]}
    assert hub["port"] == {"name": "port", "value": 8100, "source": "lydian.toml"}
    assert hub["workers"] == {"name": "workers", "value": 3, "source": "env LYDIAN_WORKERS"}
    assert hub["host"] == {"name": "host", "value": "127.0.0.1", "source": "default"}
    assert hub["secret"]["value"] == "********"
    assert hub["database_url"]["value"] == (
        "postgresql://postgres:********@db.test:5432/lydian?sslpassword=********"
    )
    assert hub["database_url"]["source"] == "env DATABASE_URL"
    assert hub["redis_url"]["value"] == "redis://:********@redis.test:6379/0"
    plugins = {name: {r["name"]: r for r in rows} for name, rows in config["plugins"].items()}
    assert plugins["echo"]["max_dice"] == {"name": "max_dice", "value": 7, "source": "lydian.toml"}
    assert plugins["echo"]["max_sides"]["source"] == "default"
    provider = plugins["openai_provider"]
    assert provider["api_key"]["value"] == "********"
    assert provider["api_key"]["source"] == "env LYDIAN_PLUGIN_OPENAI_PROVIDER_API_KEY"
    assert provider["base_url"]["value"] == "https://user:********@llm.test/v1"
    assert plugins["slack"]["bot_token"]["value"] == "********"
    assert plugins["slack"]["bot_token"]["source"] == "lydian.toml (plugin not loaded)"
    # the text form has the same rows: name, value, source
    assert re.search(r"^  port +8100 +lydian\.toml$", text.stdout, re.M), text.stdout
    assert re.search(r"^  workers +3 +env LYDIAN_WORKERS$", text.stdout, re.M), text.stdout


def test_load_settings_records_every_source_with_the_right_precedence(tmp_path):
    from hub.base.config import Settings, load_settings

    config = tmp_path / "lydian.toml"
    config.write_text("[hub]\nport = 8100\nhost = '0.0.0.0'\nworkers = 2\n")
    sources: dict[str, str] = {}
    env = {"LYDIAN_CONFIG": str(config), "LYDIAN_HOST": "10.0.0.1", "LYDIAN_WORKERS": "4"}
    settings = load_settings(env, sources=sources, workers=5)
    assert (settings.port, settings.host, settings.workers) == (8100, "10.0.0.1", 5)
    assert sources["port"] == str(config)
    assert sources["host"] == "env LYDIAN_HOST"
    assert sources["workers"] == "override"
    assert sources["data_dir"] == "default"
    assert set(sources) == {f.name for f in msgspec.structs.fields(Settings)}


# ------------------------------------------------------------ doctor


def _doctor_lines(result: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    out = {}
    for line in result.stdout.splitlines():
        status, rest = line.split(None, 1)
        parts = re.split(r"\s{2,}", rest, maxsplit=1)
        name, detail = parts[0], parts[1] if len(parts) > 1 else ""
        out[name] = (status, detail)
    return out


def test_doctor_on_a_migrated_embedded_store_is_all_ok(tmp_path):
    assert _run("migrate", cwd=tmp_path, env=CLEAN_ENV).returncode == 0
    result = _run("doctor", cwd=tmp_path, env=CLEAN_ENV)
    lines = _doctor_lines(result)
    assert result.returncode == 0, result.stdout
    assert {status for status, _ in lines.values()} == {"ok"}, result.stdout
    assert lines["database"][1].startswith("sqlite:///.lydian/lydian.sqlite3 answers")
    assert lines["migrations"] == ("ok", "all applied")
    assert lines["plugin echo"][0] == "ok" and lines["plugin slack"][0] == "ok"
    assert lines["secret"] == ("ok", "generated into .lydian/secret")


async def test_doctor_fails_fast_on_a_silent_database_and_a_dead_redis(tmp_path):
    from tests.blackhole import BlackHoleProxy

    proxy = await BlackHoleProxy(5432).start()
    proxy.drop()  # accepts connections, never answers
    env = {
        **CLEAN_ENV,
        "DATABASE_URL": f"postgresql://postgres:pw-x@127.0.0.1:{proxy.port}/test",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli", "doctor", "--timeout", "1",
            cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await proxy.stop()
    result = subprocess.CompletedProcess([], proc.returncode, stdout.decode(), stderr.decode())
    lines = _doctor_lines(result)
    assert result.returncode == 1, result.stdout
    assert lines["database"][0] == "FAIL"
    assert lines["database"][1].endswith("no answer within 1 s"), lines["database"]
    assert "pw-x" not in result.stdout and ":********@" in lines["database"][1]
    assert lines["migrations"][0] == "FAIL"
    assert lines["redis"][0] == "FAIL", result.stdout
    assert lines["secret"][0] == "warn" and "one LYDIAN_SECRET" in lines["secret"][1]
    assert "lydian doctor: 3 check(s) failed" in result.stderr


async def test_doctor_names_migrations_not_applied(tmp_path):
    from tests.procs import pg_schema

    async with pg_schema() as url:
        env = {**CLEAN_ENV, "DATABASE_URL": url, "LYDIAN_AUTO_MIGRATE": "false"}
        before = await asyncio.to_thread(_run, "doctor", cwd=tmp_path, env=env)
        assert (await asyncio.to_thread(_run, "migrate", cwd=tmp_path, env=env)).returncode == 0
        after = await asyncio.to_thread(_run, "doctor", cwd=tmp_path, env=env)
    assert before.returncode == 1, before.stdout
    status, detail = _doctor_lines(before)["migrations"]
    assert (status, detail) == ("FAIL", "none applied yet; run lydian migrate")
    assert _doctor_lines(before)["database"][0] == "ok"
    assert after.returncode == 0, after.stdout
    assert _doctor_lines(after)["migrations"] == ("ok", "all applied")


def _installed_plugin(tmp_path: Path, name: str, body: str) -> Path:
    """A plugin "installed" without pip: a module plus a ``.dist-info`` with its entry point,
    in a folder that goes on PYTHONPATH (importlib.metadata finds it there)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(body)
    info = site / f"{name}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[lydian.plugins]\n{name} = {name}\n")
    return site


def test_doctor_checks_the_tools_plugins_declare(tmp_path):
    site = _installed_plugin(
        tmp_path,
        "doctorprobe",
        'LYDIAN_REQUIREMENTS = ["sh", "lydian-no-such-tool", "lydian-optional-tool?"]\n',
    )
    env = _env_without(tmp_path, "slack_bolt")
    env["PYTHONPATH"] += os.pathsep + str(site)
    assert _run("migrate", cwd=tmp_path, env=env).returncode == 0
    result = _run("doctor", cwd=tmp_path, env=env)
    lines = _doctor_lines(result)
    assert result.returncode == 1, result.stdout
    assert lines["plugin doctorprobe"] == ("ok", "loaded 0.3")
    assert lines["tool sh"][0] == "ok" and lines["tool sh"][1].endswith("(for doctorprobe)")
    assert lines["tool lydian-no-such-tool"] == ("FAIL", "not found on PATH (for doctorprobe)")
    assert lines["tool lydian-optional-tool"] == (
        "warn",
        "not found on PATH (optional for doctorprobe)",
    )
    # a plugin whose optional library is missing warns (one line), unless it was asked for
    assert lines["plugin slack"][0] == "warn"
    assert "needs the 'adapters' extra" in lines["plugin slack"][1]
    assert "lydian doctor: 1 check(s) failed" in result.stderr
    asked = _run("doctor", cwd=tmp_path, env={**env, "LYDIAN_PLUGINS": "slack,echo,nothere"})
    lines = _doctor_lines(asked)
    assert lines["plugin slack"][0] == "FAIL"
    assert lines["plugin nothere"] == ("FAIL", "named in LYDIAN_PLUGINS but not installed")
    assert "plugin doctorprobe" not in lines


def test_libraries_whose_internals_the_code_reaches_into_are_pinned_to_their_major():
    """piccolo (hub/store's engines) and discord.py (the adapter's HTTP client subclass):
    a new major must be a deliberate upgrade; what is installed is inside the range."""
    import importlib.metadata
    import tomllib

    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["adapters"]]
    for name, dist, major in (("piccolo[", "piccolo", 1), ("discord.py", "discord.py", 2)):
        (requirement,) = [r for r in requirements if r.startswith(name)]
        assert f"<{major + 1}" in requirement, requirement
        assert int(importlib.metadata.version(dist).split(".")[0]) == major
