"""Shared support for platform adapters: room ↔ channel links, identity mapping, echo
suppression, and ordered, retried outbound delivery. No platform-specific code here."""

from adapters.bridge.connector import Connector, StreamState
from adapters.bridge.outbox import Outbox, PermanentError, RateLimited
from adapters.bridge.service import BridgeService, bridge_for
from adapters.bridge.store import Link, PlatformUser

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
