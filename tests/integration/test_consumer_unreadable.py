"""A real broker stores batches the consumer cannot read; clients.Consumer returns the good
records before them, then raises naming the offset, and a seek past the batch goes on."""

from __future__ import annotations

import time

import pytest

from clients import Consumer
from storage.batch import COMPRESSION_ZSTD, build_native_batch
from support import RawClient
from tests.unit.clients.clientfakes import reseal
from zbroker.errors import CorruptRecordError, DecompressionLimitExceededError

pytestmark = pytest.mark.timeout(60)


def produce(raw: RawClient, topic: str, batch: bytes) -> int:
    header, _ = raw.call("produce", (batch,), acks=1, batches=[{"topic": topic, "partition": 0}])
    assert header["error"] == 0 and header["results"][0]["error"] == 0, header
    return header["results"][0]["base_offset"]


def records(n: int, tag: bytes) -> list[tuple]:
    return [(1_700_000_000_000 + i, None, tag + b"%d" % i, None) for i in range(n)]


def poll_until_error(consumer: Consumer, timeout: float = 20.0) -> tuple[list, Exception]:
    """Poll until poll() raises; return the records polled before it and the error."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.extend(consumer.poll(timeout_ms=200))
        except CorruptRecordError as exc:
            return got, exc
    raise AssertionError(f"no error within {timeout}s; polled {[r.offset for r in got]}")


def poll_n(consumer: Consumer, n: int, timeout: float = 20.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(consumer.poll(timeout_ms=200))
    return got


def test_good_records_first_then_the_error_then_seek_past_the_batch(broker, raw):
    header, _ = raw.call("create_topic", topic="bad", partitions=1, config={})
    assert header["error"] == 0, header
    assert produce(raw, "bad", build_native_batch(records(3, b"a"))) == 0
    # a msgpack array of the right length (the broker checks that much) whose records are garbage
    garbage = reseal(build_native_batch(records(2, b"x")), b"\x92\xc1\xc1 not msgpack")
    assert produce(raw, "bad", garbage) == 3  # the broker does not decode native payloads
    assert produce(raw, "bad", build_native_batch(records(2, b"b"))) == 5

    with Consumer(bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("bad", 0)])
        got, exc = poll_until_error(c)
        assert [(r.offset, r.value) for r in got] == [(0, b"a0"), (1, b"a1"), (2, b"a2")]
        assert (exc.topic, exc.partition, exc.offset, exc.next_offset) == ("bad", 0, 3, 5)
        assert "bad-0: batch at offset 3" in str(exc)
        assert c.position("bad", 0) == 3
        with pytest.raises(CorruptRecordError, match="batch at offset 3"):
            c.poll(timeout_ms=100)  # the same error again, not a silent skip
        c.seek("bad", 0, exc.next_offset)
        assert [(r.offset, r.value) for r in poll_n(c, 2)] == [(5, b"b0"), (6, b"b1")]


def test_a_decompression_bomb_is_refused_past_fetch_max_bytes(broker, raw):
    header, _ = raw.call("create_topic", topic="bomb", partitions=1, config={})
    assert header["error"] == 0, header
    bomb = build_native_batch([(1_700_000_000_000, None, bytes(256 << 20), None)], compression=COMPRESSION_ZSTD)
    assert len(bomb) < 64 << 10  # 256 MiB of records in a few kilobytes
    assert produce(raw, "bomb", build_native_batch(records(1, b"a"))) == 0
    assert produce(raw, "bomb", bomb) == 1
    with Consumer(bootstrap=broker.bootstrap, auto_offset_reset="earliest", fetch_max_bytes=1 << 20) as c:
        c.assign([("bomb", 0)])
        got, exc = poll_until_error(c)
        assert [r.offset for r in got] == [0]
        assert isinstance(exc, DecompressionLimitExceededError) and (exc.offset, exc.next_offset) == (1, 2)
        assert "fetch_max_bytes" in str(exc)
