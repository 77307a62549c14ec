"""The producer's record accumulator: pure data, no I/O (time is passed in).

Theory of operation
-------------------
Each partition has a FIFO of :class:`ProducerBatch`; only the last one is
*open* for appends.  ``send()`` appends ``(timestamp_delta, key, value,
headers)`` to the open batch and gets a :class:`RecordFuture` that points at
(batch, index): no per-record lock-free tricks, one short lock per append and
no per-record Condition.  The batch resolves all its futures at once.

A partition's front batch is *sendable* when it is full (``batch_size`` bytes
estimated, or not the last batch), its ``linger_ms`` elapsed, a flush or close
is in progress, and its retry backoff (if any) has passed.  The sender calls
:meth:`RecordAccumulator.drain` with a function mapping a partition to its
leader's address; drained partitions are *muted* until the sender unmutes them
after the response.  That is the ordering rule: **at most one produce request
per partition is in flight**, carrying every sendable batch of that partition
(in order), so throughput does not depend on round trips while a retried
batch can never be overtaken: :meth:`reenqueue` puts failed batches back at
the front of their partition's queue, in order, before the partition is
unmuted.
"""

from __future__ import annotations

import collections
import logging
import threading

from clients.structs import RecordMetadata, TopicPartition
from zbroker.errors import ZBrokerError

log = logging.getLogger(__name__)
_CALLBACK_LOCK = threading.Lock()  # only taken when futures have callbacks

RECORD_OVERHEAD = 12  # msgpack framing + timestamp delta, roughly

_tnew = tuple.__new__


class ProducerBatch:
    """Records of one partition sent together; the shared completion object of their futures."""

    __slots__ = (
        "tp",
        "records",
        "size",
        "created",
        "base_ts",
        "max_ts",
        "attempts",
        "retry_at",
        "done",
        "base_offset",
        "error",
        "_event",
        "_callbacks",
        "encoded",
        "base_seq",  # idempotent producing: sequence number of the first record (-1: none yet)
        "closed",  # no more appends (a newer batch exists, or it was drained/expired)
    )

    def __init__(self, tp: TopicPartition, created: float, base_ts: int) -> None:
        self.tp = tp
        self.records: list = []
        self.size = 61
        self.created = created
        self.base_ts = base_ts
        self.max_ts = base_ts
        self.attempts = 0
        self.retry_at = 0.0
        self.done = False
        self.base_offset = -1
        self.error: BaseException | None = None
        self._event = threading.Event()
        self._callbacks: list | None = None
        self.encoded: bytes | None = None
        self.base_seq = -1
        self.closed = False

    def complete(self, base_offset: int = -1, error: BaseException | None = None) -> None:
        """Resolve every future of the batch (once)."""
        if self.done:
            return
        self.base_offset = base_offset
        self.error = error
        self.done = True
        self._event.set()
        if self._callbacks is not None:
            with _CALLBACK_LOCK:
                cbs, self._callbacks = self._callbacks, None
            for fn, fut in cbs or ():
                try:
                    fn(fut)
                except Exception:  # a user's callback must not kill the sender
                    log.exception("producer future callback failed")

    def wait(self, timeout: float | None) -> bool:
        """Block until complete; False on timeout."""
        return self.done or self._event.wait(timeout)

    def add_callback(self, fn, fut) -> None:
        """Run ``fn(fut)`` on completion (now, if already complete)."""
        with _CALLBACK_LOCK:
            if not self.done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append((fn, fut))
                return
        fn(fut)

    def __repr__(self) -> str:
        return f"<ProducerBatch {self.tp.topic}-{self.tp.partition} n={len(self.records)} attempts={self.attempts}>"


class RecordFuture:
    """What ``Producer.send`` returns: a small ``concurrent.futures.Future``-like object.

    ``result(timeout)`` returns :class:`RecordMetadata` or raises the send's
    :class:`ZBrokerError`; ``TimeoutError`` if not done in time.
    """

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: ProducerBatch, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        """True once the record was acknowledged or failed."""
        return self._batch.done

    def cancelled(self) -> bool:
        """Always False: a send cannot be cancelled."""
        return False

    def cancel(self) -> bool:
        """Cannot cancel a send; returns False."""
        return False

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait for and return the record's :class:`RecordMetadata`.

        Raises:
            TimeoutError: not done within ``timeout`` seconds.
            ZBrokerError: the send failed.
        """
        b = self._batch
        if not b.done and not b.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout}s")
        if b.error is not None:
            raise b.error
        i = self._index
        off = b.base_offset + i if b.base_offset >= 0 else -1
        return _tnew(RecordMetadata, (b.tp[0], b.tp[1], off, b.base_ts + b.records[i][0]))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The send's error, or None if it succeeded (waits like :meth:`result`)."""
        b = self._batch
        if not b.done and not b.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout}s")
        return b.error

    def add_done_callback(self, fn) -> None:
        """Call ``fn(future)`` when done (in the network thread, or now if already done)."""
        self._batch.add_callback(fn, self)


def failed_future(tp: TopicPartition, error: ZBrokerError, now: float = 0.0) -> RecordFuture:
    """A future that already failed with ``error``."""
    b = ProducerBatch(tp, now, 0)
    b.records.append((0, None, None, None))
    b.complete(-1, error)
    return RecordFuture(b, 0)


class RecordAccumulator:
    """Per-partition batches; see the module docstring.

    Args:
        batch_size: a batch is full at this many (estimated) bytes.
        linger_ms: how long a non-full batch waits for more records.
        max_request_bytes: cap of the batches drained for one partition per request.
    """

    def __init__(self, batch_size: int = 65536, linger_ms: float = 5, max_request_bytes: int = 8 << 20) -> None:
        self.batch_size = batch_size
        self.linger = linger_ms / 1000.0
        self.max_request_bytes = max_request_bytes
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)  # notified when a batch resolves
        self.queues: dict[TopicPartition, collections.deque] = {}
        self.open: dict[TopicPartition, ProducerBatch] = {}
        self.muted: set[TopicPartition] = set()
        self.incomplete: set[ProducerBatch] = set()
        self.flushing = 0
        self.closing = False

    def append(self, tp, ts, key, value, headers, size, now, abort_on_new=False):
        """Append one record; returns ``(future, new_batch_started)``.

        With ``abort_on_new`` (null-key sticky partitioning) returns ``None``
        instead of starting a new batch, so the caller can switch partition.
        Runtime: O(1).
        """
        with self.lock:
            b = self.open.get(tp)
            if b is not None and (b.size + size <= self.batch_size or not b.records):
                recs = b.records
                recs.append((ts - b.base_ts, key, value, headers))
                b.size += size
                if ts > b.max_ts:
                    b.max_ts = ts
                return RecordFuture(b, len(recs) - 1), False
            if abort_on_new:
                return None
            if b is not None:
                b.closed = True  # records after this one go to the new batch, never back here
            nb = ProducerBatch(tp, now, ts)
            nb.records.append((0, key, value, headers))
            nb.size += size
            q = self.queues.get(tp)
            if q is None:
                q = self.queues[tp] = collections.deque()
            q.append(nb)
            self.open[tp] = nb
            self.incomplete.add(nb)
            return RecordFuture(nb, 0), True

    def wait_for_space(self, max_batches: int, timeout: float) -> bool:
        """Block while ``max_batches`` or more batches are unresolved; False on timeout."""
        with self.lock:
            if len(self.incomplete) < max_batches:
                return True
            return self.space.wait_for(lambda: len(self.incomplete) < max_batches or self.closing, timeout)

    def _sendable(self, q, now: float) -> bool:
        b = q[0]
        if b.retry_at > now:
            return False
        return len(q) > 1 or b.size >= self.batch_size or now - b.created >= self.linger or self.flushing > 0 or self.closing

    def drain(self, now: float, leader_of, can_send=None):
        """Take the sendable batches of unmuted partitions with a known leader.

        Args:
            leader_of: ``fn(tp) -> address | None``.
            can_send: optional ``fn(address) -> bool`` (per-broker in-flight limit).

        Returns:
            ``(by_leader, next_deadline, leaderless)``: ``{address: [(tp, [batches])]}``
            (the partitions drained are now muted), the earliest time a
            non-sendable batch becomes sendable (or None), and whether some
            partition with data has no known leader.
        """
        by_leader: dict[str, list] = {}
        next_deadline = None
        leaderless = False
        with self.lock:
            for tp, q in self.queues.items():
                if not q or tp in self.muted:
                    continue
                if not self._sendable(q, now):
                    b = q[0]
                    d = b.retry_at if b.retry_at > now else b.created + self.linger
                    if next_deadline is None or d < next_deadline:
                        next_deadline = d
                    continue
                address = leader_of(tp)
                if address is None:
                    leaderless = True
                    continue
                if can_send is not None and not can_send(address):
                    continue
                taken = []
                total = 0
                while q and (not taken or total + q[0].size <= self.max_request_bytes):
                    b = q[0]
                    if b.retry_at > now:
                        break
                    if b is self.open.get(tp):
                        if not (len(q) > 1 or b.size >= self.batch_size or now - b.created >= self.linger or self.flushing or self.closing):
                            break
                        del self.open[tp]
                    q.popleft()
                    b.closed = True
                    taken.append(b)
                    total += b.size
                if taken:
                    self.muted.add(tp)
                    by_leader.setdefault(address, []).append((tp, taken))
        return by_leader, next_deadline, leaderless

    def unmute(self, tp: TopicPartition) -> None:
        """The partition's request finished: it may be drained again."""
        with self.lock:
            self.muted.discard(tp)

    def reenqueue(self, tp: TopicPartition, batches: list[ProducerBatch], retry_at: float) -> None:
        """Put ``batches`` (in their original order) back at the front of ``tp``'s queue."""
        with self.lock:
            q = self.queues.get(tp)
            if q is None:
                q = self.queues[tp] = collections.deque()
            for b in reversed(batches):
                b.retry_at = retry_at
                q.appendleft(b)

    def completed(self, batch: ProducerBatch) -> None:
        """Forget a resolved batch (after ``batch.complete``)."""
        with self.lock:
            self.incomplete.discard(batch)
            self.space.notify_all()

    def expired(self, now: float, delivery_timeout: float) -> list[ProducerBatch]:
        """Remove and return queued (not in-flight) batches older than ``delivery_timeout``."""
        return self._take(lambda b: now - b.created >= delivery_timeout)

    def take_queued(self) -> list[ProducerBatch]:
        """Remove and return every queued (not in-flight) batch: the producer cannot send
        them (it was refused a producer id)."""
        return self._take(lambda b: True)

    def _take(self, due) -> list[ProducerBatch]:
        """Remove and return, partition by partition, the queued batches from the front of
        each queue for which ``due(batch)`` holds."""
        out = []
        with self.lock:
            for tp, q in self.queues.items():
                if tp in self.muted:
                    continue
                while q and due(q[0]):
                    b = q.popleft()
                    b.closed = True
                    if self.open.get(tp) is b:
                        del self.open[tp]
                    out.append(b)
        return out

    def pending_batches(self) -> list[ProducerBatch]:
        """Every batch not yet resolved (queued or in flight)."""
        with self.lock:
            return list(self.incomplete)

    def has_undrained(self) -> bool:
        """True if some partition still has queued batches."""
        with self.lock:
            return any(self.queues.values())

    def fail_all(self, error: BaseException) -> None:
        """Resolve every unresolved batch with ``error`` (used on close)."""
        with self.lock:
            batches = list(self.incomplete)
            for b in batches:
                b.closed = True
            self.incomplete.clear()
            self.queues.clear()
            self.open.clear()
            self.closing = True
            self.space.notify_all()
        for b in batches:
            b.complete(-1, error)

    def _check(self) -> None:
        """Assert internal invariants (tests)."""
        for tp, b in self.open.items():
            q = self.queues[tp]
            assert q and q[-1] is b, f"open batch of {tp} is not last in its queue"
        for q in self.queues.values():
            for b in q:
                assert b.records, "empty batch queued"
                assert b in self.incomplete
