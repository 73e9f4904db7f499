"""A plugin stuck in a blocking call cannot keep the hub process from exiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from hub.plugin_host.threads import DaemonExecutor

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, tempfile, threading, time
    from types import SimpleNamespace
    from hub.base.config import load_settings
    from hub.plugin_host.hookspecs import hookimpl
    from hub.plugin_host.host import PluginHost
    from hub.base.protocol import UserRef

    release = threading.Event()

    class Stuck:
        LYDIAN_DEFAULT_ENABLED = True

        @hookimpl
        def lydian_transform_message(self, text):
            release.wait(120)  # blocks far longer than the test waits
            return text

    async def main():
        settings = load_settings(
            env={}, data_dir=tempfile.mkdtemp(), plugins="", plugin_hook_timeout=0.2
        )
        host = PluginHost(settings)
        host.register(Stuck(), "stuck")
        host.hub = SimpleNamespace(settings=settings)
        await host._activate_pending()
        host._failed = lambda room, failure: asyncio.sleep(0, print("failed:", failure))
        text = await host.transform("hello", "ops", UserRef(id="a", name="A"), host.hub)
        print("text:", text, flush=True)

    asyncio.run(main())
    """
)


def test_the_process_exits_although_a_plugin_thread_is_stuck():
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "failed: plugin 'stuck' failed in lydian_transform_message: timed out" in done.stdout
    assert "text: hello" in done.stdout
    assert time.monotonic() - started < 30


def test_the_pool_reuses_idle_threads_and_reports_exceptions():
    pool = DaemonExecutor(max_workers=2)
    assert [pool.submit(pow, 2, n).result(timeout=5) for n in range(5)] == [1, 2, 4, 8, 16]
    assert len(pool._threads) == 1
    failing = pool.submit(int, "x")
    try:
        failing.result(timeout=5)
    except ValueError as exc:
        assert "invalid literal" in str(exc)
    else:
        raise AssertionError("no exception")
    pool.shutdown(wait=True)
    try:
        pool.submit(pow, 2, 2)
    except RuntimeError:
        pass
    else:
        raise AssertionError("a shut-down pool accepted work")
