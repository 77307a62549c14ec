"""Kafka RecordBatch v2 (magic 2) stored by a real broker and read back by clients.Consumer."""

from __future__ import annotations

import time

import pytest

from clients import Consumer, Producer
from storage.batch import build_kafka_batch, build_native_batch
from storage.compression import COMPRESSION_BY_NAME
from support import RawClient

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000_000


def kafka_records(n: int, start: int = 0) -> list[tuple]:
    """Null keys and values, headers with a null value and a repeated key, a negative delta."""
    out = []
    for i in range(start, start + n):
        ts = T0 + i * 10 - (15 if i % 4 == 3 else 0)
        key = None if i % 5 == 0 else b"key-%d" % i
        value = None if i % 7 == 6 else b"value-%d " % i * 8
        headers = [("n", b"%d" % i), ("nil", None), ("n", b"last-%d" % i)] if i % 2 else None
        out.append((ts, key, value, headers))
    return out


def expected(recs: list[tuple], base: int) -> list[tuple]:
    return [(base + i, ts, k, v, dict(h or ())) for i, (ts, k, v, h) in enumerate(recs)]


def produce(raw: RawClient, topic: str, batch: bytes) -> int:
    header, _ = raw.call("produce", (batch,), acks=1, batches=[{"topic": topic, "partition": 0}])
    assert header["error"] == 0, header
    result = header["results"][0]
    assert result["error"] == 0, result
    return result["base_offset"]


def create(raw: RawClient, topic: str) -> None:
    header, _ = raw.call("create_topic", topic=topic, partitions=1, config={})
    assert header["error"] == 0, header


def consume(broker, topic: str, n: int, timeout: float = 20.0) -> list[tuple]:
    out = []
    with Consumer(topic, bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            out.extend(c.poll(timeout_ms=200))
    assert all(r.topic == topic and r.partition == 0 for r in out)
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in out]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kafka_batch_produced_natively_reads_back_with_consumer(broker, raw, codec):
    create(raw, "kv2")
    first, second = kafka_records(30), kafka_records(20, start=30)
    assert produce(raw, "kv2", build_kafka_batch(first, compression=COMPRESSION_BY_NAME[codec])) == 0
    assert produce(raw, "kv2", build_kafka_batch(second, compression=COMPRESSION_BY_NAME[codec])) == 30
    assert consume(broker, "kv2", 50) == expected(first + second, 0)


def test_native_and_kafka_batches_interleaved_read_in_order(broker, raw):
    create(raw, "mixed")
    sent = []
    for i, (build, codec) in enumerate([
        (build_native_batch, "none"), (build_kafka_batch, "snappy"), (build_native_batch, "zstd"),
        (build_kafka_batch, "none"), (build_kafka_batch, "lz4"), (build_native_batch, "gzip"),
    ]):
        recs = kafka_records(7, start=7 * i)
        if build is build_native_batch:  # native headers are a map str -> bytes
            recs = [(ts, k, v, dict(h or ())) for ts, k, v, h in recs]
            recs = [(ts, k, v, {hk: hv for hk, hv in h.items() if hv is not None}) for ts, k, v, h in recs]
        assert produce(raw, "mixed", build(recs, compression=COMPRESSION_BY_NAME[codec])) == len(sent)
        sent.extend(recs)
    with Producer(bootstrap=broker.bootstrap, compression="snappy", linger_ms=0) as p:
        p.send("mixed", value=b"from the producer", key=b"p", timestamp_ms=T0).result(10)
    sent.append((T0, b"p", b"from the producer", None))
    assert consume(broker, "mixed", len(sent)) == expected(sent, 0)
