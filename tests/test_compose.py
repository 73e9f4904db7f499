"""The docker-compose deployment and the Dockerfile, checked without a Docker engine.

The compose file is parsed with PyYAML and the Dockerfile instruction by instruction; the
healthcheck commands are run for real against a hub on loopback, and the compose
environment is fed through the hub's own settings loader.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hub.base.config import load_settings
from tests.support import HubServer, free_port

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Z_]+):\?(?P<message>.+)\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    start = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[start:]


def only(keyword: str) -> str:
    found = [args for k, args in final_stage() if k == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def env_list(value: dict[str, Any] | list[str]) -> dict[str, str]:
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {k: str(v) for k, v in value.items()}


def exec_form(test: list[str] | str) -> list[str]:
    """A compose healthcheck ``test`` as argv (``CMD`` form only: no shell in the hub image)."""
    assert isinstance(test, list) and test[0] == "CMD", f"use the exec form: {test}"
    return test[1:]


# ------------------------------------------------------------------ compose structure


def test_three_services_each_with_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"hub", "postgres", "redis"}
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"


def test_hub_waits_for_healthy_postgres_and_redis(services: dict[str, dict[str, Any]]) -> None:
    depends = services["hub"]["depends_on"]
    assert depends == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_hub_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    """No fixed container name, and a host port range (or none) rather than one fixed port."""
    hub = services["hub"]
    assert "container_name" not in hub
    assert hub["build"] in (".", {"context": "."})
    for port in hub.get("ports", []):
        published, _, target = str(port).rpartition(":")
        assert target == "8000"
        host_ports = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", published)
        assert re.fullmatch(r"\d+-\d+", host_ports), f"publish a range, not {port!r}"
        low, high = map(int, host_ports.split("-"))
        assert high - low >= 2, "a range for at least three replicas"


def test_hub_environment_points_at_the_services(services: dict[str, dict[str, Any]]) -> None:
    env = env_list(services["hub"]["environment"])
    db = urlsplit(env["DATABASE_URL"])
    assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql", "postgres", 5432, "/lydian")
    pg = env_list(services["postgres"]["environment"])
    assert (db.username, db.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert db.path.lstrip("/") == pg["POSTGRES_DB"]
    redis = urlsplit(env["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port, redis.path) == ("redis", "redis", 6379, "/0")


def test_secret_is_a_required_variable_with_a_message(services: dict[str, Any]) -> None:
    match = REQUIRED.match(env_list(services["hub"]["environment"])["LYDIAN_SECRET"])
    assert match, "LYDIAN_SECRET must use ${LYDIAN_SECRET:?message}"
    assert match["name"] == "LYDIAN_SECRET" and "LYDIAN_SECRET" in match["message"]


def test_compose_environment_configures_the_hub(services: dict[str, Any]) -> None:
    """What the container sees, after compose substitution, through the hub's own loader."""
    raw = env_list(services["hub"]["environment"])
    env = {k: re.sub(r"\$\{[A-Z_]+:[-?]([^}]*)\}", r"\1", v) for k, v in raw.items()}
    env["LYDIAN_SECRET"] = "s3cret-from-the-operator"
    settings = load_settings(env=env)
    assert settings.resolved_database_url() == raw["DATABASE_URL"]
    assert settings.redis_url == raw["REDIS_URL"]
    assert settings.resolved_secret() == "s3cret-from-the-operator"
    assert settings.port == 8000


def test_replicas_share_the_data_directory(compose: dict[str, Any], services: Any) -> None:
    """Attachments are files under ``LYDIAN_DATA_DIR``: every replica must see every upload."""
    data_dir = next(args for k, args in final_stage() if k == "ENV" and "LYDIAN_DATA_DIR" in args)
    path = re.search(r"LYDIAN_DATA_DIR=(\S+)", data_dir)[1]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["hub"]["volumes"]}
    assert mounts[path] in (compose.get("volumes") or {}), "the data dir needs a named volume"


def test_postgres_service(compose: dict[str, Any], services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["image"] == "postgres:16"
    test = pg["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    mounts = {m.split(":")[1]: m.split(":")[0] for m in pg["volumes"]}
    volume = mounts["/var/lib/postgresql/data"]
    assert volume in (compose.get("volumes") or {}), "postgres data needs a named volume"
    assert "ports" not in pg, "the database stays on the compose network"


def test_redis_service(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis


# ------------------------------------------------------------------ Dockerfile


def test_image_is_python_311_slim() -> None:
    assert only("FROM").split()[0] == "python:3.11-slim"


def test_image_runs_lydian_serve_on_all_interfaces(services: dict[str, Any]) -> None:
    argv = json.loads(only("CMD"))
    assert argv[:2] == ["lydian", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert services["hub"].get("command", argv) == argv
    assert only("EXPOSE") == "8000"


def test_image_runs_as_a_non_root_user() -> None:
    user = only("USER").split(":")[0]
    assert user not in {"root", "0"}
    keywords = [k for k, _ in final_stage()]
    assert keywords.index("USER") < keywords.index("CMD")
    assert any("useradd" in args and user in args for k, args in final_stage() if k == "RUN")


def test_image_has_a_healthcheck_on_healthz() -> None:
    check = only("HEALTHCHECK")
    assert "/healthz" in check
    assert "CMD" in check


def test_build_copies_what_the_wheel_needs() -> None:
    """Every path the wheel build reads is copied, exists, and is not dockerignored."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", project["project"]["readme"], *wheel["packages"]}
    needed |= set(wheel.get("force-include", {}))
    copied: set[str] = set()
    for keyword, args in dockerfile():
        if keyword == "COPY" and not args.startswith("--from"):
            copied |= set(args.split()[:-1])
    if "." in copied:  # the whole context: everything that .dockerignore lets through
        copied |= needed
    assert needed <= copied, f"not copied into the build: {needed - copied}"
    ignore = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not any(fnmatch.fnmatch(path, p) for p in ignore), f"{path} is dockerignored"


def test_image_installs_the_wheel_with_the_adapter_extra() -> None:
    """The bridges (Slack, Discord) are plugins whose libraries live in the ``adapters`` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "adapters" in project["optional-dependencies"]
    installs = [args for k, args in final_stage() if k == "RUN" and "pip install" in args]
    assert len(installs) == 1 and "/wheels/" in installs[0] and "[adapters]" in installs[0]


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignore = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".lydian", ".env", "lydian.toml", "*.sqlite3"} <= ignore


# ------------------------------------------------------------------ healthchecks, run for real


def dockerfile_healthcheck_argv() -> list[str]:
    check = only("HEALTHCHECK")
    return json.loads(check[check.index("CMD") + len("CMD") :].strip())


async def run_check(argv: list[str], port: int) -> int:
    """Run a healthcheck command as the container would, with ``LYDIAN_PORT`` set."""
    assert argv[0] == "python"
    env = {**os.environ, "LYDIAN_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv[1:], env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        return await asyncio.wait_for(proc.wait(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def healthchecks(services: dict[str, Any]) -> list[list[str]]:
    return [dockerfile_healthcheck_argv(), exec_form(services["hub"]["healthcheck"]["test"])]


async def test_healthchecks_pass_against_a_live_hub(server: HubServer, services: Any) -> None:
    for argv in healthchecks(services):
        assert await run_check(argv, server.port) == 0


def test_compose_healthcheck_asks_readyz(services: Any) -> None:
    """Readiness (database, Redis, migrations), not mere liveness, gates the replica."""
    argv = exec_form(services["hub"]["healthcheck"]["test"])
    assert "/readyz" in argv[-1] and "/healthz" not in argv[-1]


async def test_compose_healthcheck_fails_while_the_hub_is_not_ready(server: HubServer, services):
    """A real hub whose store lacks a migration answers /readyz 503: the check fails."""
    from piccolo.apps.migrations.tables import Migration

    argv = exec_form(services["hub"]["healthcheck"]["test"])
    assert await run_check(argv, server.port) == 0
    ran = await Migration.get_migrations_which_ran(app_name="lydian")
    await Migration.delete().where(Migration.name == ran[-1])
    assert await run_check(argv, server.port) != 0


async def test_healthchecks_fail_when_nothing_listens(services: Any) -> None:
    port = free_port()
    for argv in healthchecks(services):
        assert await run_check(argv, port) != 0
