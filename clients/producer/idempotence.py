"""Idempotent producing, client side: the producer id, its epoch and per-partition sequences.

Pure state, no I/O (the sender does the ``init_producer_id`` request and tells
this object the answer).  The broker's half is ``zbroker/producer_state.py``.

Theory of operation
-------------------
- Before the first batch is numbered the producer needs an id: :meth:`next_request`
  names the broker to ask (the next candidate on every try, so a broker that does
  not answer is not asked forever); :meth:`on_producer_id` /
  :meth:`on_producer_id_failed` take the answer.
- Each batch gets its ``base_sequence`` once, when it is first encoded
  (:meth:`assign`): the partition's next sequence, which then advances by the
  batch's record count (mod 2**31).  A retry resends the same bytes with the same
  numbers, so a broker that already has the batch answers with its offset (a
  duplicate is acknowledged, not written twice) -- nothing to do here.
- A batch the broker *refused* (a non-retriable error, e.g.
  OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, MESSAGE_TOO_LARGE) is not in
  the log: the gap it leaves would make every later batch of its partition fail
  with OUT_OF_ORDER_SEQUENCE_NUMBER.  :meth:`on_batch_failed` then marks the id for
  a reset.  Transport errors, timeouts and a close are not refusals (the batch's
  fate is unknown).
- The reset happens once no produce request is in flight (:meth:`ready`): batches
  already sent keep their id and numbers (a resend must still be recognised), and
  the id, epoch and every sequence are dropped, so batches not yet sent are
  numbered afresh under a new producer id.
"""

from __future__ import annotations

from zbroker.errors import ClientClosedError, ConnectionBrokenError, RequestTimeoutError, ZBrokerError

SEQUENCE_MODULUS = 1 << 31
_NOT_REFUSALS = (RequestTimeoutError, ConnectionBrokenError, ClientClosedError)


class IdempotenceState:
    """Producer id, epoch and next sequence per partition of one idempotent producer."""

    __slots__ = ("producer_id", "producer_epoch", "requested", "tries", "reset_pending", "sequences")

    def __init__(self) -> None:
        self.producer_id = -1  # -1 until the cluster hands one out
        self.producer_epoch = -1
        self.requested = False  # an init_producer_id request is in flight
        self.tries = -1
        self.reset_pending = False
        self.sequences: dict[tuple[str, int], int] = {}  # tp -> next sequence number

    def ready(self, any_in_flight: bool) -> bool:
        """True when batches may be numbered: there is a producer id.

        Applies a pending reset first if nothing is in flight.  O(1).
        """
        if self.reset_pending and not any_in_flight:
            self.producer_id, self.reset_pending, self.sequences = -1, False, {}
        return self.producer_id >= 0

    def next_request(self, candidates: list[str]) -> str | None:
        """The broker to send ``init_producer_id`` to now, or None (one is in flight,
        there is an id, or no broker is known).  Marks the request as in flight."""
        if self.requested or self.producer_id >= 0 or not candidates:
            return None
        self.requested = True
        self.tries += 1
        return candidates[self.tries % len(candidates)]

    def on_producer_id(self, producer_id: int, producer_epoch: int) -> None:
        """The cluster's answer to ``init_producer_id``."""
        self.requested = False
        self.producer_id, self.producer_epoch = producer_id, producer_epoch

    def on_producer_id_failed(self) -> None:
        """``init_producer_id`` failed; the next :meth:`next_request` asks the next broker."""
        self.requested = False

    def assign(self, tp: tuple[str, int], record_count: int) -> int:
        """The base sequence of a new batch of ``record_count`` records to ``tp``.  O(1)."""
        base = self.sequences.get(tp, 0)
        self.sequences[tp] = (base + record_count) % SEQUENCE_MODULUS
        return base

    @staticmethod
    def is_refusal(error: BaseException | None) -> bool:
        """True if ``error`` means the broker refused the batch (it is not in the log)."""
        return isinstance(error, ZBrokerError) and not error.retriable and not isinstance(error, _NOT_REFUSALS)

    def on_batch_failed(self, error: BaseException | None) -> None:
        """A numbered batch failed for good; a refusal schedules a new producer id."""
        if self.is_refusal(error):
            self.reset_pending = True
