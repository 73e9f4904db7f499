"""Plugin host overhead (issue 3): what isolation costs per message and per command.

    python bench/plugins_bench.py [--rounds 20000]

Each figure is measured next to its baseline in the same run, in-process (no sockets):

- ``transform``: the ``lydian_transform_message`` chain per message with no plugin, with
  3 ``async def`` transforms and with 3 plain-function transforms (each runs in a worker
  thread). Targets: 3 async transforms < 50 µs, 3 sync transforms < 500 µs per message.
- ``skip``: the chain when 3 transforms are installed but disabled in the room
  (target < 5 µs: a disabled plugin costs a dictionary lookup).
- ``command``: ``/echo text`` parsed, permission-checked and answered by the built-in
  echo plugin (a plain function, so through a worker thread) versus ``/help roll``
  (a core command, no isolation). Target: echo < 500 µs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.base.auth import Identity
from hub.base.config import load_settings
from hub.base.protocol import UserRef
from hub.plugin_host.hookspecs import hookimpl
from hub.plugin_host.host import PluginHost

AUTHOR = UserRef(id="ada", name="Ada")
TEXT = "deploy :tada: the api to staging please " * 3


class AsyncTransform:
    LYDIAN_DEFAULT_ENABLED = True

    @hookimpl
    async def lydian_transform_message(self, text):
        return text.replace(":tada:", "!")


class SyncTransform:
    LYDIAN_DEFAULT_ENABLED = True

    @hookimpl
    def lydian_transform_message(self, text):
        return text.replace(":tada:", "!")


async def host_with(plugins: list[tuple[str, object]], discover: bool = False) -> PluginHost:
    settings = load_settings(env={}, data_dir=tempfile.mkdtemp(), plugins="echo")
    host = PluginHost(settings, discover=discover)
    for name, plugin in plugins:
        host.register(plugin, name)
    host.hub = SimpleNamespace(settings=settings, plugins=host)  # type: ignore[assignment]
    await host._activate_pending()
    return host


async def per_call_us(fn, rounds: int) -> float:
    """Median of 5 batches, microseconds per call."""
    batch = max(rounds // 5, 1)
    results = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(batch):
            await fn()
        results.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(results)


async def main(rounds: int) -> None:
    none = await host_with([])
    asyncs = await host_with([(f"a{i}", AsyncTransform()) for i in range(3)])
    syncs = await host_with([(f"s{i}", SyncTransform()) for i in range(3)])
    for i in range(3):
        syncs._enabled.setdefault("off", {})[f"s{i}"] = False
    hub = none.hub
    rows = []
    for label, host, room in [
        ("transform: no plugin", none, "ops"),
        ("transform: 3 async plugins", asyncs, "ops"),
        ("transform: 3 sync plugins (threads)", syncs, "ops"),
        ("skip: 3 plugins disabled in room", syncs, "off"),
    ]:
        us = await per_call_us(lambda h=host, r=room: h.transform(TEXT, r, AUTHOR, hub), rounds)
        rows.append((label, us))

    echo = await host_with([], discover=True)
    echo._enabled["ops"] = {"echo": True}
    user = Identity(id="ada", name="Ada")
    for label, text in [
        ("command: /help roll (core)", "/help roll"),
        ("command: /echo", "/echo hi"),
    ]:
        us = await per_call_us(
            lambda t=text: echo.run_command(echo.hub, user, "ops", t), rounds // 4
        )
        rows.append((label, us))
    width = max(len(label) for label, _ in rows)
    for label, us in rows:
        print(f"{label.ljust(width)}  {us:8.1f} µs")
    for host in (none, asyncs, syncs, echo):
        host._executor.shutdown(wait=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20000)
    asyncio.run(main(parser.parse_args().rounds))
