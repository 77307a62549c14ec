"""One mirrored partition: source records in, appends to the target partition out (sans-IO).

Records read from the source wait in order in :attr:`MirroredPartition.pending`; at most
one append is in flight (so a retry cannot overtake what follows it), always with
``acks=all``.  Its outcome:

- stored: :attr:`position` moves past its last record (what the mirror commits);
- failed: the same records go back first and are sent again after a pause (100 ms, doubling
  to 5 s); a batch the target finds too large is halved, down to one record; nothing is
  ever skipped;
- its leader moved while it waited (the old leader's broker died, say: its answer would come
  only with the timeout): the answer is forgotten and the records are sent to the new leader.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from storage.batch import build_kafka_batch, build_native_batch
from zbroker.context import Completion
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.bridge.callbacks import error_name, guarded

log = logging.getLogger(__name__)

#: a ``source.add()`` position meaning "the source partition's log start" (Kafka's OFFSET_BEGINNING)
EARLIEST = -2
#: acks of every append: a position is committed only for records the ISR has
ACKS_ALL = -1
PRODUCE_TIMEOUT_MS = 30_000
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 256 * 1024
RETRY_MIN_MS, RETRY_MAX_MS = 100, 5_000
#: while an append is in flight, how often the partition's leader is looked at
LEADER_CHECK_MS = 200
#: a partition whose backlog (read, not yet acknowledged) reaches either bound is paused on the
#: source (its records no longer read) until the backlog is down to half of both: a partition
#: the target refuses holds back only itself
PARTITION_MAX_RECORDS = 2_000
PARTITION_MAX_BYTES = 4 << 20


def record_size(record: tuple) -> int:
    """What a record read from the source weighs in memory, roughly (key, value, headers, 64 more)."""
    _, _, key, value, headers = record
    size = 64 + (len(key) if isinstance(key, bytes) else 0) + (len(value) if isinstance(value, bytes) else 0)
    if headers:
        items = headers.items() if isinstance(headers, dict) else headers
        size += sum(len(k) + (len(v) if isinstance(v, bytes) else 0) + 16 for k, v in items)
    return size


class MirroredPartition:
    """A source partition and the target partition it is copied to.

    Args:
        committed: the position the target cluster holds for it (-1: none: read from the
            source's log start).
        gateway: the mirror's :class:`~zbroker.frontends.bridge.gateway.Gateway`.
        kafka_batches: write Kafka batches (a Kafka source's headers may repeat a name and have
            null values), else native ones.
        on_stored: ``on_stored(partition, count, size)`` after an append was acknowledged
            (``size``: the records' :func:`record_size`).
        on_failed: ``on_failed(partition, code, message)`` after one failed.
    """

    def __init__(self, source_topic: str, partition: int, target: str, committed: int, gateway, kafka_batches: bool,
                 on_stored: Callable, on_failed: Callable) -> None:
        self.source_topic, self.partition, self.target = source_topic, partition, target
        self.committed = committed if committed >= 0 else -1
        self.position = self.committed if self.committed >= 0 else EARLIEST  # next source offset the target lacks
        self.read = max(self.committed, 0)  # next source offset expected (what is older is a repeat)
        self.log_start = -1
        self.source_end = -1
        self.pending: deque = deque()  # records read, not yet appended: (offset, timestamp, key, value, headers)
        self.backlog = 0  # records read and not yet acknowledged (pending and in flight)
        self.backlog_bytes = 0  # their record_size()
        self.paused = False  # the mirror asked the source to stop reading it (backlog full)
        self.gateway = gateway
        self.kafka_batches = kafka_batches
        self.on_stored, self.on_failed = on_stored, on_failed
        self.failing: str | None = None  # what the last append's failure said, until one succeeds
        self.failing_code = 0
        self._in_flight: list | None = None
        self._request: Completion | None = None
        self._leader: int | None = None
        self._retry_at = 0
        self._check_at = 0  # when the leader of the append in flight is looked at next
        self._backoff = 0
        self._batch_limit = MAX_BATCH_RECORDS
        self._sending = False
        self._now = 0

    @property
    def start(self) -> int:
        """Where the source is read from: the committed position, or :data:`EARLIEST`."""
        return self.committed if self.committed >= 0 else EARLIEST

    def offer(self, records: list, log_end: int) -> int:
        """Records read from the source, in offset order; returns how many were new (call
        :meth:`send` next: counting them first keeps the caller's count right when an append
        settles inside the send)."""
        if log_end >= 0:
            self.source_end = max(self.source_end, log_end)
        new = 0
        for record in records:
            if record[0] >= self.read:  # a partition read again from an older offset repeats itself
                self.pending.append(record)
                self.read = record[0] + 1
                new += 1
                self.backlog_bytes += record_size(record)
        self.backlog += new
        self.source_end = max(self.source_end, self.read)
        return new

    def full(self) -> bool:
        """The backlog reached :data:`PARTITION_MAX_RECORDS` or :data:`PARTITION_MAX_BYTES`."""
        return self.backlog >= PARTITION_MAX_RECORDS or self.backlog_bytes >= PARTITION_MAX_BYTES

    def drained(self) -> bool:
        """The backlog is down to half of both bounds (a paused partition is read again)."""
        return self.backlog <= PARTITION_MAX_RECORDS // 2 and self.backlog_bytes <= PARTITION_MAX_BYTES // 2

    def step(self, now_ms: int) -> None:
        """Timers: an append whose leader moved is sent again; one that waited out its pause is sent."""
        if self._in_flight:
            if now_ms >= self._check_at:
                self._check_at = now_ms + LEADER_CHECK_MS
                if self.gateway.leader_of(self.target, self.partition) != self._leader:
                    self._resend(now_ms)
        elif self.pending and now_ms >= self._retry_at:
            self.send(now_ms)

    def next_deadline(self, now_ms: int) -> int | None:
        """When :meth:`step` has work (absolute ms); None: only when an answer or records come."""
        if self._in_flight:
            return self._check_at
        return self._retry_at if self.pending else None

    def send(self, now_ms: int) -> None:
        """Append the next records unless an append is in flight.  A completion may settle inside
        ``produce``: a flag keeps this a loop rather than a recursion."""
        self._now = now_ms
        if self._sending:
            return
        self._sending = True
        try:
            while not self._in_flight and self.pending and self._now >= self._retry_at:
                records = self._take()
                self._in_flight = records
                self._check_at = self._now + LEADER_CHECK_MS
                try:
                    self._leader = self.gateway.leader_of(self.target, self.partition)
                    done = self._request = self.gateway.produce(self.target, self.partition, self._batch(records), ACKS_ALL,
                                                                PRODUCE_TIMEOUT_MS, self._now)
                except Exception as exc:  # a bug, or records no codec takes: they wait, nothing is skipped
                    log.debug("appending to %s-%d failed", self.target, self.partition, exc_info=True)
                    done = Completion()
                    done.fail(RequestError(ErrorCode.UNKNOWN_SERVER_ERROR, f"{type(exc).__name__}: {exc}"))
                done.on_done(guarded(lambda c, records=records: self._produced(records, c), "a mirror append's answer"))
        finally:
            self._sending = False

    def status(self) -> dict:
        position = self.position
        if position < 0:  # nothing stored yet: the first record read, else the source's log start (-1: not known)
            first = self._in_flight or self.pending
            position = first[0][0] if first else self.log_start
        lag = max(0, self.source_end - position) if self.source_end >= 0 and position >= 0 else -1
        return {"topic": self.target, "source_topic": self.source_topic, "partition": self.partition,
                "position": position, "committed": self.committed, "source_end": self.source_end, "lag": lag,
                "backlog": self.backlog, "paused": self.paused}

    def stop(self) -> None:
        """Forget the append in flight (the mirror stops; what it stores is there, uncommitted)."""
        if self._request is not None:
            self._request.abandon()
        self._in_flight = self._request = None
        self.pending.clear()
        self.backlog = self.backlog_bytes = 0

    # -- inside ---------------------------------------------------------------------------------

    def _take(self) -> list:
        records, size = [], 0
        while self.pending and len(records) < self._batch_limit and (not records or size < MAX_BATCH_BYTES):
            record = self.pending.popleft()
            records.append(record)
            size += record_size(record)
        return records

    def _batch(self, records: list) -> bytes:
        rows = [(ts, key, value, headers or None) for _, ts, key, value, headers in records]
        return build_kafka_batch(rows) if self.kafka_batches else build_native_batch(rows)

    def _resend(self, now_ms: int) -> None:
        self._request.abandon()
        self.pending.extendleft(reversed(self._in_flight))
        self._in_flight = self._request = None
        log.info("%s-%d has a new leader; the append in flight is sent again", self.target, self.partition)
        self.send(now_ms)

    def _produced(self, records: list, completion: Completion) -> None:
        self._in_flight = self._request = None
        error = completion.error
        code = error.code if error is not None else completion.value.error
        if code:
            message = error.message if error is not None else completion.value.error_message
            self.pending.extendleft(reversed(records))  # the same records again, first
            self._backoff = min(RETRY_MAX_MS, max(RETRY_MIN_MS, self._backoff * 2))
            self._retry_at = self._now + self._backoff
            if code == ErrorCode.MESSAGE_TOO_LARGE:  # what a zbroker leader answers for a batch too large
                self._batch_limit = max(1, len(records) // 2)
            self.failing = f"append to {self.target}-{self.partition}: {error_name(code)} {message or ''}".rstrip()
            self.failing_code = code
            self.on_failed(self, code, self.failing)
            return
        self.failing, self.failing_code = None, 0
        self._backoff = 0
        self.position = records[-1][0] + 1
        size = sum(map(record_size, records))
        self.backlog -= len(records)
        self.backlog_bytes -= size
        self.on_stored(self, len(records), size)
        self.send(self._now)
