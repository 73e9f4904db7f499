"""Shared fixtures: a real hub per test on a random loopback port, isolated data dir."""

from __future__ import annotations

import pytest

from tests.support import HubServer, running, test_settings


@pytest.fixture
def settings(tmp_path):
    return test_settings(str(tmp_path))


@pytest.fixture
async def server(settings) -> HubServer:
    async with running(settings) as srv:
        yield srv


@pytest.fixture
def make_server(tmp_path):
    """Start a hub with custom settings: ``async with make_server(heartbeat_interval=0.2) as s``."""

    def factory(**overrides):
        return running(test_settings(str(tmp_path), **overrides))

    return factory
