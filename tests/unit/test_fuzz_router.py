"""A fuzzer of the request decoder and router (hypothesis, bounded budget).

Frames go into one BrokerNode (sans-IO, time passed in): arbitrary bytes and arbitrary
msgpack values as frame 0, and valid requests of every type mutated (wrong types, huge
lists and strings, deep nesting, missing fields, odd correlation ids, extra frames).
Properties, after each message and a tick past every deadline:

- the node never raises;
- a message with an integer ``cid`` gets exactly one reply carrying it, except an acks=0
  produce (none or one); anything else gets none;
- an error reply is small whatever the request held, and no reply is huge;
- the broker still answers a valid metadata request.
"""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.batch import build_native_batch
from tests.fuzzcorpus import DrawChooser, fuzz_budget, native_message
from zbroker import protocol as P
from zbroker.config import single_node_config
from zbroker.node import BrokerNode

PEER = b"\x00fuzz"
PAST_EVERY_DEADLINE_MS = 301_000  # fetch max_wait_ms is at most 300 s
MAX_ERROR_REPLY = 2048
MAX_REPLY = 1 << 20
BUDGET = fuzz_budget(1000)

BATCH = build_native_batch([(5, b"k", b"v", None)])
TP = {"topic": "t", "partition": 0}
VALID = {
    P.METADATA: {"topics": ["t", "u"], "allow_auto_create": False},
    P.CREATE_TOPIC: {"topic": "made", "partitions": 1, "config": {"retention_ms": 1000}, "validate_only": True},
    P.DELETE_TOPIC: {"topic": "gone"},
    P.DESCRIBE_TOPIC: {"topic": "t"},
    P.ALTER_TOPIC_CONFIG: {"topic": "t", "config": {"retention_ms": 100000}},
    P.PRODUCE: {"acks": 1, "timeout_ms": 1000, "batches": [TP]},
    P.FETCH: {"max_wait_ms": 100, "min_bytes": 1, "partitions": [{**TP, "offset": 0, "max_bytes": 4096}]},
    P.LIST_OFFSETS: {"partitions": [{**TP, "timestamp": -1}]},
    P.CREATE_PARTITIONS: {"topic": "t", "total": 3},
    P.INIT_PRODUCER_ID: {},
    P.FIND_COORDINATOR: {"group": "g"},
    P.GROUP_HEARTBEAT: {"group": "g", "member_epoch": 0, "topics": ["t"], "owned": [["t", 0]]},
    P.OFFSET_COMMIT: {"group": "g", "offsets": [{**TP, "offset": 1, "metadata": "m"}]},
    P.OFFSET_FETCH: {"group": "g", "partitions": [["t", 0]]},
    P.LIST_GROUPS: {},
    P.DESCRIBE_GROUP: {"group": "g"},
    P.DELETE_GROUP: {"group": "g"},
    P.CREATE_INTERNAL_TOPIC: {"topic": "__x", "partitions": 1, "replication_factor": 1, "config": {}},
    P.ALTER_ISR: {"topic": "t", "partition": 0, "leader": 1, "leader_epoch": 0, "isr": [1]},
    P.ALTER_SECURITY: {"records": [{"type": "quota", "principal": "User:a", "produce_bytes_per_s": 1000}]},
    P.API_VERSIONS: {},
    P.CREATE_ACLS: {"acls": [{"principal": "User:a", "resource_type": "topic", "name": "t", "operation": "read"}]},
    P.DESCRIBE_ACLS: {"principal": "User:a", "pattern": "match", "name": "t"},
    P.DELETE_ACLS: {"filters": [{"principal": "User:a"}]},
    P.UPSERT_USER: {"user": "u", "credentials": [{"mechanism": "SCRAM-SHA-256", "salt": b"s" * 16, "iterations": 4096,
                                                  "stored_key": b"k" * 32, "server_key": b"v" * 32}]},
    P.REMOVE_USER: {"user": "u"},
    P.LIST_USERS: {},
    P.DESCRIBE_QUOTAS: {"principals": ["User:a"]},
    P.ALTER_QUOTAS: {"entries": [{"principal": "User:a", "ops": [{"key": "fetch_bytes_per_s", "value": 1000}]}],
                     "validate_only": True},
    P.BRIDGE_STATUS: {},
    **{kind: {name: 0 for name in schema} for kind, schema in P.RAFT_SCHEMAS.items()},
}
assert set(VALID) == set(P.SCHEMAS)

ints = st.integers(-3, 3) | st.sampled_from([-2**63, 2**63 - 1, 2**64 - 1, 2**31, -1]) | st.integers(-2**63, 2**64 - 1)
scalars = st.none() | st.booleans() | ints | st.floats() | st.text(max_size=12) | st.binary(max_size=12)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                      max_leaves=12)


@st.composite
def mutated(draw):
    """A valid request of a random type with fields changed (:func:`tests.fuzzcorpus.native_message`)."""
    return native_message(DrawChooser(draw, values), VALID)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    now = 1_000_000
    config = single_node_config(str(tmp_path_factory.mktemp("fuzz")))
    # no checkpoint (fsync) per tick: the fuzzer ticks past every deadline after each message
    config = dataclasses.replace(config, settings={**config.settings, "flush_check_ms": 1 << 50})
    broker = BrokerNode(config, 1, now)
    broker.now = now
    broker.handle(PEER, [P.encode(P.request(P.CREATE_TOPIC, 1, topic="t", partitions=2))], now)
    broker.handle(PEER, [P.encode(P.request(P.PRODUCE, 2, batches=[TP])), BATCH], now)
    assert [msgpack.unpackb(f[0])["error"] for _, f in broker.outbox] == [0, 0]
    broker.outbox.clear()
    yield broker
    broker.close(broker.now)


def run(node, frames: list[bytes]) -> list[dict]:
    """Handle one message, then tick past every deadline; the replies, decoded, checked for size."""
    node.outbox.clear()
    node.handle(PEER, frames, node.now)
    node.now += PAST_EVERY_DEADLINE_MS
    node.tick(node.now)
    replies = []
    for conn, out in node.outbox:
        assert conn == PEER
        header = msgpack.unpackb(out[0], raw=False)
        size = sum(len(f) for f in out)
        assert size <= MAX_REPLY, (header.get("type"), size)
        if header.get("error"):
            assert size <= MAX_ERROR_REPLY, header
        replies.append(header)
    node.outbox.clear()
    return replies


def still_serving(node) -> None:
    (reply,) = run(node, [P.encode(P.request(P.METADATA, 7, topics=["t"]))])
    assert reply["cid"] == 7 and reply["error"] == 0


def expected_cid(frame: bytes):
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception:
        return None
    if not isinstance(header, dict):
        return None
    cid = header.get("cid")
    return cid if isinstance(cid, int) and not isinstance(cid, bool) else None


def check_answered(node, frames: list[bytes], header: dict | None) -> None:
    cid = expected_cid(frames[0])
    replies = run(node, frames)
    if cid is None:
        assert replies == []
        return
    assert all(r["cid"] == cid for r in replies), replies
    one_way = header is not None and header.get("type") == P.PRODUCE and header.get("acks") == 0
    assert len(replies) == 1 or (one_way and not replies), (header and header.get("type"), replies)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_frames(node, depth):
    """msgpack's decoder has a stack of 1024 levels: deeper is undecodable (dropped), shallower
    is a field of the wrong type (answered)."""
    head = msgpack.packb({"v": 1, "type": "metadata", "cid": 5})
    frame = b"\x84" + head[1:] + msgpack.packb("topics") + b"\x91" * depth + msgpack.packb("t")
    replies = run(node, [frame])
    if depth < 1024:
        assert [(r["cid"], r["error"]) for r in replies] == [(5, 42)]
    else:
        assert replies == []
    still_serving(node)


@BUDGET
@given(frame=st.binary(max_size=256), extra=st.lists(st.binary(max_size=32), max_size=2))
def test_arbitrary_bytes(node, frame, extra):
    check_answered(node, [frame, *extra], None)
    still_serving(node)


@BUDGET
@given(value=values | st.dictionaries(st.sampled_from(["v", "type", "cid", "topics", "partitions", "x"]), values, max_size=5))
def test_arbitrary_msgpack_values(node, value):
    check_answered(node, [msgpack.packb(value, use_bin_type=True)], value if isinstance(value, dict) else None)
    still_serving(node)


@fuzz_budget(2000)
@given(request=mutated())
def test_mutated_valid_requests_of_every_type(node, request):
    header, frames = request
    check_answered(node, frames, header)
    still_serving(node)
