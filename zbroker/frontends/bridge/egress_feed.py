"""One partition an egress bridge sends out: where it reads, what it holds, what it may commit.

A :class:`Feed` keeps three positions of its partition, in this order on the log::

    released <= sent_to <= fetch_at
    |            |          '-- the next offset to fetch
    |            '------------- the next offset to hand to ZeroMQ (every record before it was handed over)
    '-------------------------- every record before it ZeroMQ has released (written out): what may be committed

``pending`` holds the records fetched and not yet handed over (a fetch is asked for only when
it is empty, so it holds at most one fetch's worth); ``unconfirmed`` holds, for each record
handed over whose send handle is not done yet, the position after it.  A send handle is what
the socket's send callback answered: anything with a ``done`` attribute (a ZeroMQ
MessageTracker on a PUSH bridge, :data:`RELEASED` on a PUB bridge).

Records are decoded from the fetched batches whatever their format (native or Kafka v2,
compressed or not) with :func:`storage.decode.decode_some_batches`; control batches are
skipped, and a batch that cannot be read is skipped with an error (counted by the bridge and
logged) instead of stopping the partition for good.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from storage.batch import parse_header, walk
from storage.decode import decode_some_batches
from storage.errors import CorruptBatchError


#: The most payload bytes one fetch answer is decoded to at once (a compressed batch may
#: decompress to this much); what is left is fetched again.
DECODE_BUDGET = 64 << 20
#: A bridge's one byte budget: the payload bytes it holds decoded (every partition's pending
#: records and a replay's) before it fetches or decodes more.  A decode starts only below it and
#: adds at most 2 x DECODE_BUDGET (storage.decode.decode_some_batches), so this plus that bounds it.
BRIDGE_BYTES = 64 << 20
HOLD_MS, MAX_HOLD_MS = 2, 50  # a send that would block is offered again after this, doubling


class Released:
    """The handle of a send that needs no confirmation (PUB: nothing is committed per subscriber)."""

    done = True


RELEASED = Released()


@dataclass(eq=False)
class Feed:
    topic: str
    partition: int
    late: bool = False  # appeared after the bridge's first look: starts at the earliest offset
    fetch_at: int | None = None  # None: the start position is not known yet
    sent_to: int | None = None
    released: int | None = None
    origin: int | None = None  # where it started (or was last reset to)
    committed: int = -1  # what the bridge's group holds for this partition (-1: nothing)
    end: int = -1  # the high watermark at the last fetch
    log_start: int = -1
    pending: deque = field(default_factory=deque)  # (frames, position after the record)
    pending_bytes: int = 0  # payload bytes (keys and values) in pending
    raw: bytes | None = None  # a fetch answer waiting for room in the bridge's byte budget to be decoded
    unconfirmed: deque = field(default_factory=deque)  # (position after the record, send handle)
    fetching: object = None  # the Completion of the fetch in flight
    resolving: bool = False  # a start position or a reset is being looked up
    not_before: int = 0  # no fetch (send, when held) before this time (ms): backoff
    held_since: int | None = None  # when its socket first refused its next record (None: not held)
    failures: int = 0  # errors in a row (backoff)
    skipped: int = 0  # offsets passed over without being sent (unreadable batches, retention, resets)

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    def start_at(self, offset: int) -> None:
        """Start (or restart, after a reset) at ``offset``: nothing before it is sent."""
        self.fetch_at = self.sent_to = self.origin = offset
        if not self.unconfirmed:
            self.released = offset
        self.pending.clear()
        self.pending_bytes = 0
        self.raw = None
        self.held_since = None

    def rewind(self) -> int | None:
        """Send again from the last committed position (or the start): what was handed over
        since may be lost.  Returns the new position, or None when there was nothing to undo."""
        back_to = self.committed if self.committed >= 0 else self.origin
        if self.fetch_at is None or back_to is None or back_to >= self.fetch_at:
            return None
        if self.fetching is not None:  # its answer is for a position no longer wanted
            self.fetching.abandon()
            self.fetching = None
        self.unconfirmed.clear()
        self.start_at(back_to)
        return back_to

    @property
    def started(self) -> bool:
        return self.fetch_at is not None

    def wants_fetch(self, now_ms: int) -> bool:
        return (self.fetch_at is not None and self.fetching is None and not self.resolving and not self.pending
                and self.raw is None and now_ms >= self.not_before)

    @property
    def lag(self) -> int | None:
        """Records in the log not handed to ZeroMQ yet (at the last fetch's high watermark)."""
        if self.sent_to is None or self.end < 0:
            return None
        return max(0, self.end - self.sent_to)

    # -- fetched data in -----------------------------------------------------------------

    def take(self, data: bytes, topic_frame: bytes) -> CorruptBatchError | None:
        """Decode one fetch answer's batches (read from ``fetch_at``) into ``pending``.

        Returns the error of a batch that cannot be read, which is skipped (``skipped``
        counts its offsets), or None."""
        start = self.fetch_at
        decoded = decode_some_batches(data, self.topic, self.partition, start, True, tuple, DECODE_BUDGET)
        next_offset, _ = walk(memoryview(data)[:decoded.end])
        pending = self.pending
        for rec in decoded.records:
            key, value = rec[4] or b"", rec[5] or b""
            pending.append(([topic_frame, key, value], rec[2] + 1))
            self.pending_bytes += len(key) + len(value)
        if next_offset > start:
            self.fetch_at = next_offset
        error = decoded.error
        if error is not None:  # pass over the batch (by its header, unless that is implausible: then one offset)
            to = parse_header(data, decoded.end).next_offset
            to = to if self.fetch_at < to <= max(self.end, self.fetch_at + 1) else self.fetch_at + 1
            self.skipped += to - self.fetch_at
            self.fetch_at = to
        if pending:  # the last record also passes over what follows it in its batch (control records, compacted gaps)
            frames, after = pending[-1]
            pending[-1] = (frames, max(after, self.fetch_at))
        elif self.fetch_at > self.sent_to:  # nothing to send here: nothing to hand over either
            self.sent_to = self.fetch_at
        return error

    # -- records out ----------------------------------------------------------------------

    def handed(self, after: int, handle) -> None:
        """The record before ``after`` was handed to ZeroMQ; ``handle.done`` once released."""
        self.sent_to = after
        if handle.done and not self.unconfirmed:
            self.released = after
        else:
            self.unconfirmed.append((after, handle))

    def confirmed(self) -> int | None:
        """The position every record before which ZeroMQ has released: what may be committed.

        Handles are checked in order and the first one not done stops the count (with several
        PULL peers a later record may leave before an earlier one: only a prefix counts).
        Runtime: O(handles found done), amortised O(1) per record."""
        unconfirmed = self.unconfirmed
        while unconfirmed and unconfirmed[0][1].done:
            self.released = unconfirmed.popleft()[0]
        if not unconfirmed:
            self.released = self.sent_to
        return self.released

    def status(self) -> dict:
        return {"topic": self.topic, "partition": self.partition, "position": self.sent_to,
                "committed": self.committed, "end": self.end if self.end >= 0 else None, "lag": self.lag,
                "held": len(self.pending), "unreleased": len(self.unconfirmed), "skipped": self.skipped}
