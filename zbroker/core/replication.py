"""Follower side of replication: fetching from partition leaders (pure decisions).

A broker that holds a replica of a partition led elsewhere fetches it from the
leader with ordinary ``fetch`` requests carrying its ``replica_id``, one request
in flight per leader broker covering every partition it follows there (long
polls, so an append on the leader wakes them at once).  Each partition in the
request names the follower's log end (``offset``), the leader epoch it believes
current (``leader_epoch``) and the epoch of its last record (``last_fetched_epoch``).

The leader answers per partition (zbroker/broker.py, ``_replica_read``):

- records from ``offset`` on (whole stored batches, unchanged: the follower
  appends them with their offsets and leader epochs) and its high watermark;
- ``diverging`` [epoch, end_offset] when the follower's tail is not in the
  leader's log (KIP-101/KIP-320): the follower truncates to where both copies of
  that epoch end and fetches again -- never by high watermark;
- FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH / NOT_LEADER_OR_FOLLOWER when the two
  disagree on the leader epoch: the follower waits until its metadata moves on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from storage import CorruptBatchError, OffsetMismatch, iter_batches
from zbroker.errors import ErrorCode
from zbroker.partition import Partition

log = logging.getLogger(__name__)

REPLICA_FETCH_MAX_WAIT_MS = 500
REPLICA_FETCH_MAX_BYTES = 8 << 20
PARTITION_FETCH_MAX_BYTES = 4 << 20


@dataclass
class InFlight:
    cid: int
    leader: int
    sent_ms: int
    tps: list[tuple[str, int]]


class ReplicaFetcher:
    """Builds follower fetches and applies their answers."""

    def __init__(self, broker_id: int, request_timeout_ms: int = 5000) -> None:
        self.broker_id = broker_id
        self.request_timeout_ms = request_timeout_ms
        self.in_flight: dict[int, InFlight] = {}  # by cid
        self._paused: dict[tuple[str, int], int] = {}  # tp -> leader epoch it was paused at
        self._cid = 0

    def requests(self, partitions: dict[tuple[str, int], Partition], live: set[int], now_ms: int) -> list[tuple[int, dict]]:
        """Fetch requests to send now: ``[(leader_id, header)]``.

        Normally one request is in flight per leader, covering every partition followed
        there; a partition that starts being followed while that request is parked (a new
        topic, a leadership change) gets a request of its own at once rather than waiting
        up to the long-poll time for the next round.
        """
        for cid, flight in list(self.in_flight.items()):
            if now_ms - flight.sent_ms > REPLICA_FETCH_MAX_WAIT_MS + self.request_timeout_ms:
                del self.in_flight[cid]  # lost: ask again
        covered = {(tp, f.leader) for f in self.in_flight.values() for tp in f.tps}  # a moved partition is not covered
        by_leader: dict[int, list[Partition]] = {}
        for tp, part in partitions.items():
            if part.leader < 0 or part.is_leader or self.broker_id not in part.replicas or (tp, part.leader) in covered:
                continue
            if self._paused.get(tp) == part.leader_epoch:
                continue
            by_leader.setdefault(part.leader, []).append(part)
        out = []
        for leader, parts in by_leader.items():
            if leader not in live:
                continue
            self._cid += 1
            specs = [
                {
                    "topic": p.topic,
                    "partition": p.index,
                    "offset": p.log.log_end_offset,
                    "leader_epoch": p.leader_epoch,
                    "last_fetched_epoch": _last_epoch(p),
                    "max_bytes": PARTITION_FETCH_MAX_BYTES,
                }
                for p in parts
            ]
            header = {
                "v": 1,
                "type": "fetch",
                "cid": self._cid,
                "replica_id": self.broker_id,
                "max_wait_ms": REPLICA_FETCH_MAX_WAIT_MS,
                "min_bytes": 1,
                "max_bytes": REPLICA_FETCH_MAX_BYTES,
                "partitions": specs,
            }
            self.in_flight[self._cid] = InFlight(self._cid, leader, now_ms, [p.tp for p in parts])
            out.append((leader, header))
        return out

    def owns(self, cid: int) -> bool:
        return cid in self.in_flight

    def forget(self, tp: tuple[str, int]) -> None:
        """The partition left this broker."""
        self._paused.pop(tp, None)

    def on_response(self, header: dict, payloads: list[bytes], partitions: dict[tuple[str, int], Partition], now_ms: int,
                    on_append=None) -> list[tuple[str, int]]:
        """Apply a fetch answer; returns the partitions whose high watermark moved.

        ``on_append(partition, batch, base_offset)`` sees every appended batch (producer state)."""
        flight = self.in_flight.pop(header.get("cid"), None)
        if flight is None:
            return []
        moved = []
        if header.get("error"):
            log.warning("replica fetch from broker %s failed: %s", flight.leader, header.get("error_message"))
            return moved
        for i, entry in enumerate(header.get("partitions") or ()):
            tp = (entry.get("topic"), entry.get("partition"))
            part = partitions.get(tp)
            if part is None or part.leader != flight.leader or part.is_leader:
                continue  # metadata moved on while the fetch was out
            data = payloads[i] if i < len(payloads) else b""
            if self._apply(part, entry, data, now_ms, on_append):
                moved.append(tp)
        return moved

    def _apply(self, part: Partition, entry: dict, data: bytes, now_ms: int, on_append=None) -> bool:
        error = entry.get("error", 0)
        if error in (ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.NOT_LEADER_OR_FOLLOWER):
            self._paused[part.tp] = part.leader_epoch  # until our metadata names a new epoch
            return False
        if error == ErrorCode.OFFSET_OUT_OF_RANGE:
            start = entry.get("log_start_offset", -1)
            if start > part.log.log_end_offset:
                log.info("replica %s-%s is behind the leader's log start %d: starting over there", *part.tp, start)
                part.log.truncate_fully_and_start_at(start)
                part.producers = None
            return False
        if error:
            return False
        diverging = entry.get("diverging")
        if diverging:
            epoch, end = diverging
            own = part.log.leader_epoch_cache.end_offset_for(epoch, part.log.log_end_offset)[1]
            target = max(part.log.log_start_offset, min(end, own if own >= 0 else end, part.log.log_end_offset))
            log.info("replica %s-%s truncating to %d (diverged from the leader at epoch %d)", *part.tp, target, epoch)
            part.log.truncate_to(target)
            part.producers = None  # rebuilt from what is left
            return False
        if data:
            view = memoryview(data)
            try:
                for pos, h in iter_batches(data):
                    if h.next_offset <= part.log.log_end_offset:
                        continue
                    batch = view[pos : pos + h.size]
                    part.log.append(batch, now_ms, assign_offsets=False)
                    if on_append is not None and h.producer_id >= 0:
                        on_append(part, batch, h.base_offset)
            except (CorruptBatchError, OffsetMismatch) as exc:
                log.error("replica %s-%s: bad data from leader %s: %s", *part.tp, part.leader, exc)
                return False
        return part.follower_high_watermark(entry.get("high_watermark", 0))


def _last_epoch(part: Partition) -> int:
    epoch = part.log.leader_epoch_cache.latest_epoch
    return epoch if epoch is not None else -1
