"""The bridge's gateway on a real sans-IO broker: local calls, and the messages it hands
to other brokers encoded by the PeerLink and served by a broker's inter-broker router."""

from __future__ import annotations

import pytest

from storage.batch import build_native_batch, iter_batches
from zbroker.config import single_node_config
from zbroker.context import Completion, PeerReply
from zbroker.core.fetch import ListOffsets, OffsetQuery
from zbroker.core.produce import ProduceRequest
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.bridge.gateway import Gateway, retriable
from zbroker.frontends.native.peers import PeerLink
from zbroker.groups.coordinator import CommitOffset, OffsetCommit, OffsetFetch
from zbroker.node import BrokerNode
from zbroker.security import Operation, ResourceType

pytestmark = pytest.mark.timeout(60)


class Node:
    def __init__(self, data_dir, now=1_000):
        self.now = now
        self.node = BrokerNode(single_node_config(str(data_dir)), 1, now)
        self.app = self.node.app
        self.sent: list = []  # what the gateway hands to other brokers: (broker, message)

    def gateway(self, principal="Bridge:test"):
        return Gateway(self.app, self, principal)

    # PeerChannel, recording
    def send(self, broker_id, message):
        self.sent.append((broker_id, message, None))

    def call(self, broker_id, message, on_reply, timeout_ms, now_ms):
        self.sent.append((broker_id, message, on_reply))

    def settle(self, completion: Completion, rounds=50):
        for _ in range(rounds):
            if completion.done:
                return completion
            self.now += 10
            self.node.tick(self.now)
        return completion


def value(c: Completion):
    assert c.done, "not settled"
    if c.error is not None:
        raise c.error
    return c.value


@pytest.fixture
def n(tmp_path):
    node = Node(tmp_path / "d")
    gw = node.gateway()
    assert value(node.settle(gw.create_topic("t", 2, {}, node.now))) is None
    node.settle(Completion())  # let the metadata commit apply
    assert node.app.control.image.get("t") is not None
    yield node
    node.node.close()


def records(n, start=0):
    return build_native_batch([(5, None, b"v%d" % i, None) for i in range(start, start + n)])


def test_produce_fetch_and_offsets_on_the_local_leader(n):
    gw = n.gateway()
    r = value(n.settle(gw.produce("t", 1, records(3), -1, 5000, n.now)))
    assert r.error == 0 and r.base_offset == 0
    assert value(gw.produce("t", 1, records(2, 3), 1, 5000, n.now)).base_offset == 3
    assert value(gw.list_offset("t", 1, -1, n.now)) == 5
    assert value(gw.list_offset("t", 1, -2, n.now)) == 0
    fetched = value(n.settle(gw.fetch("t", 1, 3, 1 << 20, n.now)))
    assert fetched.high_watermark == 5
    assert sum(1 for _ in iter_batches(fetched.data)) == 1
    assert gw.partition_count("t") == 2 and gw.partition_count("nope") is None
    assert gw.topics()["t"] == 2
    assert not n.sent  # nothing was handed on: this broker leads every partition


def test_group_offsets_round_trip_as_an_admin_commit(n):
    gw = n.gateway()
    for _ in range(20):  # the offsets topic is created on first use
        c = n.settle(gw.committed("bridge-x", [("t", 0)], n.now))
        if c.error is None:
            break
        assert retriable(c.error), c.error
        n.settle(Completion())
    assert value(c) == {("t", 0): -1}
    value(n.settle(gw.commit("bridge-x", {("t", 0): 7, ("t", 1): 2}, n.now)))
    assert value(n.settle(gw.committed("bridge-x", [("t", 0), ("t", 1)], n.now))) == {("t", 0): 7, ("t", 1): 2}


def test_errors_fail_the_completion_with_their_code(n):
    gw = n.gateway()
    with pytest.raises(RequestError) as err:
        value(gw.produce("nope", 0, records(1), 1, 5000, n.now))
    assert err.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and retriable(err.value)
    with pytest.raises(RequestError) as err:
        value(n.settle(gw.fetch("t", 0, 99, 1 << 20, n.now)))
    assert err.value.code == ErrorCode.OFFSET_OUT_OF_RANGE and not retriable(err.value)
    assert value(n.settle(gw.create_topic("t", 2, {}, n.now))) is None  # exists: fine
    assert value(n.settle(gw.create_partitions("t", 2, n.now))) is None  # already that large


def test_the_bridges_principal_is_authorized_before_anything_happens(n):
    class Deny:
        def authorize(self, ctx, operation, resource):
            assert ctx.principal == "Bridge:test" and ctx.listener == "bridge"
            return not (resource.type == ResourceType.TOPIC and operation == Operation.WRITE)

    n.app.authorizer = Deny()
    gw = n.gateway()
    with pytest.raises(RequestError) as err:
        value(gw.produce("t", 0, records(1), 1, 5000, n.now))
    assert err.value.code == ErrorCode.TOPIC_AUTHORIZATION_FAILED and "Bridge:test" in err.value.message
    assert value(gw.list_offset("t", 0, -1, n.now)) == 0  # nothing was written


def test_a_partition_led_elsewhere_is_handed_to_its_leader(n):
    gw = n.gateway()
    n.app.broker_id = 2  # as if another broker ran the bridge: broker 1 leads everything
    done = gw.produce("t", 0, records(2), -1, 5000, n.now)
    assert not done.done
    (broker, message, on_reply), = n.sent
    assert broker == 1 and isinstance(message, ProduceRequest) and message.acks == -1
    on_reply(PeerReply(int(ErrorCode.NOT_LEADER_OR_FOLLOWER), "moved"), n.now)
    assert done.error.code == ErrorCode.NOT_LEADER_OR_FOLLOWER and retriable(done.error)
    n.sent.clear()
    gw.produce("t", 0, records(1), 0, 5000, n.now)
    assert n.sent[0][2] is None  # acks=0: one-way


def serve_on_peer_port(n, message):
    """Encode ``message`` as the PeerLink does, serve it on the node's inter-broker router
    as broker 2 would send it, and decode the answer as the PeerLink does."""
    got = []
    link = PeerLink(lambda broker, frames: n.node.handle_peer(b"\x00b2", frames, n.now, "Broker:2"))
    link.call(1, message, lambda reply, now: got.append(reply), 5000, n.now)
    for _ in range(50):
        for _conn, frames in n.node.peer_replies:
            link.on_reply(frames, n.now)
        n.node.peer_replies.clear()
        if got:
            return got[0]
        n.now += 10
        n.node.tick(n.now)
    raise AssertionError("no answer")


def test_handed_on_requests_are_served_by_the_leaders_peer_router(n):
    reply = serve_on_peer_port(n, ProduceRequest(-1, 5000, [("t", 1, records(4))]))
    assert reply.error == 0 and reply.value[0].base_offset == 0
    reply = serve_on_peer_port(n, ListOffsets([OffsetQuery("t", 1, -1)]))
    assert reply.value[0].offset == 4
    gw = n.gateway()
    for _ in range(20):
        if n.settle(gw.committed("g", [("t", 1)], n.now)).error is None:
            break
        n.settle(Completion())
    reply = serve_on_peer_port(n, OffsetCommit("g", [CommitOffset("t", 1, 3, "")]))
    assert reply.error == 0
    reply = serve_on_peer_port(n, OffsetFetch("g", [("t", 1)]))
    assert [(o.topic, o.partition, o.offset) for o in reply.value] == [("t", 1, 3)]
