"""Follower side of replication: fetching from partition leaders (pure decisions).

A broker that holds a replica of a partition led elsewhere fetches it from the
leader with ordinary fetch requests (:class:`zbroker.core.fetch.FetchRequest`) carrying
its ``replica_id``, sent through the broker's :class:`zbroker.context.PeerChannel`, one request
in flight per leader broker covering every partition it follows there (long
polls, so an append on the leader wakes them at once).  Each partition in the
request names the follower's log end (``offset``), the leader epoch it believes
current (``leader_epoch``) and the epoch of its last record (``last_fetched_epoch``).

The leader answers per partition (:mod:`zbroker.core.fetch`):

- records from ``offset`` on (whole stored batches, unchanged: the follower
  appends them with their offsets and leader epochs) and its high watermark;
- ``diverging`` [epoch, end_offset] when the follower's tail is not in the
  leader's log (KIP-101/KIP-320): the follower truncates to where both copies of
  that epoch end and fetches again -- never by high watermark;
- FENCED_LEADER_EPOCH when the follower's metadata is behind: it waits until its metadata
  names a new epoch; UNKNOWN_LEADER_EPOCH / NOT_LEADER_OR_FOLLOWER when the leader is the one
  behind (it has not applied its leadership yet): the follower asks again after
  ``METADATA_BACKOFF_MS``;
- CORRUPT_MESSAGE with ``damaged`` [start, end] when the leader lost those offsets to
  damaged bytes too: the follower records the same range and goes on at ``end``;
- its log start (``log_start_offset``): a follower whose own is lower adopts it, up to its
  own log end (:meth:`storage.log.Log.delete_records_before`), so records deleted on the
  leader (DeleteRecords, or retention) are not served again by a follower it elects; one
  behind the leader's log start (OFFSET_OUT_OF_RANGE) starts over there, empty.

**Damage repair.** A follower whose own log has damaged ranges (found by recovery when it
opened, or by a read while it led, ``storage.recovery``) truncates to the start of the first
one before its first fetch in every leader epoch it follows, and fetches everything from
there again: the leader has every acknowledged record. Its fetch offset is then below the
hole, so the leader cannot count it as caught up over the hole (the high watermark and the
ISR go by the follower's fetch offset). Ranges copied from the leader (the leader lost them
too) are not the follower's own: they are kept (in memory, per process).

**Backoff.** An answer the follower cannot act on -- CORRUPT_MESSAGE without a range it can
skip, KAFKA_STORAGE_ERROR, or data that does not append (bad batch, offsets that do not
follow on) -- pauses that partition for ``ERROR_BACKOFF_MS`` and is logged at ERROR at most
a few times per window (``zbroker.ratelimit``), never in a hot loop.
A leader, or a replica with no leader to follow, keeps its intact later data and answers
the damaged range with CORRUPT_MESSAGE.

:class:`Replication` is the service around it: every ``REPLICATION_CHECK_MS`` it sends
the fetches :class:`ReplicaFetcher` asks for and, as a leader, proposes ISR changes
(followers lagging more than ``replica_lag_ms``, or caught up again) to the controller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from storage import CorruptBatchError, OffsetMismatch, iter_batches
from zbroker.config import ClusterConfig
from zbroker.context import PeerChannel, PeerReply
from zbroker.control.controlplane import ControlPlane
from zbroker.control.topicadmin import AlterIsr, TopicAdmin
from zbroker.core.epochs import epoch_end
from zbroker.core.fetch import FetchedPartition, FetchPartition, FetchRequest, FetchResult
from zbroker.core.partition import Partition
from zbroker.core.partitions import PartitionManager
from zbroker.core.producer_state import note_appended
from zbroker.errors import ErrorCode
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

REPLICA_FETCH_MAX_WAIT_MS = 500
REPLICA_FETCH_MAX_BYTES = 8 << 20
PARTITION_FETCH_MAX_BYTES = 4 << 20
REPLICATION_CHECK_MS = 50  # how often the timer looks for fetches to send and ISR changes to propose
ISR_PROPOSAL_TIMEOUT_MS = 5_000  # an unanswered ISR proposal is thought over again after this
ERROR_BACKOFF_MS = 1_000  # a partition whose fetch answer cannot be acted on waits this long
METADATA_BACKOFF_MS = 200  # a leader that does not know it leads yet is asked again after this

TP = tuple[str, int]


@dataclass
class InFlight:
    leader: int
    sent_ms: int
    tps: list[TP]


class ReplicaFetcher:
    """Builds follower fetches and applies their answers (pure: no I/O, time passed in)."""

    def __init__(self, broker_id: int, request_timeout_ms: int = 5000) -> None:
        self.broker_id = broker_id
        self.request_timeout_ms = request_timeout_ms
        self.in_flight: dict[int, InFlight] = {}  # by fetch number
        self._paused: dict[TP, int] = {}  # tp -> leader epoch it was paused at
        self._backoff: dict[TP, int] = {}  # tp -> time (ms) before which it is not fetched
        self._repaired: dict[TP, int] = {}  # tp -> leader epoch whose follower dropped its own damage
        self._leader_lost: dict[TP, set[tuple[int, int]]] = {}  # ranges copied as lost from a leader
        self._errors = RateLimitedLog(log, burst=5, window_s=10.0)
        self._seq = 0

    def requests(self, partitions: dict[TP, Partition], live: set[int], now_ms: int) -> list[tuple[int, int, FetchRequest]]:
        """Fetches to send now: ``[(fetch number, leader id, request)]``.

        Normally one request is in flight per leader, covering every partition followed
        there; a partition that starts being followed while that request is parked (a new
        topic, a leadership change) gets a request of its own at once rather than waiting
        up to the long-poll time for the next round.
        """
        for seq, flight in list(self.in_flight.items()):
            if now_ms - flight.sent_ms > REPLICA_FETCH_MAX_WAIT_MS + self.request_timeout_ms:
                del self.in_flight[seq]  # lost: ask again
        covered = {(tp, f.leader) for f in self.in_flight.values() for tp in f.tps}  # a moved partition is not covered
        by_leader: dict[int, list[Partition]] = {}
        for tp, part in partitions.items():
            if part.leader < 0 or part.is_leader or self.broker_id not in part.replicas or (tp, part.leader) in covered:
                continue
            if self._paused.get(tp) == part.leader_epoch or self._backoff.get(tp, 0) > now_ms:
                continue
            by_leader.setdefault(part.leader, []).append(part)
        out = []
        for leader, parts in by_leader.items():
            if leader not in live:
                continue
            self._seq += 1
            for p in parts:
                self._drop_own_damage(p)
            specs = [FetchPartition(p.topic, p.index, p.log.log_end_offset, PARTITION_FETCH_MAX_BYTES, p.leader_epoch,
                                    _last_epoch(p)) for p in parts]
            req = FetchRequest(specs, max_wait_ms=REPLICA_FETCH_MAX_WAIT_MS, min_bytes=1, max_bytes=REPLICA_FETCH_MAX_BYTES,
                               replica_id=self.broker_id)
            self.in_flight[self._seq] = InFlight(leader, now_ms, [p.tp for p in parts])
            out.append((self._seq, leader, req))
        return out

    def forget(self, tp: TP) -> None:
        """The partition left this broker."""
        self._paused.pop(tp, None)
        self._backoff.pop(tp, None)
        self._repaired.pop(tp, None)
        self._leader_lost.pop(tp, None)

    def _drop_own_damage(self, part: Partition) -> None:
        """Before the first fetch in each leader epoch followed: truncate to the first damaged
        range of its own, so the leader's copy fills it (ranges copied from a leader as lost
        there too are not its own)."""
        if self._repaired.get(part.tp) == part.leader_epoch:
            return
        self._repaired[part.tp] = part.leader_epoch
        copied = self._leader_lost.get(part.tp, set())
        own = [r for r in part.log.damaged.ranges if r not in copied]
        if own:
            start = own[0][0]
            self._leader_lost[part.tp] = {r for r in copied if r[1] <= start}
            log.warning("replica %s-%s has damaged offsets %s: truncating to %d to fetch them again from leader %d",
                        *part.tp, part.log.damaged.ranges, start, part.leader)
            part.log.truncate_to(start)
            part.producers = None
            part.high_watermark = min(part.high_watermark, part.log.log_end_offset)

    def on_response(self, seq: int, error: int, message: str | None, result: FetchResult | None,
                    partitions: dict[TP, Partition], now_ms: int, on_append=None) -> list[TP]:
        """Apply a fetch answer; returns the partitions whose high watermark moved.
        ``on_append(partition, batch, base_offset)`` sees every appended batch (producer state)."""
        flight = self.in_flight.pop(seq, None)
        if flight is None:
            return []
        moved = []
        if error == ErrorCode.REQUEST_TIMED_OUT:
            log.debug("replica fetch from broker %s: %s", flight.leader, message)  # a peer down: gossip tells
            return moved
        if error or result is None:
            log.warning("replica fetch from broker %s failed: %s", flight.leader, message)
            return moved
        for entry in result.partitions:
            tp = (entry.topic, entry.partition)
            part = partitions.get(tp)
            if part is None or part.leader != flight.leader or part.is_leader:
                continue  # metadata moved on while the fetch was out
            if self._apply(part, entry, now_ms, on_append):
                moved.append(tp)
        return moved

    def _apply(self, part: Partition, entry: FetchedPartition, now_ms: int, on_append=None) -> bool:
        error = entry.error
        if error == ErrorCode.FENCED_LEADER_EPOCH:
            self._paused[part.tp] = part.leader_epoch  # our metadata is behind: until it names a new epoch
            return False
        if error in (ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.LEADER_NOT_AVAILABLE,
                     ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
            # the leader may be the one behind (it has not applied the metadata that makes it
            # leader in this epoch yet): try again shortly, as Kafka's fetcher does.  Pausing
            # until the epoch changed left a follower out of the ISR for good when no later
            # election came (the Jepsen check saw a cluster that never healed).
            self._backoff[part.tp] = now_ms + METADATA_BACKOFF_MS
            return False
        if error == ErrorCode.OFFSET_OUT_OF_RANGE:
            start = entry.log_start_offset
            if start > part.log.log_end_offset:
                log.info("replica %s-%s is behind the leader's log start %d: starting over there", *part.tp, start)
                part.log.truncate_fully_and_start_at(start)
                part.producers = None
            return False
        if error == ErrorCode.CORRUPT_MESSAGE and entry.damaged:
            start, end = entry.damaged
            if start <= part.log.log_end_offset < end:
                log.error("replica %s-%s: leader %d lost offsets [%d, %d) to damage too: skipping them",
                          *part.tp, part.leader, start, end)
                part.log.skip_damaged(end)
                self._leader_lost.setdefault(part.tp, set()).update(
                    r for r in part.log.damaged.ranges if r[0] <= start < r[1])
                return False
        if error in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.KAFKA_STORAGE_ERROR):
            self._back_off(part, now_ms, f"error {error} from leader {part.leader}")
            return False
        if error:
            return False
        if entry.diverging:
            epoch, end = entry.diverging
            own = epoch_end(part, epoch)[1]
            target = max(part.log.log_start_offset, min(end, own if own >= 0 else end, part.log.log_end_offset))
            log.info("replica %s-%s truncating to %d (diverged from the leader at epoch %d)", *part.tp, target, epoch)
            part.log.truncate_to(target)
            part.producers = None  # rebuilt from what is left
            return False
        data = entry.data
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
                self._back_off(part, now_ms, f"bad data from leader {part.leader}: {exc}")
                return False
        if entry.log_start_offset > part.log.log_start_offset:
            self._adopt_log_start(part, entry.log_start_offset, now_ms)
        return part.follower_high_watermark(max(entry.high_watermark, 0))

    def _adopt_log_start(self, part: Partition, start: int, now_ms: int) -> None:
        """The leader's log start moved past ours (records deleted, or its retention ran):
        ours becomes ``min(leader's, own log end)``, so that this replica, if elected, never
        serves records the leader deleted."""
        try:
            part.log.delete_records_before(min(start, part.log.log_end_offset))
        except OSError as exc:  # the next answer tries again
            self._errors.log(now_ms / 1000, "replica_fetch", logging.ERROR, "replica %s-%s: cannot move the log start "
                             "to the leader's %d: %s", *part.tp, start, exc)

    def _back_off(self, part: Partition, now_ms: int, why: str) -> None:
        self._backoff[part.tp] = now_ms + ERROR_BACKOFF_MS
        self._errors.log(now_ms / 1000, "replica_fetch", logging.ERROR, "replica %s-%s: %s (retrying in %d ms)",
                         *part.tp, why, ERROR_BACKOFF_MS)


def _last_epoch(part: Partition) -> int:
    epoch = part.log.leader_epoch_cache.latest_epoch
    return epoch if epoch is not None else -1


class Replication:
    """Follower fetching and, as a leader, ISR upkeep."""

    def __init__(self, config: ClusterConfig, broker_id: int, control: ControlPlane, partitions: PartitionManager,
                 admin: TopicAdmin, peers: PeerChannel) -> None:
        self.config = config
        self.control = control
        self.partitions = partitions
        self.admin = admin
        self.peers = peers
        self.fetcher = ReplicaFetcher(broker_id)
        self.next_check_ms = 0
        partitions.on_removed.append(self.fetcher.forget)

    def step(self, now_ms: int) -> None:
        """From the timer: follower fetches and ISR changes, each at most every
        ``REPLICATION_CHECK_MS`` (both walk every partition: not on every loop turn)."""
        if now_ms < self.next_check_ms:
            return
        self.next_check_ms = now_ms + REPLICATION_CHECK_MS
        self.send_fetches(now_ms)
        self.check_isr(now_ms)

    def next_deadline(self) -> int | None:
        return self.next_check_ms if self.partitions.online else None

    def send_fetches(self, now_ms: int) -> None:
        """Follower fetches to every leader that has none in flight (or a partition not covered)."""
        if not self.control.ready:
            return  # see ControlPlane.ready
        live = self.control.live_brokers(now_ms)
        timeout = REPLICA_FETCH_MAX_WAIT_MS + self.fetcher.request_timeout_ms
        for seq, leader, req in self.fetcher.requests(self.partitions.online, live, now_ms):
            self.peers.call(leader, req, lambda reply, now, seq=seq: self._on_fetched(seq, reply, now), timeout, now_ms)

    def _on_fetched(self, seq: int, reply: PeerReply, now_ms: int) -> None:
        moved = self.fetcher.on_response(seq, reply.error, reply.message, reply.value, self.partitions.online, now_ms,
                                         note_appended)
        for tp in moved:
            self.partitions.record_high_watermark(tp)
        self.send_fetches(now_ms)  # fetch again at once: the leader long-polls

    def check_isr(self, now_ms: int) -> None:
        """As a leader: propose ISR changes (followers lagging, or caught up again)."""
        if not self.control.ready:
            return
        live = self.control.live_brokers(now_ms)
        lag = self.config.setting("replica_lag_ms")
        for part in self.partitions.online.values():
            if not part.is_leader:
                continue
            if part.pending_isr is not None and now_ms - part.pending_since_ms > ISR_PROPOSAL_TIMEOUT_MS:
                part.pending_isr = None  # lost or refused: think again
            proposal = part.isr_proposal(now_ms, lag, live)
            if proposal is None:
                continue
            log.info("partition %s-%s proposes isr %s (was %s)", part.topic, part.index, proposal, part.isr)
            part.pending_isr, part.pending_since_ms = proposal, now_ms
            if part.update_high_watermark():
                self.partitions.hw_moved(part, now_ms)
            self.admin.propose_isr(AlterIsr(part.topic, part.index, self.control.broker_id, part.leader_epoch, proposal), now_ms)
