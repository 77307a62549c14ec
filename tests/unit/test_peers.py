"""PeerLink: typed broker-to-broker messages as native requests, and the one table of calls."""

import logging

import msgpack
import pytest

from zbroker import protocol as P
from zbroker.context import PeerReply
from zbroker.control.controlplane import RaftMessage
from zbroker.control.topicadmin import (
    AlterIsr,
    AlterTopicConfig,
    CreateInternalTopic,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    InitProducerId,
    ProducerId,
)
from zbroker.core.fetch import FetchedPartition, FetchPartition, FetchRequest, FetchResult
from zbroker.errors import ErrorCode
from zbroker.frontends.native.peers import PeerLink

NOW = 1_000


@pytest.fixture
def out():
    return []


@pytest.fixture
def link(out):
    return PeerLink(lambda broker, frames: out.append((broker, frames)))


def header(frames):
    return msgpack.unpackb(frames[0], raw=False)


def reply(cid, kind="create_topic", *payloads, **fields):
    return [P.encode(P.response(kind, cid, **fields)), *payloads]


class Replies(list):
    def __call__(self, answer: PeerReply, now_ms: int) -> None:
        self.append((answer, now_ms))


FETCH = FetchRequest([FetchPartition("t", 0, 5, 100, 3, 2), FetchPartition("u", 1, 0)], max_wait_ms=500, min_bytes=1,
                     max_bytes=1000, replica_id=2)


@pytest.mark.parametrize("message, kind, fields", [
    (CreateTopic("t", 3, 1, {"retention_ms": 5}), "create_topic",
     {"topic": "t", "partitions": 3, "replication_factor": 1, "config": {"retention_ms": 5}, "validate_only": False}),
    (DeleteTopic("t"), "delete_topic", {"topic": "t"}),
    (AlterTopicConfig("t", {"flush_ms": None}), "alter_topic_config",
     {"topic": "t", "config": {"flush_ms": None}, "validate_only": False}),
    (CreatePartitions("t", 4), "create_partitions", {"topic": "t", "total": 4, "validate_only": False}),
    (InitProducerId(), "init_producer_id", {}),
    (AlterIsr("t", 1, 2, 7, [2, 3]), "alter_isr", {"topic": "t", "partition": 1, "leader": 2, "leader_epoch": 7, "isr": [2, 3]}),
    (CreateInternalTopic("__consumer_offsets", 6, 3, {"cleanup_policy": "compact"}), "create_internal_topic",
     {"topic": "__consumer_offsets", "partitions": 6, "replication_factor": 3, "config": {"cleanup_policy": "compact"}}),
    (FETCH, "fetch", {"replica_id": 2, "max_wait_ms": 500, "min_bytes": 1, "max_bytes": 1000, "partitions": [
        {"topic": "t", "partition": 0, "offset": 5, "max_bytes": 100, "leader_epoch": 3, "last_fetched_epoch": 2},
        {"topic": "u", "partition": 1, "offset": 0, "max_bytes": 1048576, "leader_epoch": -1, "last_fetched_epoch": -1}]}),
])
def test_each_message_is_the_native_request_it_stands_for(link, out, message, kind, fields):
    link.call(3, message, Replies(), 1000, NOW)
    ((broker, frames),) = out
    h = header(frames)
    assert broker == 3 and len(frames) == 1
    assert h == {"v": P.PROTOCOL_VERSION, "type": kind, "cid": 1, **fields}
    assert P.check_fields(kind, h) == fields  # what the receiving router accepts, field for field


def test_calls_get_distinct_cids_and_one_way_messages_cid_zero(link, out):
    link.call(2, DeleteTopic("a"), Replies(), 1000, NOW)
    link.send(2, CreateTopic("auto"))
    link.call(3, DeleteTopic("b"), Replies(), 1000, NOW)
    link.send(3, RaftMessage({"type": "raft_vote", "from": 1, "epoch": 4, "last_epoch": 3, "end_offset": 9}))
    link.send(3, RaftMessage({"type": "raft_fetch_response", "from": 1, "epoch": 4}, b"chunk"))
    cids = [header(frames)["cid"] for _, frames in out]
    assert cids[0] != cids[2] and cids[0] > 0 and cids[2] > 0
    assert cids[1] == cids[3] == cids[4] == 0
    assert header(out[3][1]) == {"v": 1, "cid": 0, "type": "raft_vote", "from": 1, "epoch": 4, "last_epoch": 3, "end_offset": 9}
    assert out[4][1][1] == b"chunk" and len(out[3][1]) == 1  # a payload rides in frame 1, none without one
    assert len(link) == 2  # only the calls wait for an answer


def test_a_reply_reaches_its_own_call_with_the_decoded_value(link, out):
    first, second = Replies(), Replies()
    link.call(2, InitProducerId(), first, 1000, NOW)
    link.call(2, DeleteTopic("t"), second, 1000, NOW)
    cid_first, cid_second = (header(frames)["cid"] for _, frames in out)
    link.on_reply(reply(cid_second, "delete_topic", error=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), error_message="no t"),
                  NOW + 1)
    assert first == [] and second == [(PeerReply(3, "no t", None), NOW + 1)]
    link.on_reply(reply(cid_first, "init_producer_id", producer_id=42, producer_epoch=0), NOW + 2)
    assert first == [(PeerReply(0, None, ProducerId(42, 0)), NOW + 2)]
    link.on_reply(reply(cid_first, "init_producer_id", producer_id=43), NOW + 3)  # a duplicate: dropped
    assert len(first) == 1 and len(link) == 0


def test_a_fetch_reply_decodes_to_a_result_with_payloads_matched_to_partitions(link, out):
    got = Replies()
    link.call(2, FETCH, got, 1000, NOW)
    cid = header(out[0][1])["cid"]
    entries = [{"topic": "t", "partition": 0, "error": 0, "high_watermark": 9, "log_start_offset": 0},
               {"topic": "u", "partition": 1, "error": 74, "high_watermark": -1, "log_start_offset": -1, "diverging": [3, 7]}]
    link.on_reply(reply(cid, "fetch", b"batches-of-t0", b"", partitions=entries), NOW + 1)
    ((answer, _),) = got
    assert answer.error == 0
    assert answer.value == FetchResult([FetchedPartition("t", 0, 0, 9, 0, None, b"batches-of-t0"),
                                        FetchedPartition("u", 1, 74, -1, -1, [3, 7], b"")])


def test_replies_to_unknown_or_expired_calls_and_one_way_messages_are_dropped(link, out, caplog, monkeypatch):
    got = Replies()
    link.call(2, DeleteTopic("t"), got, 100, NOW)
    cid = header(out[0][1])["cid"]
    link.on_reply(reply(cid + 50), NOW)  # nobody asked
    link.on_reply(reply(0), NOW)  # a one-way message's answer
    assert got == [] and len(link) == 1
    link.expire(NOW + 100)
    assert got[0][0].error == ErrorCode.REQUEST_TIMED_OUT
    link.on_reply(reply(cid), NOW + 101)  # too late
    assert len(got) == 1
    with caplog.at_level(logging.WARNING):
        link.on_reply([b"\xc1garbage"], NOW)
        link.on_reply([msgpack.packb({"no": "cid"})], NOW)
    assert len([r for r in caplog.records if "undecodable" in r.getMessage()]) == 2


def test_a_malformed_reply_fails_only_that_call(link, out):
    bad, good = Replies(), Replies()
    link.call(2, FETCH, bad, 1000, NOW)
    link.call(2, DeleteTopic("t"), good, 1000, NOW)
    cid_bad, cid_good = (header(frames)["cid"] for _, frames in out)
    link.on_reply(reply(cid_bad, "fetch", partitions=[{"topic": "t", "partition": 0, "diverging": 5}]), NOW)  # not a list
    assert bad[0][0].error == ErrorCode.UNKNOWN_SERVER_ERROR and bad[0][0].value is None
    link.on_reply([msgpack.packb({"v": 1, "type": "delete_topic", "cid": cid_good, "error": "oops"})], NOW)  # not a number
    assert good[0][0].error == ErrorCode.UNKNOWN_SERVER_ERROR
    link.call(2, DeleteTopic("u"), good, 1000, NOW)  # the link carries on
    link.on_reply(reply(header(out[-1][1])["cid"], "delete_topic"), NOW)
    assert good[-1][0] == PeerReply(0, None, None)


def test_expire_times_out_calls_in_deadline_order(link, out):
    got = Replies()
    assert link.next_deadline() is None
    link.call(2, DeleteTopic("late"), lambda r, now: got.append(("late", r.error, now)), 300, NOW)
    link.call(3, DeleteTopic("early"), lambda r, now: got.append(("early", r.error, now)), 100, NOW)
    link.call(2, DeleteTopic("answered"), lambda r, now: got.append(("answered", r.error, now)), 50, NOW)
    assert link.next_deadline() == NOW + 50
    link.on_reply(reply(header(out[2][1])["cid"], "delete_topic"), NOW + 10)
    assert link.next_deadline() == NOW + 100  # the answered call no longer counts
    link.expire(NOW + 99)
    assert got == [("answered", 0, NOW + 10)]
    link.expire(NOW + 1000)
    timed_out = int(ErrorCode.REQUEST_TIMED_OUT)
    assert got[1:] == [("early", timed_out, NOW + 1000), ("late", timed_out, NOW + 1000)]
    assert link.next_deadline() is None and len(link) == 0
