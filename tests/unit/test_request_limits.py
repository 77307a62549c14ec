"""No request costs much more than it carries: caps, duplicates and bounded echoes, through a
BrokerNode (frames and ``now`` in, outbox out)."""

import dataclasses
import logging

import msgpack
import pytest

from tests.unit.test_broker import PEER, Harness, batch, h  # noqa: F401  (h: the fixture)
from zbroker import protocol as P
from zbroker.context import INTERNAL
from zbroker.core.fetch import FetchPartition, FetchRequest
from zbroker.errors import ErrorCode, RequestError

INVALID = int(ErrorCode.INVALID_REQUEST)


def tp(partition=0, **more):
    return {"topic": "t", "partition": partition, **more}


# -- one partition, once per request ----------------------------------------------------------


@pytest.mark.parametrize("kind, field, item, extra", [
    ("fetch", "partitions", tp(1, offset=0), {}),
    ("offset_commit", "offsets", tp(1, offset=0), {"group": "g"}),
])
def test_a_partition_named_twice_is_refused_naming_both_places(h, kind, field, item, extra):
    """A 20 KB fetch repeating one partition once got a 480 MB answer."""
    header, _ = h.call(kind, **{field: [tp(0, **{k: v for k, v in item.items() if k not in ("topic", "partition")}),
                                        item, item]}, **extra)
    assert header["error"] == INVALID
    assert f"'{field}[2]' repeats topic 't', partition 1 of '{field}[1]'" in header["error_message"]


def test_the_fetch_service_refuses_a_repeated_partition_from_any_front_door(h):
    req = FetchRequest([FetchPartition("t", 0, 0), FetchPartition("t", 0, 0)], max_wait_ms=0)
    with pytest.raises(RequestError) as err:
        h.broker.app.fetch.fetch(INTERNAL, req, h.now)
    assert err.value.code == ErrorCode.INVALID_REQUEST and "fetched more than once" in err.value.message


def test_produce_may_name_a_partition_once_per_batch_and_appends_them_in_order(h):
    """Decided: legitimate (the client sends every sendable batch of a partition in one request),
    and each batch is carried in full, so the cost is what the request carries."""
    header, _ = h.call("produce", batch(2), batch(3), batches=[tp(0), tp(0)])
    assert [(r["error"], r["base_offset"]) for r in header["results"]] == [(0, 0), (0, 2)]


def test_metadata_answers_a_name_asked_for_many_times_once(h):
    header, _ = h.call("metadata", topics=["t"] * 5000 + ["nope"] * 5000)
    assert [(t["topic"], t["error"]) for t in header["topics"]] == [("t", 0), ("nope", 3)]


# -- caps ---------------------------------------------------------------------------------------


def long(n):
    return "x" * n


CAPS = [
    ("metadata", {"topics": ["t"] * (10_001)}, "topics", "10001 items", 10_000),
    ("metadata", {"topics": [long(250)]}, "topics[0]", "250 chars", 249),
    ("create_topic", {"topic": long(250)}, "topic", "250 chars", 249),
    ("create_topic", {"topic": "u", "config": {f"k{i}": 1 for i in range(65)}}, "config", "65 items", 64),
    ("alter_topic_config", {"topic": "t", "config": {f"k{i}": 1 for i in range(65)}}, "config", "65 items", 64),
    ("fetch", {"partitions": [tp(i, offset=0) for i in range(10_001)]}, "partitions", "10001 items", 10000),
    ("fetch", {"partitions": [{"topic": long(250), "partition": 0, "offset": 0}]}, "partitions[0].topic", "250 chars", 249),
    ("list_offsets", {"partitions": [tp(i, timestamp=-1) for i in range(10_001)]}, "partitions", "10001 items",
     10000),
    ("find_coordinator", {"group": long(256)}, "group", "256 chars", 255),
    ("group_heartbeat", {"group": "g", "member_epoch": 0, "member_id": long(256)}, "member_id", "256 chars", 255),
    ("group_heartbeat", {"group": "g", "member_epoch": 0, "instance_id": long(256)}, "instance_id", "256 chars", 255),
    ("group_heartbeat", {"group": "g", "member_epoch": 0, "topics": ["t"] * (10_001)}, "topics", "10001 items",
     10000),
    ("group_heartbeat", {"group": "g", "member_epoch": 0, "owned": [["t", i] for i in range(10_001)]}, "owned",
     "10001 items", 10000),
    ("group_heartbeat", {"group": "g", "member_epoch": 0, "owned": [["t", 0, 1]]}, "owned[0]", "3 items", 2),
    ("offset_commit", {"group": "g", "offsets": [tp(0, offset=1, metadata=long(4097))]}, "offsets[0].metadata", "4097 chars",
     4096),
    ("offset_fetch", {"group": "g", "partitions": [["t", i] for i in range(10_001)]}, "partitions",
     "10001 items", 10000),
]


@pytest.mark.parametrize("kind, fields, field, size, cap", CAPS, ids=[f"{c[0]}.{c[2]}" for c in CAPS])
def test_a_field_over_its_cap_is_refused_naming_the_field_and_the_cap(h, kind, fields, field, size, cap):
    header, _ = h.call(kind, **fields)
    assert header["error"] == INVALID
    assert header["error_message"] == f"field '{field}' has {size}, over the cap of {cap}"


def test_a_produce_over_the_batch_cap_is_refused(h):
    frames = [batch(1)] * (10_001)
    header, _ = h.call("produce", *frames, batches=[tp(0)] * len(frames))
    assert header["error"] == INVALID and "over the cap of 10000" in header["error_message"]
    assert h.call("list_offsets", partitions=[tp(0, timestamp=-1)])[0]["partitions"][0]["offset"] == 0  # nothing appended


def test_a_fetch_answer_is_capped_by_fetch_max_bytes(tmp_path):
    harness = Harness(tmp_path / "d")
    cfg = harness.cfg
    harness.broker.close()
    cfg = dataclasses.replace(cfg, settings={**cfg.settings, "fetch_max_bytes": 4096})
    harness.broker = type(harness.broker)(cfg, 1, harness.now)
    try:
        assert harness.call("create_topic", topic="t", partitions=1)[0]["error"] == 0
        one = batch(200)
        for _ in range(10):
            assert harness.call("produce", one, batches=[tp(0)])[0]["results"][0]["error"] == 0
        header, (data,) = harness.call("fetch", max_bytes=1 << 40, partitions=[tp(0, offset=0, max_bytes=1 << 40)])
        assert header["error"] == 0
        assert len(one) < 4096 and len(data) <= 4096 + len(one)
        assert len(data) < 10 * len(one)
    finally:
        harness.broker.close()


# -- echoes are bounded -------------------------------------------------------------------------


def bounded(reply, limit=2048):
    return len(P.encode(reply)) <= limit


def test_a_huge_unknown_type_is_not_echoed(h, caplog):
    """A 5 MB type string once came back as a 10 MB reply and a 50 MB log line."""
    huge = "y" * 5_000_000
    with caplog.at_level(logging.WARNING):
        header, _ = h.call(huge)
    assert header["error"] == INVALID and header["type"] == "error"
    assert "(5000000 chars)" in header["error_message"]
    assert bounded(header)
    assert caplog.records and all(len(r.getMessage()) < 2048 for r in caplog.records)


def test_a_huge_version_is_not_echoed(h):
    h.broker.handle(PEER, [msgpack.packb({"v": "1" * 1_000_000, "type": "metadata", "cid": 3})], h.now)
    ((header, _),) = h.replies()
    assert header["error"] == ErrorCode.UNSUPPORTED_VERSION and bounded(header)


def test_an_error_message_quoting_a_huge_value_is_cut(h):
    header, _ = h.call("create_topic", topic="u", config={"retention_ms": "z" * 1_000_000})
    assert header["error"] == ErrorCode.INVALID_CONFIG and bounded(header)


@pytest.mark.parametrize("client_id", ["c" * 256, 5, ["a"]])
def test_a_bad_client_id_is_refused(h, client_id):
    header, _ = h.call("metadata", client_id=client_id)
    assert header["error"] == INVALID and "'client_id'" in header["error_message"] and bounded(header)


def test_malformed_frames_are_logged_at_most_ten_times_per_window(h, caplog):
    with caplog.at_level(logging.WARNING, logger="zbroker.frontends.native.router"):
        for i in range(100):
            h.broker.handle(PEER, [b"\xc1 not msgpack"], h.now)
            h.send("no_such_type", i)
        h.replies()
        assert len(caplog.records) == 20  # 10 undecodable + 10 bad requests
        h.broker.handle(PEER, [b"\xc1"], h.now + 10_000)
    assert "suppressed 90 similar messages (kind=undecodable)" in caplog.records[-2].getMessage()
