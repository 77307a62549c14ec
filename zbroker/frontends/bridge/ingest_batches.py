"""An ingest bridge's per-partition batches: idempotent, one in flight per partition, retried as they were.

Theory of operation.  Records taken off a bridge's socket are appended to their partition's
open list (:class:`PartitionQueue`).  A partition's open records are sealed into one native
batch (:func:`storage.batch.build_native_batch`) when they reach ``max_batch_bytes``, when
the oldest has waited ``linger_ms``, or when the bridge is out of room; the batch carries
the bridge's producer id and the partition's next sequence number, and is sent through the
gateway with the bridge's ``acks``.  Each partition has at most one batch in flight, so its
records are stored in the order they were received.  A batch's answer:

- stored: the partition's sequence moves past it;
- a retriable error (no leader, not enough replicas, timed out, ...): the *same bytes* are
  sent again after a back-off (100 ms doubling to 2 s), for as long as it takes -- the
  broker's sequence check acknowledges a batch it already has instead of storing it twice;
- the producer id is no longer known, or the sequence is out of order (a leader that lost
  acks=1 records on failover): the bridge takes a new producer id and the batch is sealed
  again under it, from sequence 0;
- any other error (authorization, too large, internal topic, ...): the batch's records
  fail, counted under the error's name; the sequence does not move (nothing was stored).

Sans-IO: the caller passes ``now_ms``; answers come back through :class:`Completion`
callbacks, which may run at once (a local acks=1 append) or later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from storage.batch import build_native_batch
from zbroker.context import Completion
from zbroker.errors import RETRIABLE, ErrorCode
from zbroker.frontends.bridge.callbacks import CallbackGuard, error_name


Record = tuple[int, bytes | None, bytes]  # (timestamp ms, key, value)

RETRY_MIN_MS = 100
RETRY_MAX_MS = 2000
RECORD_OVERHEAD = 24  # bytes counted per record besides its key and value (varints, timestamp delta)
#: Errors after which the bridge starts over with a new producer id.
RESEQUENCE = frozenset({ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.INVALID_PRODUCER_EPOCH})  # what zbroker answers


def record_size(key: bytes | None, value: bytes) -> int:
    return len(value) + (len(key) if key is not None else 0) + RECORD_OVERHEAD


@dataclass(slots=True)
class SealedBatch:
    """One batch as sent (and as sent again on a retriable error)."""

    records: list[Record]
    size: int  # sum of record_size
    data: bytes
    producer_id: int
    base_sequence: int
    attempts: int = 0
    retry_at: int | None = None  # when to send it again; None: in flight (or not sent yet)


@dataclass(slots=True)
class PartitionQueue:
    topic: str
    partition: int
    open: list[Record] = field(default_factory=list)
    open_bytes: int = 0
    open_since: int = 0
    batch: SealedBatch | None = None  # the one batch in flight (or waiting to be retried)
    producer_id: int = -1  # the producer id next_sequence counts for
    next_sequence: int = 0

    def add(self, record: Record, size: int, now_ms: int) -> None:
        if not self.open:
            self.open_since = now_ms
        self.open.append(record)
        self.open_bytes += size


class Outcome(Protocol):
    """What the sender tells its owner (the bridge): records stored, failed, or a new producer id needed."""

    def on_stored(self, queue: PartitionQueue, count: int, size: int) -> None: ...

    def on_failed(self, queue: PartitionQueue, count: int, size: int, reason: str, message: str) -> None: ...

    def on_retry(self, queue: PartitionQueue, reason: str, message: str) -> None: ...

    def on_resequence(self, producer_id: int) -> None: ...


class BatchSender:
    """Seals, sends and retries the batches of every partition of one bridge."""

    def __init__(self, produce: Callable[..., Completion], acks: int, timeout_ms: int, max_batch_bytes: int, linger_ms: int,
                 outcome: Outcome, exists: Callable[[str, int], bool], guard: CallbackGuard | None = None) -> None:
        """``produce(topic, partition, batch, acks, timeout_ms, now_ms) -> Completion`` is the gateway's;
        ``exists(topic, partition)``: whether the partition is in the metadata image (an
        UNKNOWN_TOPIC_OR_PARTITION is retried only while it is: it is answered for a moment
        after a topic is created); ``guard`` wraps the answers' callbacks."""
        self._produce = produce
        self.guard = guard if guard is not None else CallbackGuard("?", lambda: self.now_ms)
        self.acks = acks
        self.timeout_ms = timeout_ms
        self.max_batch_bytes = max_batch_bytes
        self.linger_ms = linger_ms
        self.outcome = outcome
        self._exists = exists
        self.queues: dict[tuple[str, int], PartitionQueue] = {}  # partitions with records open or in flight
        #: an idle partition's (producer id, next sequence), kept when its queue is dropped (timers scan queues only)
        self.sequences: dict[tuple[str, int], tuple[int, int]] = {}
        self.producer_id: int | None = None  # None: not known yet, nothing is sealed
        self.producer_epoch = 0
        self.now_ms = 0
        self.busy = 0  # > 0 while a batch is being handed to the gateway (its answer may come at once)

    def queue(self, topic: str, partition: int) -> PartitionQueue:
        q = self.queues.get((topic, partition))
        if q is None:
            q = self.queues[(topic, partition)] = PartitionQueue(topic, partition)
            q.producer_id, q.next_sequence = self.sequences.pop((topic, partition), (-1, 0))
        return q

    def _retire(self, q: PartitionQueue) -> None:
        """Drop an idle queue (nothing open, nothing in flight), keeping its sequence."""
        del self.queues[(q.topic, q.partition)]
        if q.producer_id != -1:
            self.sequences[(q.topic, q.partition)] = (q.producer_id, q.next_sequence)

    def set_producer(self, producer_id: int, epoch: int) -> None:
        self.producer_id, self.producer_epoch = producer_id, epoch

    # -- sending -----------------------------------------------------------------

    def due(self, q: PartitionQueue, now_ms: int) -> bool:
        """Whether ``q``'s open records have waited their linger or fill a batch."""
        return q.open_bytes >= self.max_batch_bytes or now_ms - q.open_since >= self.linger_ms

    def ready(self, q: PartitionQueue, now_ms: int, urgent: bool) -> bool:
        """Whether ``q``'s open records are to be sealed and sent now."""
        return bool(q.open) and q.batch is None and self.producer_id is not None and (urgent or self.due(q, now_ms))

    def send_ready(self, now_ms: int, urgent: bool = False) -> None:
        """Send every partition's open records that are due (all of them when ``urgent``),
        and the batches whose retry is due."""
        self.now_ms = now_ms
        for q in list(self.queues.values()):
            batch = q.batch
            if batch is not None and batch.retry_at is not None and batch.retry_at <= now_ms:
                self._dispatch(q, batch, now_ms)
            while self.ready(q, now_ms, urgent):  # a batch stored at once (acks 0/1 here) makes room for the next
                self.seal(q, now_ms)
            if q.batch is None and not q.open and self.queues.get((q.topic, q.partition)) is q:
                self._retire(q)

    def seal(self, q: PartitionQueue, now_ms: int) -> None:
        """Seal up to ``max_batch_bytes`` of ``q``'s open records into its batch and send it."""
        if q.producer_id != self.producer_id:
            q.producer_id, q.next_sequence = self.producer_id, 0
        taken, size = 0, 0
        for _ts, key, value in q.open:
            one = record_size(key, value)
            if taken and size + one > self.max_batch_bytes:
                break
            taken, size = taken + 1, size + one
        records = q.open[:taken]
        del q.open[:taken]
        q.open_bytes -= size
        q.open_since = now_ms
        data = build_native_batch([(ts, key, value, None) for ts, key, value in records], producer_id=q.producer_id,
                                  producer_epoch=self.producer_epoch, base_sequence=q.next_sequence)
        batch = q.batch = SealedBatch(records, size, data, q.producer_id, q.next_sequence)
        self._dispatch(q, batch, now_ms)

    def _dispatch(self, q: PartitionQueue, batch: SealedBatch, now_ms: int) -> None:
        batch.retry_at = None
        batch.attempts += 1
        self.busy += 1
        try:
            try:
                done = self._produce(q.topic, q.partition, batch.data, self.acks, self.timeout_ms, now_ms)
            except Exception as exc:  # a gateway that raises instead of failing its Completion
                done = Completion()
                done.fail_with(ErrorCode.UNKNOWN_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
            done.on_done(self.guard(lambda c: self._settled(q, batch, c), "a produce answer"))
        finally:
            self.busy -= 1

    # -- answers -----------------------------------------------------------------

    def _settled(self, q: PartitionQueue, batch: SealedBatch, done: Completion) -> None:
        if q.batch is not batch:
            return  # abandoned (closed)
        if done.error is not None:
            code, message = int(done.error.code), done.error.message
        else:
            result = done.value
            code = int(getattr(result, "error", 0) or 0)
            message = getattr(result, "error_message", None) or ""
        if code == 0:
            q.batch = None
            if batch.producer_id == q.producer_id:
                q.next_sequence = (q.next_sequence + len(batch.records)) % (1 << 31)
            self.outcome.on_stored(q, len(batch.records), batch.size)
        elif code in RESEQUENCE:
            q.batch = None  # sealed again (under a new producer id) ahead of the open records
            q.open[:0] = batch.records
            q.open_bytes += batch.size
            if batch.producer_id == self.producer_id:
                self.producer_id = None
                self.outcome.on_resequence(batch.producer_id)
        elif code in RETRIABLE and (code != ErrorCode.UNKNOWN_TOPIC_OR_PARTITION or self._exists(q.topic, q.partition)):
            batch.retry_at = self.now_ms + min(RETRY_MAX_MS, RETRY_MIN_MS << min(batch.attempts - 1, 5))
            self.outcome.on_retry(q, error_name(code), message)
        else:
            q.batch = None
            self.outcome.on_failed(q, len(batch.records), batch.size, error_name(code), message)

    # -- timers ------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        due: int | None = None
        for q in self.queues.values():
            if q.batch is not None:
                at = q.batch.retry_at
            elif q.open and self.producer_id is not None:
                at = q.open_since + self.linger_ms
            else:
                continue
            if at is not None and (due is None or at < due):
                due = at
        return due

    def abandon(self) -> tuple[int, int]:
        """Forget every record not stored (the bridge closes): (records, bytes) forgotten."""
        count = size = 0
        for q in self.queues.values():
            count += len(q.open)
            size += q.open_bytes
            if q.batch is not None:
                count += len(q.batch.records)
                size += q.batch.size
            q.open, q.open_bytes, q.batch = [], 0, None
        return count, size
