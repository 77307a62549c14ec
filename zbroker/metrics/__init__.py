"""Request metrics, kept in memory: count, errors and latency per front door and request type.

The routers of every front door record each request here once it is answered
(parked requests when they complete).  An HTTP ``/metrics`` listener will expose
the same registry; nothing else needs to change for it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the latency histogram buckets, as Prometheus' defaults.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


@dataclass
class RequestStats:
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.count if self.count else 0.0


class RequestMetrics:
    """Per ``(listener, request type)`` statistics.  Memory is bounded by the router
    tables: only known request types are recorded (unknown ones count as ``unknown``)."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], RequestStats] = {}

    def observe(self, listener: str, kind: str, seconds: float, error: int = 0) -> None:
        stats = self._stats.get((listener, kind))
        if stats is None:
            stats = self._stats[(listener, kind)] = RequestStats()
        stats.count += 1
        stats.seconds += seconds
        if error:
            stats.errors += 1
        stats.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1

    def get(self, listener: str, kind: str) -> RequestStats:
        return self._stats.get((listener, kind)) or RequestStats()

    def snapshot(self) -> dict[tuple[str, str], RequestStats]:
        return dict(self._stats)
