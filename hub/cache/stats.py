"""Cache statistics: per-tier hits and misses, latency histograms, evictions, top keys."""

from __future__ import annotations

import heapq
from typing import Any

import msgspec

# Latency histogram bucket upper bounds in microseconds (last bucket is "+inf").
BUCKETS_US: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000, 100000)
TOP_KEYS_TRACKED = 4096


class TierStats(msgspec.Struct):
    """Counters of one tier (``l1``, ``l2`` or ``l3`` = the loader)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    latency_us: list[int] = msgspec.field(default_factory=lambda: [0] * (len(BUCKETS_US) + 1))

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def observe(self, micros: float) -> None:
        for i, bound in enumerate(BUCKETS_US):
            if micros <= bound:
                self.latency_us[i] += 1
                return
        self.latency_us[-1] += 1


class CacheStats:
    """Mutable counters owned by one :class:`~hub.cache.manager.CacheManager`."""

    def __init__(self) -> None:
        self.tiers = {"l1": TierStats(), "l2": TierStats(), "l3": TierStats()}
        self.sets = 0
        self.invalidations = 0
        self.remote_invalidations = 0
        self.rejected = 0  # values refused (unserializable, oversize)
        self.reads: dict[str, int] = {}

    def read(self, key: str) -> None:
        reads = self.reads
        reads[key] = reads.get(key, 0) + 1
        if len(reads) > TOP_KEYS_TRACKED:
            keep = heapq.nlargest(TOP_KEYS_TRACKED // 2, reads.items(), key=lambda kv: kv[1])
            self.reads = dict(keep)

    def top_keys(self, n: int = 10) -> list[tuple[str, int]]:
        return heapq.nlargest(n, self.reads.items(), key=lambda kv: kv[1])

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """A JSON-ready view, as served by ``GET /api/cache/stats``."""
        tiers = {
            name: {
                "hits": t.hits,
                "misses": t.misses,
                "errors": t.errors,
                "hit_rate": round(t.hit_rate, 4),
                "latency_us": {
                    "buckets": [*BUCKETS_US, "inf"],
                    "counts": list(t.latency_us),
                },
            }
            for name, t in self.tiers.items()
        }
        l1, l2 = self.tiers["l1"], self.tiers["l2"]
        requests = l1.hits + l1.misses
        served = l1.hits + l2.hits
        return {
            "tiers": tiers,
            "requests": requests,
            "hit_rate": round(served / requests, 4) if requests else 0.0,
            "sets": self.sets,
            "invalidations": self.invalidations,
            "remote_invalidations": self.remote_invalidations,
            "rejected": self.rejected,
            "top_keys": [{"key": k, "reads": c} for k, c in self.top_keys()],
            **extra,
        }
