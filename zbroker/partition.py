"""Leader-side state of one partition: its log, leader epoch, ISR and high watermark.

Pure: no sockets; the log does the file I/O.  The high watermark is the
smallest log end offset over the in-sync replicas (on a single node, the
leader's own log end offset); consumers read only below it.  Followers'
progress (``replica_leo``) is reported by their fetches once replication
arrives; with no followers the ISR is the leader alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage import Log


@dataclass
class Partition:
    topic: str
    index: int
    log: Log
    broker_id: int
    leader: int = -1
    leader_epoch: int = 0
    isr: list[int] = field(default_factory=list)
    replica_leo: dict[int, int] = field(default_factory=dict)
    high_watermark: int = 0

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.index)

    def update_high_watermark(self) -> bool:
        """Recompute the high watermark; returns True if it moved forward."""
        leo = self.log.log_end_offset
        candidates = [leo] + [self.replica_leo.get(r, 0) for r in self.isr if r != self.broker_id]
        new = max(min(candidates), self.log.log_start_offset)
        if new > self.high_watermark:
            self.high_watermark = new
            return True
        if new < self.high_watermark and self.high_watermark > leo:
            # the log was truncated below the old mark (recovery cut a torn tail)
            self.high_watermark = leo
        return False
