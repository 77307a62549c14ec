"""Record batch build / validate / decode / patch round trips and rejections."""

import struct

import pytest

from storage.batch import (
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_SNAPPY, COMPRESSION_ZSTD,
    HEADER_SIZE, MAGIC_NATIVE, build_native_batch, decode_native_records, iter_batches,
    parse_header, patch_batch, validate_batch,
)
from storage.errors import CorruptBatchError

pytestmark = pytest.mark.timeout(60)

RECORDS = [
    (1000, b"k1", b"v1", {"h": b"x", "trace": b"\x00\x01"}),
    (999, None, b"value-with-null-key", None),
    (1005, b"tombstone", None, {}),
    (1003, b"", b"", None),
]


@pytest.mark.parametrize("codec", [COMPRESSION_NONE, COMPRESSION_ZSTD, COMPRESSION_LZ4, COMPRESSION_GZIP,
                                   COMPRESSION_SNAPPY])
def test_round_trip(codec):
    buf = build_native_batch(RECORDS, base_offset=7, compression=codec, producer_id=42,
                             producer_epoch=3, base_sequence=11, leader_epoch=5)
    h = validate_batch(buf)
    assert h.size == len(buf)
    assert (h.base_offset, h.leader_epoch, h.magic, h.compression) == (7, 5, MAGIC_NATIVE, codec)
    assert (h.record_count, h.last_offset_delta, h.last_offset, h.next_offset) == (4, 3, 10, 11)
    assert (h.base_timestamp, h.max_timestamp) == (999, 1005)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (42, 3, 11)
    assert parse_header(buf) == h
    assert decode_native_records(buf) == [
        (7, 1000, b"k1", b"v1", {"h": b"x", "trace": b"\x00\x01"}),
        (8, 999, None, b"value-with-null-key", {}),
        (9, 1005, b"tombstone", None, {}),
        (10, 1003, b"", b"", {}),
    ]


def test_explicit_base_timestamp_and_defaults():
    h = validate_batch(build_native_batch([(50, b"k", b"v", None)], base_timestamp=40))
    assert (h.base_timestamp, h.max_timestamp, h.producer_id, h.producer_epoch, h.base_sequence) == (
        40, 50, -1, -1, -1)
    assert decode_native_records(build_native_batch([(50, b"k", b"v", None)], base_timestamp=40))[0][1] == 50


def test_patch_keeps_crc_valid():
    buf = bytearray(build_native_batch(RECORDS, compression=COMPRESSION_ZSTD))
    patch_batch(buf, 123456789012, 77)
    h = validate_batch(buf)
    assert (h.base_offset, h.leader_epoch) == (123456789012, 77)
    assert [r[0] for r in decode_native_records(buf)] == [123456789012 + i for i in range(4)]
    validate_batch(memoryview(buf))


def test_iter_batches_stops_at_incomplete():
    a = build_native_batch(RECORDS[:1], base_offset=0)
    b = build_native_batch(RECORDS, base_offset=1)
    data = a + b + b[:30]
    got = list(iter_batches(data))
    assert [(p, h.base_offset) for p, h in got] == [(0, 0), (len(a), 1)]
    assert list(iter_batches(data, start=len(a))) == got[1:]
    assert list(iter_batches(a + b[:-1])) == got[:1]


def test_empty_rejected():  # snappy used to be rejected here too: it is a supported codec now
    with pytest.raises(ValueError):
        build_native_batch([])


def _good():
    return bytearray(build_native_batch(RECORDS))


def test_rejects_short():
    with pytest.raises(CorruptBatchError, match="too short"):
        validate_batch(_good()[:HEADER_SIZE - 1])
    with pytest.raises(CorruptBatchError, match="truncated batch header"):
        parse_header(b"\x00" * 10)


def test_rejects_bad_length():
    buf = _good()
    with pytest.raises(CorruptBatchError, match="bad batch length"):
        validate_batch(buf[:-1])
    with pytest.raises(CorruptBatchError, match="bad batch length"):
        validate_batch(buf + b"\x00")
    struct.pack_into(">i", buf, 8, 5)
    with pytest.raises(CorruptBatchError, match="bad batch length"):
        validate_batch(buf)


def test_rejects_bad_crc():
    buf = _good()
    buf[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="bad crc"):
        validate_batch(buf)
    buf = _good()
    buf[17] ^= 0x01  # the crc field itself
    with pytest.raises(CorruptBatchError, match="bad crc"):
        validate_batch(buf)


def test_rejects_bad_magic():
    buf = _good()
    buf[16] = 1
    with pytest.raises(CorruptBatchError, match="bad magic"):
        validate_batch(buf)
    with pytest.raises(CorruptBatchError, match="bad magic"):
        decode_native_records(bytes(buf))


def _refresh_crc(buf):
    import crc32c
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))


def test_rejects_count_mismatch():
    buf = _good()
    struct.pack_into(">i", buf, 57, 9)  # record_count
    _refresh_crc(buf)
    with pytest.raises(CorruptBatchError, match="record count mismatch"):
        validate_batch(buf)
    struct.pack_into(">i", buf, 57, -1)
    _refresh_crc(buf)
    with pytest.raises(CorruptBatchError, match="record count mismatch"):
        validate_batch(buf)


def test_decode_detects_payload_count_mismatch():
    buf = _good()
    struct.pack_into(">i", buf, 57, 5)
    struct.pack_into(">i", buf, 23, 4)
    _refresh_crc(buf)
    validate_batch(buf)
    with pytest.raises(CorruptBatchError, match="record count mismatch"):
        decode_native_records(buf)


def test_rejects_oversized():
    buf = _good()
    validate_batch(buf, max_size=len(buf))
    with pytest.raises(CorruptBatchError, match="too large"):
        validate_batch(buf, max_size=len(buf) - 1)


def test_corrupt_compressed_payload_named():
    buf = bytearray(build_native_batch(RECORDS, compression=COMPRESSION_ZSTD))
    buf[HEADER_SIZE + 2] ^= 0xFF
    _refresh_crc(buf)
    with pytest.raises(CorruptBatchError, match="decompress"):
        decode_native_records(buf)
