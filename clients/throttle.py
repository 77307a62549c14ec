"""What brokers said about quotas: the throttle times in produce and fetch answers.

A broker over whose byte-rate quota a client goes holds its produce and fetch answers
back by the throttle time and says so in ``throttle_time_ms`` (docs/protocol.md §4.6,
§4.7): the waiting is done by then, so the client only counts and logs it (at most one
line per :data:`LOG_EVERY_S`) and goes on.  Pure: time is passed in.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


class ThrottleStats:
    """Throttled answers of one kind (``produce`` or ``fetch``) a client got.

    Attributes:
        count: answers that were throttled.
        total_ms: their throttle times, summed.
        last_ms: the latest throttle time (0 until the first).
    """

    __slots__ = ("kind", "count", "total_ms", "last_ms", "_logged_at", "_unlogged")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.count = 0
        self.total_ms = 0
        self.last_ms = 0
        self._logged_at: float | None = None
        self._unlogged = 0

    def note(self, header: dict | None, address: str, now: float) -> None:
        """Count an answer's ``throttle_time_ms`` (``now`` in seconds, monotonic)."""
        ms = header.get("throttle_time_ms") if header else None
        if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
            return
        self.count += 1
        self.total_ms += ms
        self.last_ms = ms
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_S:
            log.info("broker %s held back %d %s answers by its quota (latest: %d ms)", address, self._unlogged, self.kind, ms)
            self._logged_at = now
            self._unlogged = 0
