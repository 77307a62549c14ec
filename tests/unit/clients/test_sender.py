"""The producer's sender with a fake network: ordering under retries, error mapping."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clients.producer.accumulator import RecordAccumulator
from clients.producer.idempotence import IdempotenceState
from clients.producer.sender import Sender
from clients.structs import Record
from storage.batch import parse_header, set_base_offset
from storage.decode import decode_batches
from tests.unit.clients.clientfakes import FakeMeta, FakeNet
from zbroker.errors import ClusterAuthorizationFailedError
from zbroker.errors import (
    ConnectionBrokenError,
    ErrorCode,
    InvalidProducerEpochError,
    MessageTooLargeError,
    NotLeaderOrFollowerError,
    OutOfOrderSequenceNumberError,
    RequestTimeoutError,
)

TP = ("t", 0)


def make(acks=1, retries=10, batch_size=10_000, linger_ms=0, idempotent=False):
    acc = RecordAccumulator(batch_size=batch_size, linger_ms=linger_ms)
    net = FakeNet()
    meta = FakeMeta({TP: "b1"})
    idem = None
    if idempotent:
        idem = IdempotenceState()
        idem.on_producer_id(7, 0)
    clock = SimpleNamespace(now=0.0)
    sender = Sender(
        acc, net, meta, max_in_flight=5, delivery_timeout=120.0, retry_backoff=0.1, retries=retries,
        compression=0, acks=acks, request_timeout_ms=1000, metadata_max_age=300.0, idempotence=idem,
        clock=lambda: clock.now,
    )
    sender.fake_clock = clock
    return sender, acc, net, meta


def run(sender, now):
    sender.fake_clock.now = now
    return sender.run(now)


def values(frame):
    return [r.value for r in decode_batches(set_base_offset(frame, 0), "t", 0, 0, record_type=Record)]


def ok(n_batches, base=0):
    return {"error": 0, "results": [{"topic": "t", "partition": 0, "error": 0, "base_offset": base + i} for i in range(n_batches)]}


def test_retriable_error_is_retried_before_later_batches():
    sender, acc, net, meta = make()
    f1, _ = acc.append(TP, 1, None, b"first", None, 10, 0.0)
    run(sender, 1.0)
    (req,) = net.sent
    f2, _ = acc.append(TP, 2, None, b"second", None, 10, 1.0)  # queued while the first is in flight
    assert run(sender, 1.0) is None and len(net.sent) == 1  # one request per partition in flight
    req.callback({"error": 0, "results": [{"topic": "t", "partition": 0, "error": int(ErrorCode.NOT_LEADER_OR_FOLLOWER), "base_offset": -1}]}, [], None)
    assert meta.updates == 1 and not f1.done()
    run(sender, 1.05)  # within backoff: nothing, and "second" must not overtake
    assert len(net.sent) == 1
    run(sender, 1.2)
    retry = net.sent[1]
    assert [values(f) for f in retry.frames] == [[b"first"], [b"second"]]
    assert retry.fields["batches"] == [{"topic": "t", "partition": 0}] * 2
    retry.callback(ok(2, base=7), [], None)
    assert f1.result(0).offset == 7 and f2.result(0).offset == 8


def test_transport_errors_retry_whole_request_in_order():
    sender, acc, net, _ = make()
    futs = [acc.append(TP, 1, None, b"%d" % i, None, 10, 0.0)[0] for i in range(3)]
    run(sender, 1.0)
    net.sent[0].callback(None, [], ConnectionBrokenError("gone"))
    run(sender, 2.0)
    assert [values(f) for f in net.sent[1].frames] == [[b"0", b"1", b"2"]]
    net.sent[1].callback(None, [], RequestTimeoutError("slow"))
    run(sender, 3.0)
    net.sent[2].callback(ok(1, base=0), [], None)
    assert [f.result(0).offset for f in futs] == [0, 1, 2]


def test_non_retriable_error_fails_and_retries_are_bounded():
    sender, acc, net, _ = make(retries=1)
    f, _ = acc.append(TP, 1, None, b"x", None, 10, 0.0)
    run(sender, 1.0)
    net.sent[0].callback({"error": 0, "results": [{"error": int(ErrorCode.MESSAGE_TOO_LARGE), "error_message": "too big"}]}, [], None)
    with pytest.raises(MessageTooLargeError, match="too big"):
        f.result(0)
    g, _ = acc.append(TP, 1, None, b"y", None, 10, 0.0)
    run(sender, 2.0)
    net.sent[1].callback(None, [], ConnectionBrokenError("1"))
    run(sender, 3.0)
    net.sent[2].callback(None, [], ConnectionBrokenError("2"))  # second attempt: out of retries
    with pytest.raises(ConnectionBrokenError):
        g.result(0)
    assert not acc.incomplete


def test_leaderless_partition_requests_metadata():
    sender, acc, net, meta = make()
    meta.cache.leaders = {}
    acc.append(TP, 1, None, b"x", None, 10, 0.0)
    deadline = run(sender, 1.0)
    assert net.sent == [] and meta.updates == 1 and deadline == pytest.approx(1.1)
    meta.cache.leaders = {TP: "b2"}
    run(sender, 1.1)
    assert net.sent[0].address == "b2"


def test_acks_zero_resolves_on_send():
    sender, acc, net, _ = make(acks=0)
    f, _ = acc.append(TP, 1, None, b"x", None, 10, 0.0)
    run(sender, 1.0)
    assert net.sent[0].callback is None and net.sent[0].fields["acks"] == 0
    net.sent[0].on_sent(None)
    assert f.result(0).offset == -1 and TP not in acc.muted


def test_missing_result_is_an_error():
    sender, acc, net, _ = make()
    f, _ = acc.append(TP, 1, None, b"x", None, 10, 0.0)
    run(sender, 1.0)
    net.sent[0].callback({"error": 0, "results": []}, [], None)
    assert f.exception(0) is not None


def test_not_leader_class_is_retriable():
    assert NotLeaderOrFollowerError.retriable and NotLeaderOrFollowerError.invalid_metadata


def test_idempotent_batches_are_numbered_and_keep_their_numbers_on_retry():


    sender, acc, net, meta = make(idempotent=True)
    for i in range(3):
        acc.append(TP, 1, None, b"a%d" % i, None, 10, 0.0)
    run(sender, 1.0)
    first = net.sent[-1]
    h = parse_header(first.frames[0])
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.record_count) == (7, 0, 0, 3)
    first.callback({"cid": 1, "error": 0, "results": [{"error": 6}]}, [], None)  # NOT_LEADER: retried
    acc.append(TP, 2, None, b"b", None, 10, 1.0)
    run(sender, 2.0)
    retried = net.sent[-1]
    assert parse_header(retried.frames[0]).base_sequence == 0  # the same numbers again
    assert parse_header(retried.frames[1]).base_sequence == 3  # the next batch continues after it


def error_result(code):
    return {"error": 0, "results": [{"error": int(code), "error_message": "no"}]}


def test_idempotent_out_of_order_sequence_fails_the_batch_and_takes_a_new_producer_id():
    sender, acc, net, meta = make(idempotent=True)
    meta.candidates = lambda: ["b1"]
    f, _ = acc.append(TP, 1, None, b"x", None, 10, 0.0)
    run(sender, 1.0)
    net.sent[-1].callback(error_result(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER), [], None)
    assert isinstance(f.exception(0), OutOfOrderSequenceNumberError)
    g, _ = acc.append(TP, 2, None, b"y", None, 10, 2.0)
    run(sender, 2.0)
    (ask,) = [r for r in net.sent if r.kind == "init_producer_id"]
    ask.callback({"producer_id": 9, "producer_epoch": 0}, [], None)
    run(sender, 2.1)
    h = parse_header(net.sent[-1].frames[0])
    assert (h.producer_id, h.base_sequence) == (9, 0)
    net.sent[-1].callback(ok(1, base=5), [], None)
    assert g.result(0).offset == 5


def test_idempotent_invalid_producer_epoch_fails_and_resets_too():
    sender, acc, net, _meta = make(idempotent=True)
    f, _ = acc.append(TP, 1, None, b"x", None, 10, 0.0)
    run(sender, 1.0)
    net.sent[-1].callback(error_result(ErrorCode.INVALID_PRODUCER_EPOCH), [], None)
    assert isinstance(f.exception(0), InvalidProducerEpochError)
    assert sender.idem.reset_pending


def test_idempotent_duplicate_answer_is_a_success_with_the_first_offset():
    # the broker answers a resent batch it already has with the original offset
    sender, acc, net, _meta = make(idempotent=True)
    f, _ = acc.append(TP, 1, None, b"x", None, 10, 0.0)
    run(sender, 1.0)
    net.sent[-1].callback(None, [], RequestTimeoutError("answer lost"))
    run(sender, 2.0)
    resent = net.sent[-1]
    assert parse_header(resent.frames[0]).base_sequence == 0
    resent.callback(ok(1, base=42), [], None)
    assert f.result(0).offset == 42 and not sender.idem.reset_pending and sender.idem.sequences == {TP: 1}


def test_idempotent_waits_for_a_producer_id_before_numbering():
    sender, acc, net, meta = make(idempotent=True)
    sender.idem = IdempotenceState()
    meta.candidates = lambda: []
    acc.append(TP, 1, None, b"x", None, 10, 0.0)
    assert run(sender, 1.0) == 1.1 and net.sent == []  # no broker known: try again after the backoff
    meta.candidates = lambda: ["b1", "b2"]
    run(sender, 1.1)
    (ask,) = net.sent
    ask.callback(None, [], RequestTimeoutError("no answer"))
    assert meta.updates == 1
    run(sender, 1.15)
    assert len(net.sent) == 1  # not before the backoff
    run(sender, 1.25)
    assert [r.address for r in net.sent] == ["b1", "b2"]  # the next broker


def test_a_refused_producer_id_fails_the_queued_sends_with_the_brokers_reason():
    sender, acc, net, meta = make(idempotent=True)
    sender.idem = IdempotenceState()
    meta.candidates = lambda: ["b1"]
    done, _ = acc.append(TP, 1, None, b"x", None, 10, 0.0)
    run(sender, 1.0)
    (ask,) = net.sent
    ask.callback({"error": 31, "error_message": "User:app may not idempotent_write cluster 'cluster'"}, [], None)
    with pytest.raises(ClusterAuthorizationFailedError, match="idempotent_write"):
        done.result(timeout=0)
    assert not acc.pending_batches()
    run(sender, 2.0)
    assert len(net.sent) == 1  # nothing queued: no more asking
