"""Quotas and the in-flight limit through the native door: a BrokerNode driven with frames and
time passed in (no sockets): quota requests, throttled answers held back, the limit's refusals."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from storage import build_native_batch
from zbroker.config import single_node_config
from zbroker.control.security_meta import DEFAULT_QUOTA_PRINCIPAL
from zbroker.errors import ErrorCode
from zbroker.node import BrokerNode

pytestmark = pytest.mark.timeout(60)

NOW = 1_000_000
CLIENT = b"\x00client"


# -- the native door ---------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


class Node:
    def __init__(self, data_dir, **settings):
        config = single_node_config(str(data_dir))
        config = dataclasses.replace(config, settings={**config.settings, **settings})
        self.clock = Clock()
        self.node = BrokerNode(config, 1, NOW, clock=self.clock)
        self.cid = 0

    def send(self, kind, *payloads, conn=CLIENT, **fields):
        self.cid += 1
        self.node.handle(conn, [msgpack.packb({"v": 1, "type": kind, "cid": self.cid, **fields}), *payloads], self.clock.now)
        return self.cid

    def replies(self):
        out = [(conn, msgpack.unpackb(frames[0]), frames[1:]) for conn, frames in self.node.outbox]
        self.node.outbox.clear()
        return out

    def call(self, kind, *payloads, conn=CLIENT, **fields):
        cid = self.send(kind, *payloads, conn=conn, **fields)
        ((to, header, rest),) = self.replies()
        assert to == conn and header["cid"] == cid
        return header

    def advance(self, ms):
        self.clock.now += ms
        self.node.tick(self.clock.now)

    def produce(self, value=b"x" * 10_000, conn=CLIENT):
        return self.send("produce", build_native_batch([(NOW, None, value, None)]), conn=conn,
                         batches=[{"topic": "t", "partition": 0}])


def node_with_topic(tmp_path):
    """A node with topic ``t`` (1 partition) and an in-flight limit of 4; closed at the end."""
    node = Node(tmp_path / "d", max_in_flight_per_connection=4)
    assert node.call("create_topic", topic="t", partitions=1)["error"] == 0
    yield node
    node.node.close(node.clock.now)


@pytest.fixture
def n(tmp_path):
    yield from node_with_topic(tmp_path)


def set_quota(n, principal, **values):
    ops = [{"key": k, "value": v} if v is not None else {"key": k, "remove": True} for k, v in values.items()]
    return n.call("alter_quotas", entries=[{"principal": principal, "ops": ops}])


def test_quotas_are_set_described_and_removed_per_key(n):
    assert set_quota(n, DEFAULT_QUOTA_PRINCIPAL, produce_bytes_per_s=1000)["error"] == 0
    assert set_quota(n, "User:app", fetch_bytes_per_s=5000.5)["error"] == 0
    assert set_quota(n, "User:app", produce_bytes_per_s=2000)["error"] == 0  # keeps its fetch quota
    assert n.call("describe_quotas")["quotas"] == [
        {"principal": DEFAULT_QUOTA_PRINCIPAL, "produce_bytes_per_s": 1000, "fetch_bytes_per_s": None},
        {"principal": "User:app", "produce_bytes_per_s": 2000, "fetch_bytes_per_s": 5000.5}]
    assert set_quota(n, "User:app", produce_bytes_per_s=None)["error"] == 0
    assert n.call("describe_quotas", principals=["User:app", "User:nobody"])["quotas"] == [
        {"principal": "User:app", "produce_bytes_per_s": None, "fetch_bytes_per_s": 5000.5}]
    assert set_quota(n, "User:app", fetch_bytes_per_s=None)["error"] == 0
    assert n.call("describe_quotas", principals=["User:app"])["quotas"] == []


@pytest.mark.parametrize("entry, named", [
    ({"principal": "alice", "ops": [{"key": "produce_bytes_per_s", "value": 5}]}, "User:NAME"),
    ({"principal": "User:a", "ops": [{"key": "request_percentage", "value": 5}]}, "unknown quota key"),
    ({"principal": "User:a", "ops": [{"key": "produce_bytes_per_s", "value": 0}]}, "from 1 to 2**53"),
    ({"principal": "User:a", "ops": [{"key": "produce_bytes_per_s"}]}, "got None"),
])
def test_a_bad_quota_change_is_refused_naming_what_is_wrong(n, entry, named):
    reply = n.call("alter_quotas", entries=[{"principal": "User:ok", "ops": []}, entry])
    assert reply["error"] == ErrorCode.INVALID_REQUEST and named in reply["error_message"]
    assert "entries[1]" in reply["error_message"]
    assert n.call("describe_quotas")["quotas"] == []


def test_without_quotas_answers_say_throttle_time_0_and_go_at_once(n):
    n.produce()
    ((_, header, _),) = n.replies()
    assert header["results"][0]["error"] == 0 and header["throttle_time_ms"] == 0
    header = n.call("fetch", max_wait_ms=0, partitions=[{"topic": "t", "partition": 0, "offset": 0}])
    assert header["throttle_time_ms"] == 0


def test_a_produce_over_its_quota_is_appended_and_its_answer_held_back(n):
    assert set_quota(n, DEFAULT_QUOTA_PRINCIPAL, produce_bytes_per_s=1000)["error"] == 0
    n.produce(b"x" * 5000)  # ~5 KB over 10 s: within 1000 B/s
    ((_, first, _),) = n.replies()
    assert first["throttle_time_ms"] == 0
    n.produce(b"x" * 20_000)  # now ~2500 B/s: 15 s of throttle, capped at the 10 s default
    assert n.replies() == []  # held back
    assert n.node.router.in_flight.held(CLIENT) == 1
    hw = n.node.app.partitions.online[("t", 0)].high_watermark
    assert hw == 2  # appended all the same
    n.advance(9_999)
    assert n.replies() == []
    n.advance(1)
    ((_, second, _),) = n.replies()
    assert second["results"][0]["error"] == 0 and second["results"][0]["base_offset"] == 1
    assert second["throttle_time_ms"] == 10_000
    assert n.node.router.in_flight.held(CLIENT) == 0


def test_a_produce_is_held_back_no_longer_than_its_timeout(n):
    assert set_quota(n, DEFAULT_QUOTA_PRINCIPAL, produce_bytes_per_s=1000)["error"] == 0
    n.send("produce", build_native_batch([(NOW, None, b"x" * 50_000, None)]), timeout_ms=2500,
           batches=[{"topic": "t", "partition": 0}])
    n.advance(2500)
    ((_, header, _),) = n.replies()
    assert header["throttle_time_ms"] == 2500


def test_a_fetch_over_its_quota_is_held_back_and_one_already_over_it_has_no_records(n):
    n.produce(b"y" * 30_000)
    n.replies()
    assert set_quota(n, "User:ANONYMOUS", fetch_bytes_per_s=1000)["error"] == 0  # security off: everyone's principal
    spec = [{"topic": "t", "partition": 0, "offset": 0}]
    n.send("fetch", max_wait_ms=0, partitions=spec)  # within the quota until its records are counted
    n.send("fetch", conn=b"\x00another", max_wait_ms=0, partitions=spec)  # the same principal, now over it
    assert n.replies() == []
    n.advance(10_000)
    (_, first, records), (_, second, nothing) = n.replies()
    assert first["throttle_time_ms"] == 10_000 and len(records[0]) > 30_000
    assert second["throttle_time_ms"] == 10_000 and nothing == [b""] and second["partitions"][0]["error"] == 0
    assert second["partitions"][0]["high_watermark"] == 1  # the record is there: fetch it again later
    # the producer is not throttled: a fetch quota only
    n.produce()
    assert n.replies()[0][1]["throttle_time_ms"] == 0


def test_follower_fetches_are_never_throttled(n):
    assert set_quota(n, DEFAULT_QUOTA_PRINCIPAL, fetch_bytes_per_s=1)["error"] == 0
    n.produce()
    n.replies()
    spec = [{"topic": "t", "partition": 0, "offset": 0}]
    # on the inter-broker listener, as broker 2 (its CURVE key proved it)
    request = {"v": 1, "type": "fetch", "cid": 1, "replica_id": 2, "max_wait_ms": 0, "partitions": spec}
    n.node.handle_peer(b"zb-broker-2", [msgpack.packb(request)], n.clock.now, "Broker:2")
    ((_conn, frames),) = n.node.peer_replies
    follower = msgpack.unpackb(frames[0])
    assert follower["throttle_time_ms"] == 0
    n.send("fetch", max_wait_ms=0, partitions=spec)  # a consumer's: held back
    assert n.replies() == []
    n.advance(10_000)
    assert n.replies()[0][1]["throttle_time_ms"] == 10_000


def test_the_in_flight_limit_refuses_the_next_request_and_the_connection_goes_on(n):
    parked = [{"topic": "t", "partition": 0, "offset": 0}]
    for _ in range(4):
        n.send("fetch", max_wait_ms=5000, partitions=parked)  # long polls on an empty partition
    assert n.replies() == [] and n.node.router.in_flight.held(CLIENT) == 4
    refused = n.call("metadata", topics=[])
    assert refused["error"] == ErrorCode.THROTTLING_QUOTA_EXCEEDED
    assert "max_in_flight_per_connection" in refused["error_message"] and "4" in refused["error_message"]
    assert n.call("metadata", conn=b"\x00other", topics=[])["error"] == 0  # other connections are not affected
    n.advance(5000)  # the long polls end
    assert len(n.replies()) == 4 and len(n.node.router.in_flight) == 0
    assert n.call("metadata", topics=[])["error"] == 0


def test_answers_held_back_by_a_quota_count_against_the_in_flight_limit(n):
    assert set_quota(n, DEFAULT_QUOTA_PRINCIPAL, produce_bytes_per_s=1)["error"] == 0
    for _ in range(4):
        n.produce()
    assert n.replies() == []
    n.produce()
    ((_, refused, _),) = n.replies()
    assert refused["error"] == ErrorCode.THROTTLING_QUOTA_EXCEEDED
    assert n.node.app.partitions.online[("t", 0)].high_watermark == 4  # the refused one was not appended
    n.advance(10_000)
    answers = n.replies()
    assert [h["results"][0]["base_offset"] for _, h, _ in answers] == [0, 1, 2, 3]


def test_brokers_are_not_held_to_the_in_flight_limit(n):
    broker = b"zb-broker-1"
    for cid in range(5):  # on the inter-broker listener, as a broker (its CURVE key proved it)
        request = {"v": 1, "type": "fetch", "cid": cid + 1, "max_wait_ms": 5000,
                   "partitions": [{"topic": "t", "partition": 0, "offset": 0}]}
        n.node.handle_peer(broker, [msgpack.packb(request)], n.clock.now, "Broker:1")
    assert n.node.peer_replies == [] and n.node.peer_router.in_flight.held(broker) == 5
    n.advance(5000)
    assert len(n.node.peer_replies) == 5
