"""Acceptance: a plugin generated from plugin_template/, pip-installed into this environment,
is discovered through its entry point by a running hub, enabled in one room and disabled
again, all without a restart."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

import hub
from hub.cli.scaffold import hub_requirement, placeholders, render_plugin
from tests.plugin_support import command, frame_where, room_event

# unique per process: several developers' test runs share this Python environment, and
# one run's pip uninstall must not pull the plugin from under another's
NAME = f"tmplgreet{os.getpid()}"


async def _run(*args: str, cwd: str | None = None, env: dict | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    text = out.decode()
    assert proc.returncode == 0, f"{args} failed:\n{text}"
    return text


async def _uninstall() -> None:
    dist = placeholders(NAME)["dist"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pip", "uninstall", "-y", "-q", dist,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.wait_for(proc.wait(), timeout=120)


async def test_generated_plugin_is_installed_discovered_enabled_and_disabled_live(
    make_server, tmp_path
):
    package = render_plugin(NAME, tmp_path / "src")
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()) == [
        "README.md",
        f"lydian_{NAME}/__init__.py",
        "pyproject.toml",
        f"tests/test_{NAME}.py",
    ]
    pyproject = (package / "pyproject.toml").read_text()
    assert f'{NAME} = "lydian_{NAME}"' in pyproject
    major, minor = (int(p) for p in hub.__version__.split(".")[:2])
    assert f'dependencies = ["lydian-hub>={major}.{minor},<{major + 1}"]' in pyproject

    async with make_server() as server:
        await server.create_room("ops")
        await server.create_room("lobby")
        admin = await server.client("root", admin=True)
        bob = await server.client("bob")
        for client in (admin, bob):
            await client.join("ops")
            await client.join("lobby")
        assert NAME not in server.hub.plugins.names()
        try:
            await _run(
                sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                "--no-build-isolation", str(package),
            )  # fmt: skip
            async with server.http("bob") as http:
                assert (await http.post("/api/plugins/reload")).status_code == 403
            async with server.http("root", admin=True) as http:
                resp = await http.post("/api/plugins/reload")
                assert resp.status_code == 200, resp.text
                assert resp.json()["new"] == [NAME], resp.text
                found = {p["name"]: p for p in resp.json()["plugins"]}[NAME]
            assert found["source"] == "entry point" and found["version"] == "0.1.0"
            assert found["commands"] == [NAME] and found["error"] is None

            assert (await command(bob, "ops", f"/{NAME} Bob", "g0"))["type"] == "error"
            enabled = await command(admin, "ops", f"/plugins enable {NAME}", "p1")
            assert enabled["type"] == "command_result", enabled
            await frame_where(bob, room_event("ops", "plugin_enabled", NAME))
            hello = await command(bob, "ops", f"/{NAME} Grace Hopper", "g1")
            assert hello["type"] == "command_result"
            assert hello["text"] == f"Hello, Grace Hopper! ({NAME})"
            assert (await command(bob, "ops", f"/{NAME}", "g2"))["text"] == f"Hello, Bob! ({NAME})"
            elsewhere = await command(bob, "lobby", f"/{NAME} Bob", "g3")
            assert elsewhere["type"] == "error" and elsewhere["code"] == "unknown_command"
            helped = await command(bob, "ops", "/help", "h1")
            assert f"/{NAME} [WHO...] — greet someone (or yourself)" in helped["text"]

            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("LYDIAN_", "DATABASE_"))
            }
            env.update(LYDIAN_DATA_DIR=server.settings.data_dir, LYDIAN_CONFIG="/nonexistent")
            listing = await _run(sys.executable, "-m", "hub.cli", "plugins", "list", env=env)
            row = next(line for line in listing.splitlines() if line.startswith(NAME))
            assert row.split()[1:4] == ["0.1.0", "commands,plugin_settings", "ops"]
            assert row.split()[-1] == "ok"

            generated_tests = await _run(
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
                cwd=str(package),
            )  # fmt: skip
            assert "4 passed" in generated_tests

            await command(admin, "ops", f"/plugins disable {NAME}", "p2")
            await frame_where(bob, room_event("ops", "plugin_disabled", NAME))
            stopped = await command(bob, "ops", f"/{NAME} Bob", "g4")
            assert stopped["type"] == "error" and stopped["code"] == "unknown_command"
        finally:
            await _uninstall()


def test_plugin_new_rejects_bad_names_and_existing_folders(tmp_path):
    for bad in ("Greet", "1greet", "gr-eet", ""):
        with pytest.raises(ValueError, match="lowercase"):
            render_plugin(bad, tmp_path)
    render_plugin("greet", tmp_path)
    with pytest.raises(FileExistsError):
        render_plugin("greet", tmp_path)


def test_the_template_depends_on_this_major_version_of_the_hub():
    assert hub_requirement("0.1.0") == "lydian-hub>=0.1,<1"
    assert hub_requirement("2.3.4") == "lydian-hub>=2.3,<3"
    assert hub_requirement("10.0rc1") == "lydian-hub>=10.0,<11"
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
        hub_requirement("dev")


def test_the_template_imports_only_the_sdk(tmp_path):
    package = render_plugin("greet", tmp_path)
    imports = sorted(
        line.strip()
        for path in package.rglob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith(("import hub", "from hub"))
    )
    assert imports and all(line.startswith("from hub.sdk import ") for line in imports), imports
