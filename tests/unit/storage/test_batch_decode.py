"""Native batch encode/decode: round trips, compression, skipping, corruption.

Moved from tests/unit/clients/test_records.py with the codec (clients/records.py became
storage.batch): the storage codec raises CorruptBatchError where the client codec raised
CorruptMessageError (the consumer still raises that: tests/unit/clients/test_fetch_decode.py).
"""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.structs import Record
from storage.batch import (
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_ZSTD,
    HEADER_SIZE,
    MAGIC_NATIVE,
    build_native_batch,
    set_base_offset,
    walk,
)
from storage.decode import decode_batches as _decode_batches
from storage.errors import CorruptBatchError


def build_batch(records, compression=COMPRESSION_NONE):
    """The producer's layout: base_timestamp is the first record's (later deltas may be negative)."""
    return build_native_batch(records, base_timestamp=records[0][0], compression=compression)


def decode_batches(buf, topic, partition, min_offset):
    return _decode_batches(buf, topic, partition, min_offset, record_type=Record)


RECS = [
    (1700000000000, b"k1", b"v1", {"h": b"x"}),
    (1700000000005, None, b"v2", None),
    (1699999999990, b"k3", None, {}),
    (1700000000007, b"", b"", {"a": b"", "b": b"\x00\xff"}),
]


def _expected(base_offset, topic="t", partition=0):
    return [
        Record(topic, partition, base_offset + i, ts, k, v, h or {}) for i, (ts, k, v, h) in enumerate(RECS)
    ]


@pytest.mark.parametrize("codec", [COMPRESSION_NONE, COMPRESSION_ZSTD, COMPRESSION_LZ4])
def test_round_trip(codec):
    batch = build_batch(RECS, codec)
    assert decode_batches(set_base_offset(batch, 10), "t", 0, 0) == _expected(10)


def test_header_layout_matches_protocol():
    batch = build_batch(RECS)
    (base, length, leader_epoch, magic, crc, attrs, lod, base_ts, max_ts, pid, pep, bseq, count) = struct.unpack_from(
        ">qiibIhiqqqhii", batch
    )
    assert (base, leader_epoch, magic, attrs) == (0, -1, MAGIC_NATIVE, 0)
    assert length == len(batch) - 12
    assert crc == crc32c(batch[21:])
    assert (lod, count) == (3, 4)
    assert base_ts == 1700000000000 and max_ts == 1700000000007
    assert (pid, pep, bseq) == (-1, -1, -1)
    assert len(batch) > HEADER_SIZE


def test_concatenated_batches_and_skip_below_offset():
    b1 = set_base_offset(build_batch(RECS), 0)
    b2 = set_base_offset(build_batch(RECS, COMPRESSION_ZSTD), 4)
    buf = b1 + b2
    assert decode_batches(buf, "t", 0, 0) == _expected(0) + _expected(4)
    got = decode_batches(buf, "t", 0, 6)
    assert [r.offset for r in got] == [6, 7]
    assert decode_batches(buf, "t", 0, 100) == []
    assert walk(buf) == (8, len(buf))


def test_trailing_partial_batch_ignored():
    b1 = set_base_offset(build_batch(RECS), 0)
    b2 = set_base_offset(build_batch(RECS), 4)
    for cut in (1, HEADER_SIZE - 1, HEADER_SIZE + 3, len(b2) - 1):
        buf = b1 + b2[:cut]
        assert [r.offset for r in decode_batches(buf, "t", 0, 0)] == [0, 1, 2, 3]
        assert walk(buf) == (4, len(b1))


def test_crc_mismatch_raises():
    batch = bytearray(build_batch(RECS))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="CRC"):
        decode_batches(bytes(batch), "t", 0, 0)


def test_base_offset_and_leader_epoch_not_covered_by_crc():
    batch = bytearray(set_base_offset(build_batch(RECS), 99))
    batch[12:16] = struct.pack(">i", 7)  # broker writes its leader epoch
    assert decode_batches(bytes(batch), "t", 0, 0)[0].offset == 99


def test_wrong_record_count_raises():
    batch = bytearray(build_batch(RECS))
    batch[57:61] = struct.pack(">i", 5)
    batch[17:21] = struct.pack(">I", crc32c(bytes(batch[21:])))
    with pytest.raises(CorruptBatchError, match="records"):
        decode_batches(bytes(batch), "t", 0, 0)


def test_bad_length_raises():
    batch = bytearray(build_batch(RECS))
    batch[8:12] = struct.pack(">i", 3)
    with pytest.raises(CorruptBatchError):
        decode_batches(bytes(batch), "t", 0, 0)


def test_gc_state_restored():
    import gc

    assert gc.isenabled()
    decode_batches(build_batch(RECS), "t", 0, 0)
    assert gc.isenabled()
    batch = bytearray(build_batch(RECS))
    batch[-1] ^= 1
    with pytest.raises(CorruptBatchError):
        decode_batches(bytes(batch), "t", 0, 0)
    assert gc.isenabled()


_bytes = st.one_of(st.none(), st.binary(max_size=40))
_headers = st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.binary(max_size=5), max_size=3))


@settings(max_examples=60, deadline=None)
@given(
    recs=st.lists(st.tuples(st.integers(0, 2**41), _bytes, _bytes, _headers), min_size=1, max_size=30),
    base=st.integers(0, 2**40),
    codec=st.sampled_from([COMPRESSION_NONE, COMPRESSION_ZSTD, COMPRESSION_LZ4]),
    skip=st.integers(0, 35),
)
def test_round_trip_property(recs, base, codec, skip):
    batch = set_base_offset(build_batch(recs, codec), base)
    got = decode_batches(batch, "x", 3, base + skip)
    want = [Record("x", 3, base + i, ts, k, v, h or {}) for i, (ts, k, v, h) in enumerate(recs)][skip:]
    assert got == want
