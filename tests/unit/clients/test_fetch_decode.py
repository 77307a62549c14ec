"""The consumer's decode step (Fetcher.collect): both magic values, and CorruptMessageError."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from clients.consumer.fetcher import Fetcher
from clients.structs import Record
from storage.batch import COMPRESSION_SNAPPY, COMPRESSION_ZSTD, build_kafka_batch, build_native_batch
from zbroker.errors import CorruptMessageError

TP = ("t", 2)
RECS = [(1000, b"k", b"v", {"h": b"x"}), (1001, None, b"w", None)]


def _fetcher(data: bytes, position: int = 0) -> Fetcher:
    net = SimpleNamespace(wakeup=lambda: None)
    meta = SimpleNamespace(cache=SimpleNamespace(leaders={}), request_update=lambda now=None: None)
    f = Fetcher(net, meta, auto_offset_reset="earliest", fetch_max_wait_ms=10, fetch_min_bytes=1,
                max_partition_fetch_bytes=1 << 20)
    f.set_assignment([TP])
    f.seek(TP, position)
    st = f.states[TP]
    st.buffered += len(data)
    f.buffered_total += len(data)
    f.completed.append((TP, st.epoch, data))
    return f


def test_collect_reads_native_and_kafka_batches():
    data = (build_native_batch(RECS, base_offset=0) + build_kafka_batch(RECS, base_offset=2, compression=COMPRESSION_SNAPPY)
            + build_kafka_batch(RECS, base_offset=4, compression=COMPRESSION_ZSTD))
    got = _fetcher(data, position=1).collect(100)
    assert all(type(r) is Record for r in got)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in got] == [
        (1, 1001, None, b"w", {}),
        (2, 1000, b"k", b"v", {"h": b"x"}), (3, 1001, None, b"w", {}),
        (4, 1000, b"k", b"v", {"h": b"x"}), (5, 1001, None, b"w", {}),
    ]


@pytest.mark.parametrize("damage, match", [
    (lambda b: b.__setitem__(-1, b[-1] ^ 1), "CRC"),
    (lambda b: b.__setitem__(16, 7), "unknown magic 7"),
    (lambda b: struct.pack_into(">i", b, 8, 3), "bad length"),
])
def test_undecodable_batch_is_corrupt_message_naming_topic_partition_offset(damage, match):
    bad = bytearray(build_kafka_batch(RECS, base_offset=12))
    damage(bad)
    with pytest.raises(CorruptMessageError, match=match) as info:
        _fetcher(bytes(bad), position=12).collect(100)
    assert "t-2: batch at offset 12" in str(info.value)
