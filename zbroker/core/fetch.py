"""Fetch (consumers and followers) and list offsets, on a partition's leader.

- **Consumer fetches** read whole stored batches below the high watermark, at least one
  batch even above ``max_bytes`` so a consumer always progresses.
- **Follower fetches** (``replica_id`` >= 0) read up to the log end and move the
  follower's position, which may move the high watermark (completing acks=all produces
  and waking consumer fetches).  They are checked by leader epoch: a follower whose tail
  is not in the leader's log is told where to truncate (``diverging``, KIP-101/KIP-320).
  A consumer fetch that names a leader epoch (Kafka clients' ``current_leader_epoch``;
  -1 = none) is checked the same way (:func:`zbroker.core.epochs.check_current_epoch`).
- **Damage**: an offset in a range lost to damaged bytes on disk (``storage.recovery``)
  answers CORRUPT_MESSAGE with ``damaged`` = [start, end]: the reader goes on at ``end``. A
  read stops before such a range. A disk failure answers KAFKA_STORAGE_ERROR.
- A fetch names each partition at most once (INVALID_REQUEST otherwise: a repeated
  partition would be read, answered and watched once per copy), and its ``max_bytes`` is
  capped by the broker's ``fetch_max_bytes``: a response holds at most that much plus one
  batch.
- A fetch with less than ``min_bytes`` available is a long poll: parked in the purgatory
  on its partitions, retried on every append to them, answered at ``max_wait_ms`` with
  whatever there is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from storage import CorruptBatchError, DamagedRangeError, OffsetOutOfRange
from zbroker.context import Completion, RequestContext
from zbroker.core.epochs import check_current_epoch, epoch_end, epoch_of_offset
from zbroker.core.partition import Partition
from zbroker.core.partitions import PartitionManager
from zbroker.errors import ErrorCode, RequestError
from zbroker.purgatory import DelayedOperation, Purgatory

log = logging.getLogger(__name__)

LATEST_TIMESTAMP = -1  # list_offsets: Kafka's special timestamps
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3  # KIP-734: the record with the largest timestamp
MAX_WAIT_LIMIT_MS = 300_000


@dataclass(slots=True)
class FetchPartition:
    topic: str
    partition: int
    offset: int
    max_bytes: int = 1048576
    leader_epoch: int = -1  # followers: the epoch they follow
    last_fetched_epoch: int = -1  # followers: the epoch of their last record


@dataclass(slots=True)
class FetchRequest:
    partitions: list[FetchPartition]
    max_wait_ms: int = 500
    min_bytes: int = 1
    max_bytes: int = 52428800
    replica_id: int = -1


@dataclass(slots=True)
class FetchedPartition:
    topic: str
    partition: int
    error: int = 0
    high_watermark: int = -1
    log_start_offset: int = -1
    diverging: list[int] | None = None  # [epoch, end_offset]: truncate there (followers)
    data: bytes = b""  # whole stored batches
    damaged: list[int] | None = None  # [start, end]: offsets lost to damaged bytes (CORRUPT_MESSAGE); go on at end


@dataclass(slots=True)
class FetchResult:
    partitions: list[FetchedPartition] = field(default_factory=list)


@dataclass(slots=True)
class OffsetQuery:
    topic: str
    partition: int
    timestamp: int  # LATEST_TIMESTAMP, EARLIEST_TIMESTAMP, MAX_TIMESTAMP or a time in ms
    current_leader_epoch: int = -1  # checked when >= 0 (Kafka clients)


@dataclass(slots=True)
class ListOffsets:
    """Offset look-ups handed to another broker (the partitions' leader)."""

    queries: list[OffsetQuery]


@dataclass(slots=True)
class OffsetAnswer:
    topic: str
    partition: int
    error: int = 0
    offset: int = -1
    timestamp: int = -1
    leader_epoch: int = -1  # the epoch that wrote ``offset`` (the current one for LATEST)


@dataclass(slots=True)
class EpochQuery:
    """Where did ``leader_epoch`` end? (Kafka's OffsetForLeaderEpoch, asked by consumers
    validating their position after a leader change, KIP-320.)"""

    topic: str
    partition: int
    leader_epoch: int
    current_leader_epoch: int = -1  # checked when >= 0


@dataclass(slots=True)
class EpochAnswer:
    topic: str
    partition: int
    error: int = 0
    leader_epoch: int = -1
    end_offset: int = -1


def _check_distinct(specs: list[FetchPartition]) -> None:
    seen: set[tuple[str, int]] = set()
    for spec in specs:
        tp = (spec.topic, spec.partition)
        if tp in seen:
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f"partition {spec.partition} of topic {spec.topic[:64]!r} is fetched more than once")
        seen.add(tp)


class FetchService:
    def __init__(self, partitions: PartitionManager, purgatory: Purgatory) -> None:
        self.partitions = partitions
        self.purgatory = purgatory

    def fetch(self, ctx: RequestContext, req: FetchRequest, now_ms: int) -> FetchResult | Completion[FetchResult]:
        if req.max_bytes < 0 or any(spec.max_bytes < 0 for spec in req.partitions):
            raise RequestError(ErrorCode.INVALID_REQUEST, "max_bytes must be >= 0")
        if req.max_wait_ms > MAX_WAIT_LIMIT_MS:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"max_wait_ms must be <= {MAX_WAIT_LIMIT_MS}")
        _check_distinct(req.partitions)
        cap = self.partitions.config.setting("fetch_max_bytes")
        if req.max_bytes > cap:
            req = replace(req, max_bytes=cap)
        result, total, errors = self._read(req, now_ms)
        if total >= req.min_bytes or errors or req.max_wait_ms <= 0 or not req.partitions:
            return result
        done: Completion[FetchResult] = Completion()

        def try_complete(now: int) -> bool:
            result, total, errors = self._read(req, now)
            if total >= req.min_bytes or errors:
                done.complete(result)
                return True
            return False

        def on_expire(now: int) -> None:
            done.complete(self._read(req, now)[0])

        keys = [(s.topic, s.partition) for s in req.partitions]
        op = DelayedOperation(now_ms + req.max_wait_ms, keys, try_complete, on_expire)
        if not self.purgatory.park(op, now_ms):
            done.on_abandon(lambda: self.purgatory.cancel(op))  # its client left: nothing to read for
        return done

    def _read(self, req: FetchRequest, now_ms: int) -> tuple[FetchResult, int, bool]:
        """Read every requested partition; returns (result, bytes, any error)."""
        out = FetchResult()
        budget = req.max_bytes
        replica = req.replica_id
        total, errors = 0, False
        for spec in req.partitions:
            entry = FetchedPartition(spec.topic, spec.partition)
            try:
                part = self.partitions.leader(spec.topic, spec.partition)
                if replica >= 0:
                    self._check_replica_fetch(part, spec, entry, now_ms, replica)
                else:
                    check_current_epoch(part, spec.leader_epoch)
            except RequestError as exc:
                entry.error = int(exc.code)
                part = None
            if part is not None and entry.diverging is None:
                lg = part.log
                entry.high_watermark = part.high_watermark
                entry.log_start_offset = lg.log_start_offset
                limit = None if replica >= 0 else part.high_watermark
                offset = spec.offset
                if offset < lg.log_start_offset or offset > lg.log_end_offset:
                    entry.error = int(ErrorCode.OFFSET_OUT_OF_RANGE)
                elif offset < (lg.log_end_offset if limit is None else limit) and budget > 0:
                    self._read_log(part, entry, offset, min(spec.max_bytes, budget), limit)
            # a partition still being opened here is no reason to end a long poll early: the
            # fetch waits (and says LEADER_NOT_AVAILABLE for it when it is answered)
            opening = entry.error == ErrorCode.LEADER_NOT_AVAILABLE and self.partitions.is_opening((spec.topic, spec.partition))
            errors = errors or (entry.error != 0 and not opening) or entry.diverging is not None
            total += len(entry.data)
            budget -= len(entry.data)
            out.partitions.append(entry)
        return out, total, errors

    @staticmethod
    def _read_log(part: Partition, entry: FetchedPartition, offset: int, max_bytes: int, limit: int | None) -> None:
        """Read into ``entry``; damage and disk failures become the partition's error."""
        try:
            entry.data = part.log.read(offset, max_bytes, max_offset=limit).data
        except OffsetOutOfRange:  # retention raced the caller's check
            entry.error = int(ErrorCode.OFFSET_OUT_OF_RANGE)
        except DamagedRangeError as exc:  # recorded and logged once, where it was found
            entry.error = int(ErrorCode.CORRUPT_MESSAGE)
            entry.damaged = [exc.start, exc.end]
        except CorruptBatchError as exc:
            log.error("partition %s-%s: cannot read offset %d: %s", part.topic, part.index, offset, exc)
            entry.error = int(ErrorCode.CORRUPT_MESSAGE)
        except OSError as exc:
            log.error("partition %s-%s: disk error reading offset %d: %s", part.topic, part.index, offset, exc)
            entry.error = int(ErrorCode.KAFKA_STORAGE_ERROR)

    def _check_replica_fetch(self, part: Partition, spec: FetchPartition, entry: FetchedPartition, now_ms: int,
                             replica: int) -> None:
        """Leader epoch and divergence checks of a follower's fetch; records its position."""
        if replica not in part.replicas:
            raise RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {replica} holds no replica of {part.topic}-{part.index}")
        check_current_epoch(part, spec.leader_epoch)
        offset, last_epoch = spec.offset, spec.last_fetched_epoch
        if offset > part.log.log_end_offset:
            # a follower can never be ahead of its leader's log end in the same epoch: refuse,
            # before its offset could move the high watermark
            if last_epoch < 0:
                raise RequestError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {offset} is past the log end {part.log.log_end_offset}")
        if last_epoch >= 0 and offset > part.log.log_start_offset:
            cache = part.log.leader_epoch_cache
            end_epoch, end_offset = epoch_end(part, last_epoch)
            if end_epoch < 0 and cache.latest_epoch is not None and last_epoch > cache.latest_epoch:
                end_epoch, end_offset = cache.latest_epoch, part.log.log_end_offset  # never "truncate everything"
            if end_epoch != last_epoch or offset > end_offset:
                entry.diverging = [end_epoch, max(end_offset, part.log.log_start_offset)]
                entry.high_watermark = part.high_watermark
                return
        if part.on_follower_fetch(replica, offset, now_ms):
            self.partitions.hw_moved(part, now_ms)

    def list_offsets(self, ctx: RequestContext, queries: list[OffsetQuery]) -> list[OffsetAnswer]:
        """Offsets by time, on the leader, below the high watermark.

        LATEST is the high watermark (in the current epoch), EARLIEST the log start,
        MAX_TIMESTAMP the first record with the largest timestamp of the log (for a Kafka
        batch: its base offset, as :meth:`storage.Log.offset_for_timestamp` answers), any
        other time the first record at or after it; -1 when there is none below the high
        watermark.  Each answer names the leader epoch that wrote its offset.
        """
        results = []
        for q in queries:
            entry = OffsetAnswer(q.topic, q.partition)
            part = self._queried_leader(q, entry)
            if part is not None:
                self._find_offset(part, q.timestamp, entry)
            results.append(entry)
        return results

    @staticmethod
    def _find_offset(part: Partition, timestamp: int, entry: OffsetAnswer) -> None:
        if timestamp == LATEST_TIMESTAMP:
            entry.offset, entry.leader_epoch = part.high_watermark, part.leader_epoch
        elif timestamp == EARLIEST_TIMESTAMP:
            entry.offset = part.log.log_start_offset
            entry.leader_epoch = epoch_of_offset(part, entry.offset)
        else:
            if timestamp == MAX_TIMESTAMP:  # O(segments): each segment keeps its largest timestamp
                timestamp = max((info[2] for info in part.log.segments_info()), default=-1)
            found = part.log.offset_for_timestamp(timestamp) if timestamp >= 0 else None
            if found is not None and found[0] < part.high_watermark:
                entry.offset, entry.timestamp = found
                entry.leader_epoch = epoch_of_offset(part, entry.offset)

    def _queried_leader(self, q: OffsetQuery | EpochQuery, entry: OffsetAnswer | EpochAnswer) -> Partition | None:
        """The partition ``q`` asks about if this broker leads it in the epoch ``q`` names;
        else None, with ``entry.error`` set."""
        try:
            part = self.partitions.leader(q.topic, q.partition)
            check_current_epoch(part, q.current_leader_epoch)
        except RequestError as exc:
            entry.error = int(exc.code)
            return None
        return part

    def offsets_for_leader_epoch(self, ctx: RequestContext, queries: list[EpochQuery]) -> list[EpochAnswer]:
        """Where each asked epoch ends in the leader's log (:func:`epoch_end`): what a
        follower's fetch uses to find divergence, asked by a consumer to validate its
        position after a leader change (end offset below its position: the log was
        truncated there)."""
        results = []
        for q in queries:
            entry = EpochAnswer(q.topic, q.partition)
            part = self._queried_leader(q, entry)
            if part is not None:
                entry.leader_epoch, entry.end_offset = epoch_end(part, q.leader_epoch)
            results.append(entry)
        return results
