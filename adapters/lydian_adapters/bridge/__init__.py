"""Shared support for platform adapters: room ↔ channel links, identity mapping, echo
suppression, and ordered, retried outbound delivery. No platform-specific code here."""

from lydian_adapters.bridge.connector import Connector, StreamState
from lydian_adapters.bridge.outbox import Outbox, PermanentError, RateLimited
from lydian_adapters.bridge.service import BridgeService, bridge_for
from lydian_adapters.bridge.store import Link, PlatformUser

__all__ = [
    "BridgeService",
    "Connector",
    "Link",
    "Outbox",
    "PermanentError",
    "PlatformUser",
    "RateLimited",
    "StreamState",
    "bridge_for",
]
