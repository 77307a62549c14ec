"""The consumer's fetcher with a fake network: positions, resets, fetch answers, ordering.

Batches are built with ``storage.batch.build_native_batch`` (what a broker serves).
"""

from __future__ import annotations

import pytest

from clients.consumer.fetcher import Fetcher
from storage.batch import build_native_batch
from tests.unit.clients.clientfakes import FakeMeta, FakeNet
from zbroker.errors import ErrorCode, OffsetOutOfRangeError
from zbroker.protocol import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

TP = ("t", 0)
TP1 = ("t", 1)
LEADER = "b1:9555"


def make(reset="earliest", leaders=None):
    net = FakeNet()
    meta = FakeMeta(leaders if leaders is not None else {TP: LEADER, TP1: LEADER})
    f = Fetcher(net, meta, auto_offset_reset=reset, fetch_max_wait_ms=500, fetch_min_bytes=1,
                max_partition_fetch_bytes=1 << 20)
    return f, net, meta


def batch(base_offset, n, prefix=b"v"):
    return build_native_batch([(1000 + i, None, prefix + b"%d" % (base_offset + i), None) for i in range(n)],
                              base_offset=base_offset)


def answer(req, parts, frames):
    """Answer a fetch: ``parts`` are the per-partition result dicts, ``frames`` their bytes."""
    req.callback({"error": 0, "partitions": parts}, frames, None)


def fetching(reset="earliest", offset=0, tps=(TP,)):
    """A fetcher at ``offset`` on ``tps`` with its first fetch sent: (fetcher, net, meta, request)."""
    f, net, meta = make(reset=reset)
    f.set_assignment(list(tps))
    for tp in tps:
        f.seek(tp, offset)
    f.run(0.0)
    return f, net, meta, net.of_kind("fetch")[0]


OUT_OF_RANGE = {"error": int(ErrorCode.OFFSET_OUT_OF_RANGE), "log_start_offset": 10, "high_watermark": 20}


def ok(hw=100):
    return {"error": 0, "high_watermark": hw, "log_start_offset": 0}


def collect(f, n=1000):
    with f.lock:
        return f.collect(n)


def position(f, tp=TP):
    with f.lock:
        return f.position(tp)


def test_seek_sets_the_position_and_unassigned_partitions_are_refused():
    f, _net, _ = make()
    f.set_assignment([TP])
    assert position(f) is None and f.states[TP].reset == "earliest"  # a reset is pending
    f.seek(TP, 17)
    assert position(f) == 17 and f.states[TP].fetch_offset == 17
    with pytest.raises(ValueError, match="not assigned"):
        f.seek(TP1, 3)
    with pytest.raises(ValueError, match="not assigned"):
        position(f, TP1)


def test_reset_none_without_a_position_raises():
    f, _net, _ = make(reset="none")
    f.set_assignment([TP])
    with pytest.raises(OffsetOutOfRangeError):
        position(f)
    f.seek(TP, 5)
    assert position(f) == 5


@pytest.mark.parametrize("reset, timestamp", [("earliest", EARLIEST_TIMESTAMP), ("latest", LATEST_TIMESTAMP)])
def test_pending_reset_is_resolved_with_list_offsets(reset, timestamp):
    f, net, _ = make(reset=reset)
    f.set_assignment([TP])
    f.run(0.0)
    (req,) = net.of_kind("list_offsets")
    assert req.address == LEADER and req.fields["partitions"] == [{"topic": "t", "partition": 0, "timestamp": timestamp}]
    f.run(0.0)
    assert len(net.of_kind("list_offsets")) == 1  # one reset in flight per partition
    req.callback({"error": 0, "partitions": [{"error": 0, "offset": 40}]}, [], None)
    assert position(f) == 40
    f.run(0.0)
    (fetch,) = net.of_kind("fetch")
    assert fetch.fields["partitions"][0]["offset"] == 40


def test_fetched_batches_are_buffered_and_collected_in_offset_order():
    f, net, _, first = fetching()
    answer(first, [ok()], [batch(0, 3) + batch(3, 2)])
    assert f.states[TP].fetch_offset == 5 and f.states[TP].high_watermark == 100
    f.run(0.0)
    second = net.of_kind("fetch")[-1]
    assert second.fields["partitions"][0]["offset"] == 5  # fetched ahead of poll()
    answer(second, [ok()], [batch(5, 2)])
    recs = collect(f, 4)
    assert [r.offset for r in recs] == [0, 1, 2, 3] and recs[0].value == b"v0" and recs[0].topic == "t"
    assert [r.offset for r in collect(f)] == [4, 5, 6]
    assert position(f) == 7 and collect(f) == []


def test_records_below_the_fetch_position_are_skipped():
    f, _net, _, req = fetching(offset=3)
    answer(req, [ok()], [batch(0, 5)])  # a fetch may start mid-batch
    assert [r.offset for r in collect(f)] == [3, 4]


def test_an_answer_from_before_a_seek_is_dropped():
    f, _net, _, stale = fetching()
    f.seek(TP, 10)
    answer(stale, [ok()], [batch(0, 5)])
    assert collect(f) == [] and position(f) == 10


def test_one_fetch_per_leader_for_all_its_partitions():
    f, net, _ = make()
    f.set_assignment([TP, TP1])
    f.seek(TP, 0)
    f.seek(TP1, 7)
    f.run(0.0)
    f.run(0.0)
    (req,) = net.of_kind("fetch")
    assert [(p["partition"], p["offset"]) for p in req.fields["partitions"]] == [(0, 0), (1, 7)]
    answer(req, [ok(), ok()], [batch(0, 1), batch(7, 1)])
    assert sorted((r.partition, r.offset) for r in collect(f)) == [(0, 0), (1, 7)]


@pytest.mark.parametrize("reset, timestamp", [("earliest", EARLIEST_TIMESTAMP), ("latest", LATEST_TIMESTAMP)])
def test_offset_out_of_range_resets_by_policy(reset, timestamp):
    f, net, _, req = fetching(reset=reset, offset=500)
    answer(req, [OUT_OF_RANGE], [b""])
    st = f.states[TP]
    assert st.position is None and st.reset == reset and st.error is None
    f.run(0.0)
    (req,) = net.of_kind("list_offsets")
    assert req.fields["partitions"][0]["timestamp"] == timestamp


def test_offset_out_of_range_with_reset_none_is_raised_by_poll():
    f, net, _, req = fetching(reset="none", offset=500)
    answer(req, [OUT_OF_RANGE], [b""])
    with pytest.raises(OffsetOutOfRangeError, match="500"):
        collect(f)
    assert net.of_kind("list_offsets") == []


@pytest.mark.parametrize("code", [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION])
def test_not_leader_errors_refresh_metadata_and_back_off(code):
    f, net, meta, req = fetching()
    answer(req, [{"error": int(code)}], [b""])
    assert meta.updates == 1
    st = f.states[TP]
    assert st.error is None and st.backoff_until > 0 and position(f) == 0  # retried, not failed


def test_transport_error_backs_off_without_losing_the_position():
    f, net, _, req = fetching(offset=4)
    req.callback(None, [], TimeoutError("no answer"))
    st = f.states[TP]
    assert not st.inflight and st.backoff_until > 0 and position(f) == 4
    assert f.run(0.0) == st.backoff_until  # waits for the backoff, sends nothing
    assert len(net.of_kind("fetch")) == 1


def test_leaderless_partition_requests_metadata():
    f, net, meta = make(leaders={})
    f.set_assignment([TP])
    f.seek(TP, 0)
    deadline = f.run(5.0)
    assert net.sent == [] and meta.updates == 1 and deadline == pytest.approx(5.1)
    meta.cache.leaders[TP] = LEADER
    f.run(5.1)
    assert net.of_kind("fetch")[0].address == LEADER


def test_revoked_partition_buffers_are_dropped():
    f, _net, _, req = fetching(tps=(TP, TP1))
    answer(req, [ok(), ok()], [batch(0, 2), batch(0, 2, prefix=b"w")])
    f.set_assignment([TP1])
    assert {r.partition for r in collect(f)} == {1} and f.buffered_total == 0
