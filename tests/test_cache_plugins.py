"""Cache and plugins on a real hub: strategies and warm keys come from plugin hooks, a
third-party strategy plugs in exactly like the built-ins (also when loaded by a rescan)."""

from __future__ import annotations

from types import SimpleNamespace

from hub.cache import CacheStrategy
from hub.core import Hub
from hub.plugin_host.hookspecs import hookimpl
from hub.plugin_host.host import PluginHost
from tests.plugin_support import add_plugin
from tests.support import test_settings as hub_settings


class Reversed(CacheStrategy):
    """A third-party strategy: keys stored reversed, values kept 42 s."""

    name = "reversed"

    def scoped_key(self, key: str, user: str | None) -> str:
        return key[::-1]

    def ttl(self, full_key: str, default: float | None) -> float | None:
        return 42.0


def strategy_plugin() -> SimpleNamespace:
    @hookimpl
    def lydian_cache_strategies():
        return [Reversed(), "not a strategy"]

    return SimpleNamespace(lydian_cache_strategies=lydian_cache_strategies)


async def test_plugin_strategy_and_warm_keys_at_startup(tmp_path):
    calls: list[str] = []

    async def load_motd() -> str:
        calls.append("motd")
        return "welcome"

    @hookimpl
    async def lydian_startup(hub):
        hub.cache.configure("motd", strategy="reversed")
        hub.cache.add_warmer("today", load_motd, namespace="motd")

    host = PluginHost(hub_settings(str(tmp_path)), discover=False)
    host.register(strategy_plugin(), "reversed_strategy")
    host.register(SimpleNamespace(lydian_startup=lydian_startup), "motd")
    hub = await Hub.create(hub_settings(str(tmp_path)), plugins=host)
    try:
        assert "reversed" in hub.cache.strategies.names()
        assert calls == ["motd"], "declared keys are loaded while the hub starts"
        assert "motd:yadot" in hub.cache.l1.keys()

        async def never() -> str:
            raise AssertionError("warmed key must not reload")

        assert await hub.cache.get("today", never, namespace="motd") == "welcome"
    finally:
        await hub.stop()


async def test_strategy_from_a_plugin_added_by_rescan(server):
    await add_plugin(server, strategy_plugin(), "late_strategy")
    cache = server.hub.cache
    cache.configure("late", strategy="reversed")

    async def load() -> int:
        return 7

    assert await cache.get("abc", load, namespace="late") == 7
    assert "late:cba" in cache.l1.keys()
