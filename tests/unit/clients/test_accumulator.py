"""Accumulator with a fake clock: linger, batch_size, drain order, in-order retry; futures."""

from __future__ import annotations

import threading

import pytest

from clients.producer.accumulator import RecordAccumulator, RecordFuture, failed_future
from clients.structs import RecordMetadata, TopicPartition
from zbroker.errors import NotLeaderOrFollowerError, UnknownTopicOrPartitionError

TP0 = ("t", 0)
TP1 = ("t", 1)


def leaders(mapping):
    return mapping.get


def append(acc, tp, now, size=100, ts=1000, value=b"v"):
    return acc.append(tp, ts, None, value, None, size, now)


def test_linger_holds_batch_until_deadline():
    acc = RecordAccumulator(batch_size=10_000, linger_ms=5)
    append(acc, TP0, now=0.0)
    by, deadline, leaderless = acc.drain(0.001, leaders({TP0: "b1"}))
    assert by == {} and deadline == pytest.approx(0.005) and not leaderless
    by, deadline, _ = acc.drain(0.005, leaders({TP0: "b1"}))
    assert list(by) == ["b1"] and by["b1"][0][0] == TP0
    acc._check()


def test_full_batch_is_sendable_at_once_and_new_batch_starts():
    acc = RecordAccumulator(batch_size=300, linger_ms=1000)
    news = [append(acc, TP0, now=0.0)[1] for _ in range(5)]
    assert news == [True, False, True, False, True]  # 61 + 3 * 100 > 300: two records per batch
    by, _, _ = acc.drain(0.0, leaders({TP0: "b1"}))
    (tp, batches), = by["b1"]
    assert [len(b.records) for b in batches] == [2, 2]  # the open third batch still lingers
    acc._check()


def test_oversized_record_gets_its_own_batch():
    acc = RecordAccumulator(batch_size=100, linger_ms=0)
    _, new1 = append(acc, TP0, 0.0, size=500)
    _, new2 = append(acc, TP0, 0.0, size=500)
    assert new1 and new2
    assert [len(b.records) for b in acc.queues[TP0]] == [1, 1]


def test_abort_on_new_batch():
    acc = RecordAccumulator(batch_size=150, linger_ms=1000)
    assert acc.append(TP0, 0, None, b"v", None, 100, 0.0, True) is None
    append(acc, TP0, 0.0)
    assert acc.append(TP0, 0, None, b"v", None, 100, 0.0, True) is None  # would need a second batch


def test_drain_groups_by_leader_and_mutes():
    acc = RecordAccumulator(batch_size=10_000, linger_ms=0)
    append(acc, TP0, 0.0)
    append(acc, TP1, 0.0)
    append(acc, ("u", 0), 0.0)
    by, _, leaderless = acc.drain(0.0, leaders({TP0: "b1", TP1: "b2"}))
    assert sorted(by) == ["b1", "b2"] and leaderless
    assert acc.muted == {TP0, TP1}
    append(acc, TP0, 0.0)
    by, _, _ = acc.drain(1.0, leaders({TP0: "b1"}))
    assert by == {}  # TP0 has a request in flight
    acc.unmute(TP0)
    by, _, _ = acc.drain(1.0, leaders({TP0: "b1"}))
    assert list(by) == ["b1"]


def test_can_send_limits_per_broker():
    acc = RecordAccumulator(batch_size=10_000, linger_ms=0)
    append(acc, TP0, 0.0)
    by, _, _ = acc.drain(0.0, leaders({TP0: "b1"}), can_send=lambda a: False)
    assert by == {} and not acc.muted


def test_retry_goes_first_and_blocks_later_batches_until_backoff():
    acc = RecordAccumulator(batch_size=150, linger_ms=0)
    f1, _ = append(acc, TP0, 0.0, ts=1)
    by, _, _ = acc.drain(0.0, leaders({TP0: "b1"}))
    (_, [b1]), = by["b1"]
    f2, _ = append(acc, TP0, 0.0, ts=2)  # a later batch arrives while b1 is in flight
    # b1 fails retriably: back to the front, with backoff, then unmuted
    acc.reenqueue(TP0, [b1], retry_at=0.1)
    acc.unmute(TP0)
    by, deadline, _ = acc.drain(0.05, leaders({TP0: "b1"}))
    assert by == {} and deadline == pytest.approx(0.1)  # nothing overtakes b1
    by, _, _ = acc.drain(0.1, leaders({TP0: "b1"}))
    (_, batches), = by["b1"]
    assert batches[0] is b1 and [b.records[0][0] + b.base_ts for b in batches] == [1, 2]
    acc._check()


def test_flush_makes_lingering_batch_sendable():
    acc = RecordAccumulator(batch_size=10_000, linger_ms=10_000)
    append(acc, TP0, 0.0)
    assert acc.drain(0.0, leaders({TP0: "b"}))[0] == {}
    acc.flushing += 1
    assert list(acc.drain(0.0, leaders({TP0: "b"}))[0]) == ["b"]


def test_expired_and_fail_all():
    acc = RecordAccumulator(batch_size=10_000, linger_ms=0)
    f, _ = append(acc, TP0, 0.0)
    assert acc.expired(1.0, 5.0) == []
    (b,) = acc.expired(6.0, 5.0)
    assert b.records and not acc.queues[TP0] and TP0 not in acc.open
    f2, _ = append(acc, TP1, 0.0)
    acc.fail_all(UnknownTopicOrPartitionError("gone"))
    with pytest.raises(UnknownTopicOrPartitionError):
        f2.result(0)


def test_future_resolves_lazily_with_offsets_and_timestamps():
    acc = RecordAccumulator(batch_size=10_000, linger_ms=0)
    futs = [acc.append(TP0, 1000 + i, None, b"v", None, 10, 0.0)[0] for i in range(3)]
    assert not futs[0].done()
    with pytest.raises(TimeoutError):
        futs[0].result(timeout=0.01)
    called = []
    futs[1].add_done_callback(called.append)
    (b,) = acc.queues[TP0]
    b.complete(base_offset=40)
    assert all(f.done() for f in futs)
    assert futs[2].result() == RecordMetadata("t", 0, 42, 1002)
    assert futs[0].exception() is None
    assert called == [futs[1]]
    late = []
    futs[0].add_done_callback(late.append)  # already done: runs at once
    assert late == [futs[0]]


def test_future_error_and_cross_thread_wait():
    acc = RecordAccumulator(batch_size=10_000, linger_ms=0)
    fut, _ = append(acc, TP0, 0.0)
    (b,) = acc.queues[TP0]
    err = NotLeaderOrFollowerError("moved")
    threading.Timer(0.05, b.complete, args=(-1, err)).start()
    assert fut.exception(timeout=5) is err
    with pytest.raises(NotLeaderOrFollowerError):
        fut.result(0)


def test_acks0_offset_is_minus_one():
    acc = RecordAccumulator()
    fut, _ = append(acc, TP0, 0.0)
    acc.queues[TP0][0].complete(-1)
    assert fut.result(0).offset == -1


def test_failed_future():
    f = failed_future(TopicPartition("t", 9), UnknownTopicOrPartitionError("nope"))
    assert f.done() and isinstance(f, RecordFuture)
    assert isinstance(f.exception(0), UnknownTopicOrPartitionError)


def test_wait_for_space_blocks_until_a_batch_resolves():
    acc = RecordAccumulator(batch_size=10, linger_ms=0)
    append(acc, TP0, 0.0)
    append(acc, TP1, 0.0)
    assert acc.wait_for_space(3, 0) is True
    assert acc.wait_for_space(2, 0.01) is False
    (b,) = acc.queues[TP0]

    def resolve():
        b.complete(0)
        acc.completed(b)

    threading.Timer(0.05, resolve).start()
    assert acc.wait_for_space(2, 5) is True
