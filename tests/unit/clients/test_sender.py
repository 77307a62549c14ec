"""The producer's sender with a fake network: ordering under retries, error mapping."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clients.accumulator import RecordAccumulator
from clients.producer import _Sender
from clients.structs import Record
from storage.batch import decode_batches, set_base_offset
from zbroker.errors import (
    ConnectionBrokenError,
    ErrorCode,
    MessageTooLargeError,
    NotLeaderOrFollowerError,
    RequestTimeoutError,
)

TP = ("t", 0)


class FakeNet:
    def __init__(self):
        self.sent = []

    def send(self, address, kind, fields, frames, callback, timeout_ms=None, expect_response=True, on_sent=None):
        self.sent.append(SimpleNamespace(address=address, kind=kind, fields=fields, frames=list(frames), callback=callback, on_sent=on_sent))

    def wakeup(self):
        pass


class FakeMeta:
    def __init__(self, leaders):
        self.cache = SimpleNamespace(leaders=leaders, updated_at=0.0)
        self.updates = 0

    def request_update(self, now=None):
        self.updates += 1


def make(acks=1, retries=10, batch_size=10_000, linger_ms=0, idempotent=False):
    acc = RecordAccumulator(batch_size=batch_size, linger_ms=linger_ms)
    net = FakeNet()
    meta = FakeMeta({TP: "b1"})
    producer = SimpleNamespace(
        _acc=acc, _net=net, _meta=meta, max_in_flight=5, delivery_timeout=120.0, retry_backoff=0.1,
        retries=retries, compression=0, acks=acks, request_timeout_ms=1000, _closed_hard=False,
        metadata_max_age=300.0, enable_idempotence=idempotent, _pid=7 if idempotent else -1, _pid_epoch=0,
        _seq={}, _pid_requested=False, _pid_reset=False, _pid_tries=-1,
    )
    clock = SimpleNamespace(now=0.0)
    sender = _Sender(producer, clock=lambda: clock.now)
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
    from storage.batch import parse_header

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
