"""The native router through a BrokerNode: decoding, validation, sender checks, authorization,
metrics and replies -- frames and ``now`` in, outbox out."""

import msgpack
import pytest

from storage import build_native_batch
from zbroker.config import single_node_config
from zbroker.context import Completion
from zbroker.errors import ErrorCode
from zbroker.node import BrokerNode
from zbroker.security import ResourceType

NOW = 1_000
CLIENT = b"\x00client"


def frame(kind, cid, v=1, **fields):
    return msgpack.packb({"v": v, "type": kind, "cid": cid, **fields})


class DenyKind:
    """Allows everything but one type of resource; remembers what it was asked."""

    def __init__(self, denied: ResourceType):
        self.denied = denied
        self.asked = []

    def authorize(self, ctx, operation, resource):
        self.asked.append((ctx.principal, operation.value, resource.type.value, resource.name))
        return resource.type is not self.denied


class Node:
    def __init__(self, data_dir, authorizer=None):
        self.node = BrokerNode(single_node_config(str(data_dir)), 1, NOW, authorizer=authorizer)

    def send(self, kind, cid=1, *payloads, conn=CLIENT, now=NOW, v=1, principal=None, peer=False, **fields):
        message = [frame(kind, cid, v, **fields), *payloads]
        if peer:
            self.node.handle_peer(conn, message, now, principal)
        else:
            self.node.handle(conn, message, now, principal)

    def replies(self, peer=False):
        box = self.node.peer_replies if peer else self.node.outbox
        out = [(conn, msgpack.unpackb(frames[0]), frames[1:]) for conn, frames in box]
        box.clear()
        return out

    def call(self, kind, *payloads, conn=CLIENT, principal=None, peer=False, **fields):
        self.send(kind, 1, *payloads, conn=conn, principal=principal, peer=peer, **fields)
        ((to, header, rest),) = self.replies(peer)
        assert to == conn and header["type"] == kind and header["cid"] == 1
        return header

    def stats(self, kind):
        return self.node.metrics.get("native", kind)


@pytest.fixture
def n(tmp_path):
    node = Node(tmp_path / "d")
    assert node.call("create_topic", topic="t", partitions=1)["error"] == 0
    yield node
    node.node.close(NOW)


def batch():
    return build_native_batch([(5, None, b"v", None)])


# -- decoding and validation -------------------------------------------------------------


def test_an_unknown_type_is_invalid_and_named(n):
    reply = n.call("frobnicate")
    assert reply["error"] == ErrorCode.INVALID_REQUEST and "'frobnicate'" in reply["error_message"]
    assert n.stats("unknown").count == 1 and n.stats("unknown").errors == 1


def test_an_unsupported_version_is_refused(n):
    for v in (2, 0, "1", True):
        reply = n.call("metadata", v=v)
        assert reply["error"] == ErrorCode.UNSUPPORTED_VERSION and "version" in reply["error_message"]
    assert n.call("frobnicate", v=9)["error"] == ErrorCode.UNSUPPORTED_VERSION  # the version is checked first


def test_a_field_of_the_wrong_type_is_invalid_and_named(n):
    reply = n.call("create_topic", topic="x", partitions="3")
    assert reply["error"] == ErrorCode.INVALID_REQUEST and "'partitions'" in reply["error_message"]
    reply = n.call("fetch", partitions=[{"topic": "t", "partition": True, "offset": 0}])
    assert reply["error"] == ErrorCode.INVALID_REQUEST and "'partitions[0].partition'" in reply["error_message"]
    reply = n.call("delete_topic")
    assert reply["error"] == ErrorCode.INVALID_REQUEST and "missing field 'topic'" in reply["error_message"]
    assert n.node.app.control.image.get("x") is None


def test_garbage_without_a_cid_is_dropped_unanswered(n):
    for junk in (b"\xc1\xc1", msgpack.packb([1, 2]), msgpack.packb({"type": "metadata"}), msgpack.packb({"cid": "1"})):
        n.node.handle(CLIENT, [junk], NOW)
    assert n.replies() == []
    assert n.call("metadata")["error"] == 0  # and the node carries on


# -- who may send what -------------------------------------------------------------------


VOTE = {"from": 2, "epoch": 9, "last_epoch": 9, "end_offset": 100}


def test_broker_only_requests_on_the_client_listener_are_refused_whoever_asks(n):
    isr = n.call("alter_isr", topic="t", partition=0, leader=1, leader_epoch=0, isr=[1])
    assert isr["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert n.call("raft_vote", **VOTE)["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    # the routing id is no proof, and not even a broker principal is served here: brokers use peer_port
    assert n.call("raft_vote", conn=b"zb-broker-2", **VOTE)["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert n.call("raft_vote", principal="Broker:2", **VOTE)["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert n.call("alter_security", principal="User:admin", records=[])["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert n.call("create_internal_topic", principal="Broker:1", topic="__x", partitions=1, replication_factor=1,
                  config={})["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert n.node.app.control.epoch < 9  # never reached Raft
    assert n.node.app.control.image.get("__x") is None


def test_on_the_peer_listener_a_broker_speaks_only_for_itself(n):
    spoofed = n.call("raft_vote", principal="Broker:3", peer=True, **VOTE)
    assert spoofed["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED  # broker 3 speaking for broker 2
    assert n.call("raft_vote", principal=None, peer=True, **VOTE)["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert n.node.app.control.epoch < 9


def test_a_follower_fetch_must_come_from_the_follower_it_names(n):
    spec = [{"topic": "t", "partition": 0, "offset": 0}]
    reply = n.call("fetch", principal="Broker:3", peer=True, replica_id=2, max_wait_ms=0, partitions=spec)
    assert reply["error"] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    for conn in (b"zb-broker-2", CLIENT):  # a replica fetch on the client listener: never
        assert n.call("fetch", conn=conn, replica_id=2, max_wait_ms=0, partitions=spec)["error"] == \
            ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    consumer = n.call("fetch", max_wait_ms=0, partitions=spec)  # a consumer's fetch: anyone
    assert consumer["error"] == 0 and consumer["partitions"][0]["error"] == 0


def test_a_raft_message_from_the_broker_it_names_is_one_way(n):
    n.send("raft_begin_epoch", 0, principal="Broker:2", peer=True, **{"from": 2, "epoch": 1, "leader": 2})
    assert n.replies(peer=True) == []  # one-way: never answered (broker 2 is no voter here: ignored)
    assert n.node.metrics.get("peer", "raft_begin_epoch").count == 1
    assert n.node.metrics.get("peer", "raft_begin_epoch").errors == 0


def test_a_request_whose_key_was_removed_is_answered_without_running(n):
    n.node.refuse(CLIENT, [frame("delete_topic", 7, topic="t")], NOW, "this client's CURVE key is no longer admitted")
    ((to, header, _),) = n.replies()
    assert to == CLIENT and header["cid"] == 7 and header["error"] == ErrorCode.SASL_AUTHENTICATION_FAILED
    assert n.node.app.control.image.get("t") is not None


# -- authorization -------------------------------------------------------------------------


def test_a_denied_topic_request_never_reaches_the_service(tmp_path, monkeypatch):
    authorizer = DenyKind(ResourceType.TOPIC)
    node = Node(tmp_path / "d", authorizer)
    reached = []
    monkeypatch.setattr(node.node.app.admin, "create_topic", lambda *a: reached.append(a))
    reply = node.call("create_topic", topic="secret")
    assert reply["error"] == ErrorCode.TOPIC_AUTHORIZATION_FAILED and "User:ANONYMOUS" in reply["error_message"]
    assert reached == [] and authorizer.asked == [("User:ANONYMOUS", "create", "topic", "secret")]
    produce = node.call("produce", batch(), batches=[{"topic": "secret", "partition": 0}])
    assert produce["error"] == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    assert node.stats("create_topic").errors == 1
    node.node.close(NOW)


def test_a_denied_group_request_never_reaches_the_coordinator(tmp_path, monkeypatch):
    node = Node(tmp_path / "d", DenyKind(ResourceType.GROUP))
    reached = []
    monkeypatch.setattr(node.node.app.groups, "find_coordinator", lambda *a: reached.append(a))
    assert node.call("find_coordinator", group="g")["error"] == ErrorCode.GROUP_AUTHORIZATION_FAILED
    assert node.call("group_heartbeat", group="g", member_epoch=0)["error"] == ErrorCode.GROUP_AUTHORIZATION_FAILED
    assert reached == [] and node.node.app.control.image.get("__consumer_offsets") is None
    assert node.call("metadata")["error"] == 0  # topics and the cluster are not denied
    node.node.close(NOW)


# -- answers and metrics --------------------------------------------------------------------


def test_metrics_count_requests_errors_and_latency(n):
    before = n.stats("metadata").count
    n.call("metadata")
    n.call("metadata", topics=["t"])
    n.call("describe_topic", topic="nope")
    assert n.stats("metadata").count == before + 2 and n.stats("metadata").errors == 0
    described = n.stats("describe_topic")
    assert (described.count, described.errors) == (1, 1)
    assert described.seconds >= 0 and sum(described.buckets) == 1


def test_a_parked_fetch_is_counted_when_it_completes(n):
    n.send("fetch", 7, max_wait_ms=5_000, partitions=[{"topic": "t", "partition": 0, "offset": 0}])
    assert n.replies() == [] and n.stats("fetch").count == 0  # parked: not answered, not counted
    n.send("produce", 8, batch(), batches=[{"topic": "t", "partition": 0}])
    replies = n.replies()
    assert [h["cid"] for _, h, _ in replies] == [7, 8] and replies[0][2][0]
    assert n.stats("fetch").count == 1 and n.stats("produce").count == 1
    n.send("fetch", 9, max_wait_ms=5_000, partitions=[{"topic": "t", "partition": 0, "offset": 1}])
    n.node.tick(NOW + 5_000)
    ((_, expired, payloads),) = n.replies()
    assert expired["cid"] == 9 and payloads == [b""] and n.stats("fetch").count == 2


def test_a_produce_with_acks_0_sends_nothing_but_appends(n):
    n.send("produce", 5, batch(), acks=0, batches=[{"topic": "t", "partition": 0}])
    assert n.replies() == []
    assert n.stats("produce").count == 1
    offsets = n.call("list_offsets", partitions=[{"topic": "t", "partition": 0, "timestamp": -1}])
    assert offsets["partitions"][0]["offset"] == 1


def test_a_completion_that_fails_is_answered_with_its_code(n, monkeypatch):
    done = Completion()
    monkeypatch.setattr(n.node.app.admin, "delete_topic", lambda *a: done)
    n.send("delete_topic", 4, topic="t")
    assert n.replies() == []
    done.fail_with(ErrorCode.NOT_CONTROLLER, "moved")
    ((_, reply, _),) = n.replies()
    assert (reply["cid"], reply["error"], reply["error_message"]) == (4, ErrorCode.NOT_CONTROLLER, "moved")
    assert n.stats("delete_topic").errors == 1
