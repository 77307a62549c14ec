"""Idempotent producers: producer ids, and per-partition sequence checks (Kafka's model).

A producer asks any broker for a producer id (``init_producer_id``, served by
:mod:`zbroker.control.topicadmin`); the controller hands out ids from a counter kept in the metadata log, so an id is
never given twice, across failovers and restarts.  The producer numbers the
records it sends to each partition (``base_sequence`` in the batch header,
counting records from 0) and resends a batch with the same numbers.

Each replica of a partition keeps, per producer id, its epoch and the sequence
ranges and offsets of its last 5 batches (:class:`ProducerEntry`), updated on
every append -- by the leader and by followers alike, so a new leader already
knows them -- and rebuilt from the batch headers when a log is opened.  The
leader checks every batch that carries a producer id:

- the same range as one of the last 5 batches: a duplicate; it is not appended
  and the original offset is returned (so a retry after a lost answer is
  acknowledged, not written twice);
- the next sequence after the last batch: appended;
- anything else: OUT_OF_ORDER_SEQUENCE_NUMBER (a gap: something was lost);
- an older producer epoch: INVALID_PRODUCER_EPOCH (a fenced, older instance).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from storage import parse_header
from zbroker.core.partition import Partition
from zbroker.errors import ErrorCode, RequestError

log = logging.getLogger(__name__)

WINDOW = 5
SEQ_MOD = 1 << 31


@dataclass
class ProducerEntry:
    epoch: int
    batches: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # (first_seq, last_seq, base_offset)

    def last_seq(self) -> int:
        return self.batches[-1][1] if self.batches else -1


def record(producers: dict[int, ProducerEntry], pid: int, epoch: int, first_seq: int, count: int, base_offset: int) -> None:
    """Remember an appended batch (leader or follower)."""
    entry = producers.get(pid)
    if entry is None or epoch > entry.epoch:
        entry = producers[pid] = ProducerEntry(epoch)
    entry.batches.append((first_seq, (first_seq + count - 1) % SEQ_MOD, base_offset))


def check(producers: dict[int, ProducerEntry], pid: int, epoch: int, first_seq: int, count: int) -> int | None:
    """Check a batch before it is appended: the offset of its duplicate, or None to append.

    Raises:
        RequestError: INVALID_PRODUCER_EPOCH or OUT_OF_ORDER_SEQUENCE_NUMBER.
    """
    entry = producers.get(pid)
    if entry is None:
        return None  # a producer this partition has not seen (or whose state expired): accept
    if epoch < entry.epoch:
        raise RequestError(ErrorCode.INVALID_PRODUCER_EPOCH, f"producer {pid} epoch {epoch} is older than {entry.epoch}")
    if epoch > entry.epoch:
        if first_seq != 0:
            raise RequestError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, f"producer {pid}: a new epoch must start at sequence 0")
        return None
    last_seq = (first_seq + count - 1) % SEQ_MOD
    for first, last, base in entry.batches:
        if (first, last) == (first_seq, last_seq):
            return base
    expected = (entry.last_seq() + 1) % SEQ_MOD
    if first_seq != expected:
        raise RequestError(
            ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, f"producer {pid}: expected sequence {expected}, got {first_seq}"
        )
    return None


def rebuild(part: Partition) -> dict[int, ProducerEntry]:
    """Producer state of a log from its batch headers (no records decoded)."""
    producers: dict[int, ProducerEntry] = {}
    for seg in part.log.segments():
        for _pos, h in seg.iter_headers():
            if h.producer_id >= 0 and h.base_sequence >= 0:
                record(producers, h.producer_id, h.producer_epoch, h.base_sequence, h.record_count, h.base_offset)
    return producers


def producers_of(part: Partition) -> dict[int, ProducerEntry]:
    """The partition's producer state, rebuilt from its batch headers on first use or after a truncation."""
    if part.producers is None:
        part.producers = rebuild(part)
    return part.producers


def check_batch(part: Partition, batch) -> int | None:
    """Check a batch a leader is about to append: the offset of its duplicate, or None to append.

    Raises:
        RequestError: INVALID_PRODUCER_EPOCH or OUT_OF_ORDER_SEQUENCE_NUMBER.
    """
    if len(batch) < 61:
        return None
    h = parse_header(batch)
    if h.producer_id < 0 or h.base_sequence < 0:
        return None
    return check(producers_of(part), h.producer_id, h.producer_epoch, h.base_sequence, h.record_count)


def note_appended(part: Partition, batch, base_offset: int) -> None:
    """Remember an appended batch's producer and sequence range (leaders and followers)."""
    h = parse_header(batch)
    if h.producer_id >= 0 and h.base_sequence >= 0:
        record(producers_of(part), h.producer_id, h.producer_epoch, h.base_sequence, h.record_count, base_offset)
