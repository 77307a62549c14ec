"""The idempotent producer's state: pure, no network (the sender's side is in test_sender.py)."""

from __future__ import annotations

from clients.producer.idempotence import SEQUENCE_MODULUS, IdempotenceState
from zbroker.errors import (
    ClientClosedError,
    ConnectionBrokenError,
    InvalidProducerEpochError,
    MessageTooLargeError,
    NotLeaderOrFollowerError,
    OutOfOrderSequenceNumberError,
    RequestTimeoutError,
)

TP = ("t", 0)


def with_id(pid=7, epoch=0) -> IdempotenceState:
    s = IdempotenceState()
    s.on_producer_id(pid, epoch)
    return s


def test_sequences_count_records_per_partition_and_wrap():
    s = with_id()
    assert s.assign(("t", 0), 3) == 0
    assert s.assign(("t", 0), 2) == 3
    assert s.assign(("t", 1), 1) == 0  # each partition counts on its own
    assert s.assign(("t", 0), 1) == 5
    s.sequences[("t", 2)] = SEQUENCE_MODULUS - 2
    assert s.assign(("t", 2), 5) == SEQUENCE_MODULUS - 2 and s.sequences[("t", 2)] == 3


def test_producer_id_request_rotates_over_candidates_and_is_not_doubled():
    s = IdempotenceState()
    assert not s.ready(any_in_flight=False)
    assert s.next_request([]) is None  # no broker known yet: nothing asked
    assert s.next_request(["b1", "b2"]) == "b1"
    assert s.next_request(["b1", "b2"]) is None  # one request at a time
    s.on_producer_id_failed()
    assert s.next_request(["b1", "b2"]) == "b2"  # the next broker
    s.on_producer_id(11, 3)
    assert s.ready(any_in_flight=False) and (s.producer_id, s.producer_epoch) == (11, 3)
    assert s.next_request(["b1"]) is None


def test_refusals_schedule_a_new_id_other_failures_do_not():
    for error in (OutOfOrderSequenceNumberError("gap"), InvalidProducerEpochError("fenced"), MessageTooLargeError("big")):
        s = with_id()
        s.on_batch_failed(error)
        assert s.reset_pending, error
    for error in (RequestTimeoutError("slow"), ConnectionBrokenError("gone"), ClientClosedError("closed"),
                  NotLeaderOrFollowerError("moved"), ValueError("not a broker error"), None):
        s = with_id()
        s.on_batch_failed(error)
        assert not s.reset_pending, error


def test_reset_waits_until_nothing_is_in_flight_then_drops_id_and_sequences():
    s = with_id()
    s.assign(TP, 4)
    s.on_batch_failed(OutOfOrderSequenceNumberError("gap"))
    assert s.ready(any_in_flight=True)  # batches in flight keep their id and numbers
    assert s.producer_id == 7 and s.sequences == {TP: 4}
    assert not s.ready(any_in_flight=False)
    assert s.producer_id == -1 and s.sequences == {} and not s.reset_pending
    assert s.next_request(["b1"]) == "b1"
    s.on_producer_id(8, 0)
    assert s.ready(False) and s.assign(TP, 1) == 0  # numbered afresh under the new id
