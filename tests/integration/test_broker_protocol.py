"""The broker's wire protocol, spoken raw against a real broker process."""

from __future__ import annotations

import msgpack
import pytest

from storage.batch import build_native_batch, decode_native_records, iter_batches
from support import RawClient

pytestmark = pytest.mark.timeout(60)


def records(n: int, start: int = 0, ts: int = 1_700_000_000_000):
    return [(ts + i, f"k{start + i}".encode(), f"v{start + i}".encode(), {"h": b"x"}) for i in range(n)]


def create(raw: RawClient, topic: str, partitions: int = 1, **config) -> None:
    header, _ = raw.call("create_topic", topic=topic, partitions=partitions, config=config)
    assert header["error"] == 0, header


def produce(raw: RawClient, topic: str, partition: int, batch: bytes, acks: int = 1) -> dict:
    header, _ = raw.call("produce", (batch,), acks=acks, batches=[{"topic": topic, "partition": partition}])
    assert header["error"] == 0, header
    return header["results"][0]


def fetch(raw: RawClient, topic: str, partition: int, offset: int, **kw) -> tuple[dict, bytes]:
    header, frames = raw.call(
        "fetch", max_wait_ms=kw.pop("max_wait_ms", 0), partitions=[{"topic": topic, "partition": partition, "offset": offset, **kw}]
    )
    assert header["error"] == 0, header
    return header["partitions"][0], frames[0]


def decoded(data: bytes) -> list[tuple]:
    out = []
    for pos, h in iter_batches(data):
        out.extend(decode_native_records(data[pos : pos + h.size]))
    return out


def test_produce_then_fetch_returns_the_stored_records_at_their_offsets(raw):
    create(raw, "t")
    first = produce(raw, "t", 0, build_native_batch(records(3)))
    second = produce(raw, "t", 0, build_native_batch(records(2, start=3)))
    assert (first["error"], first["base_offset"]) == (0, 0)
    assert second["base_offset"] == 3

    entry, data = fetch(raw, "t", 0, 0)
    assert entry["error"] == 0 and entry["high_watermark"] == 5 and entry["log_start_offset"] == 0
    got = decoded(data)
    assert [(r[0], r[2], r[3]) for r in got] == [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(5)]
    assert got[0][4] == {"h": b"x"}


def test_fetch_from_inside_a_batch_returns_the_whole_batch(raw):
    create(raw, "t")
    produce(raw, "t", 0, build_native_batch(records(4)))
    _, data = fetch(raw, "t", 0, 2)
    assert [r[0] for r in decoded(data)] == [0, 1, 2, 3]  # the client skips offsets 0 and 1


def test_fetch_returns_one_whole_batch_even_above_max_bytes(raw):
    create(raw, "t")
    produce(raw, "t", 0, build_native_batch(records(50)))
    entry, data = fetch(raw, "t", 0, 0, max_bytes=10)
    assert len(decoded(data)) == 50


def test_acks_zero_gets_no_response_but_is_stored(raw):
    create(raw, "t")
    raw.send({"type": "produce", "acks": 0, "batches": [{"topic": "t", "partition": 0}]}, build_native_batch(records(2)))
    entry, data = fetch(raw, "t", 0, 0)  # the next reply is the fetch's, not a produce ack
    assert len(decoded(data)) == 2


def test_long_poll_fetch_is_woken_by_an_append(broker, raw):
    create(raw, "t")
    cid = raw.send({"type": "fetch", "max_wait_ms": 60_000, "partitions": [{"topic": "t", "partition": 0, "offset": 0}]})
    with pytest.raises(TimeoutError):
        raw.recv(timeout=0.3)  # parked: nothing to return yet
    other = RawClient(broker.bootstrap)
    try:
        produce(other, "t", 0, build_native_batch(records(1)))
    finally:
        other.close()
    header, frames = raw.recv(timeout=10)  # far below max_wait_ms: the append woke it
    assert header["cid"] == cid and len(decoded(frames[0])) == 1


def test_long_poll_expires_with_an_empty_answer(raw):
    create(raw, "t")
    entry, data = fetch(raw, "t", 0, 0, max_wait_ms=50)
    assert entry["error"] == 0 and data == b""


def test_unknown_topic_and_partition(raw):
    create(raw, "t")
    header, _ = raw.call("produce", (build_native_batch(records(1)),), batches=[{"topic": "t", "partition": 7}])
    assert header["results"][0]["error"] == 3
    entry, _ = fetch(raw, "nope", 0, 0)
    assert entry["error"] == 3


def test_offset_out_of_range(raw):
    create(raw, "t")
    produce(raw, "t", 0, build_native_batch(records(2)))
    entry, data = fetch(raw, "t", 0, 3)
    assert entry["error"] == 1 and data == b""
    entry, data = fetch(raw, "t", 0, 2)  # the log end itself is a valid, empty position
    assert entry["error"] == 0 and data == b""


def test_list_offsets_earliest_latest_and_by_time(raw):
    create(raw, "t")
    produce(raw, "t", 0, build_native_batch(records(3, ts=1000)))
    produce(raw, "t", 0, build_native_batch(records(3, start=3, ts=5000)))
    header, _ = raw.call(
        "list_offsets",
        partitions=[{"topic": "t", "partition": 0, "timestamp": ts} for ts in (-2, -1, 4000, 5001, 9999)],
    )
    assert [p["offset"] for p in header["partitions"]] == [0, 6, 3, 4, -1]


def test_corrupt_batch_is_refused_and_the_broker_keeps_serving(raw):
    create(raw, "t")
    bad = bytearray(build_native_batch(records(2)))
    bad[-1] ^= 0xFF
    header, _ = raw.call("produce", (bytes(bad),), batches=[{"topic": "t", "partition": 0}])
    result = header["results"][0]
    assert result["error"] == 2 and "crc" in result["error_message"].lower()
    assert produce(raw, "t", 0, build_native_batch(records(1)))["base_offset"] == 0


def test_oversized_batch_is_message_too_large(raw):
    create(raw, "t", max_message_bytes=1000)
    big = build_native_batch([(1, None, b"x" * 2000, None)])
    header, _ = raw.call("produce", (big,), batches=[{"topic": "t", "partition": 0}])
    assert header["results"][0]["error"] == 10
    assert "max_message_bytes" in header["results"][0]["error_message"]


@pytest.mark.parametrize(
    "header, code, words",
    [
        ({"type": "no_such_type"}, 42, "unknown request type"),
        ({"type": "fetch", "partitions": [{"topic": "t", "partition": "0", "offset": 0}]}, 42, "partitions[0].partition"),
        ({"type": "fetch"}, 42, "missing field 'partitions'"),
        ({"type": "metadata", "v": 9}, 35, "version"),
        ({"type": "produce", "batches": [{"topic": "t", "partition": 0}]}, 42, "payload frames"),
        ({"type": "produce", "acks": 3, "batches": []}, 21, "acks"),
        ({"type": "create_topic", "topic": "bad name!"}, 17, "topic name"),
        ({"type": "create_topic", "topic": "x", "config": {"retention_ms": "soon"}}, 40, "retention_ms"),
        ({"type": "create_topic", "topic": "x", "config": {"no_such_key": 1}}, 40, "no_such_key"),
        ({"type": "create_topic", "topic": "x", "partitions": 0}, 37, "partitions"),
    ],
)
def test_bad_requests_get_an_error_naming_the_problem(raw, header, code, words):
    reply, _ = raw.call(header.pop("type"), **header)
    assert reply["error"] == code, reply
    assert words in reply["error_message"]
    assert raw.call("metadata")[0]["error"] == 0  # still serving


def test_garbage_without_a_correlation_id_is_dropped(raw):
    for junk in (b"\xc1\xc1garbage", msgpack.packb([1, 2, 3]), msgpack.packb({"type": "metadata"}), b""):
        raw.send(junk)
    raw.sock.send(b"")  # a lone empty frame
    header, _ = raw.call("metadata")  # the next reply belongs to this request
    assert header["error"] == 0


def test_topic_lifecycle(raw):
    create(raw, "orders", partitions=4, retention_ms=1000)
    header, _ = raw.call("create_topic", topic="orders")
    assert header["error"] == 36
    meta, _ = raw.call("metadata")
    (topic,) = [t for t in meta["topics"] if t["topic"] == "orders"]
    assert [p["partition"] for p in topic["partitions"]] == [0, 1, 2, 3]
    desc, _ = raw.call("describe_topic", topic="orders")
    assert desc["config"]["retention_ms"] == 1000 and desc["overrides"] == ["retention_ms"]
    assert desc["config"]["segment_bytes"] == 1073741824
    assert raw.call("alter_topic_config", topic="orders", config={"retention_ms": None, "segment_ms": 60000})[0]["error"] == 0
    desc, _ = raw.call("describe_topic", topic="orders")
    assert desc["overrides"] == ["segment_ms"] and desc["config"]["retention_ms"] == 604800000
    assert raw.call("delete_topic", topic="orders")[0]["error"] == 0
    assert raw.call("describe_topic", topic="orders")[0]["error"] == 3


def test_topics_and_data_survive_a_clean_restart(broker, raw):
    create(raw, "keep", partitions=2)
    produce(raw, "keep", 1, build_native_batch(records(5)))
    assert broker.stop() == 0
    broker.start()
    client = RawClient(broker.bootstrap)
    try:
        entry, data = fetch(client, "keep", 1, 0)
        assert entry["high_watermark"] == 5 and len(decoded(data)) == 5
    finally:
        client.close()


def test_auto_create_on_metadata_when_asked(raw):
    header, _ = raw.call("metadata", topics=["fresh"], allow_auto_create=True)
    assert header["topics"][0]["error"] == 0 and len(header["topics"][0]["partitions"]) == 3
    header, _ = raw.call("metadata", topics=["other"])
    assert header["topics"][0]["error"] == 3


def test_sigterm_exits_cleanly(broker):
    assert broker.stop() == 0
    assert "closed cleanly" in broker.log_text()
