"""The one record-batch codec: both magic values, every compression codec, malformed input."""

from __future__ import annotations

import gzip
import struct

import cramjam
import msgpack
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.batch import (
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_SNAPPY, COMPRESSION_ZSTD,
    CONTROL_BIT, HEADER_SIZE, MAGIC_KAFKA, MAGIC_NATIVE, TIMESTAMP_TYPE_BIT, build_kafka_batch,
    build_native_batch, encode_native_batch, set_base_offset, validate_batch, walk,
)
from storage.decode import decode_batches
from storage.compression import XERIAL_MAGIC, compress, decompress
from storage.errors import CorruptBatchError
from storage.records import decode_kafka, encode_kafka

CODECS = [COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD]

RECS = [
    (1_700_000_000_000, b"k1", b"v1", {"h": b"x", "trace": b"\x00\x01"}),
    (1_700_000_000_005, None, b"v2", None),
    (1_699_999_999_990, b"k3", None, {}),  # earlier than the first: a negative delta
    (1_700_000_000_007, b"", b"", {"a": b""}),
]


def _want(base, recs=RECS, topic="t", partition=0):
    return [(topic, partition, base + i, ts, k, v, h or {}) for i, (ts, k, v, h) in enumerate(recs)]


def _refresh_crc(buf: bytearray) -> None:
    struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:])))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("build", [build_native_batch, build_kafka_batch])
def test_round_trip_every_codec(build, codec):
    batch = build(RECS, base_offset=40, compression=codec)
    h = validate_batch(batch)
    assert (h.magic, h.compression) == (MAGIC_NATIVE if build is build_native_batch else MAGIC_KAFKA, codec)
    assert decode_batches(batch, "t", 0) == _want(40)
    assert decode_batches(batch, "t", 0, min_offset=42) == _want(40)[2:]
    assert walk(batch) == (44, len(batch))


def test_magics_interleaved_in_one_buffer():
    parts = [build_native_batch(RECS, base_offset=0), build_kafka_batch(RECS, base_offset=4, compression=COMPRESSION_SNAPPY),
             build_native_batch(RECS, base_offset=8, compression=COMPRESSION_ZSTD), build_kafka_batch(RECS, base_offset=12)]
    assert decode_batches(b"".join(parts), "t", 0) == _want(0) + _want(4) + _want(8) + _want(12)


def test_native_producer_layout_is_header_plus_msgpack():
    """The wire layout of what the producer sends, written out (no compression)."""
    recs = [(0, b"k", b"v", None), (3, None, b"w", {"h": b"x"})]
    batch = encode_native_batch(recs, 1000, 1003, COMPRESSION_NONE, 9, 1, 5)
    payload = msgpack.packb(recs, use_bin_type=True)
    tail = struct.pack(">hiqqqhii", 0, 1, 1000, 1003, 9, 1, 5, 2)
    want = struct.pack(">qiib", 0, 49 + len(payload), -1, 122) + struct.pack(">I", crc32c(tail + payload)) + tail + payload
    assert batch == want


# -- Kafka v2 records -------------------------------------------------------------------------

_maybe_bytes = st.one_of(st.none(), st.binary(max_size=300))
_headers = st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20))), max_size=4)


@settings(max_examples=150, deadline=None)
@given(recs=st.lists(st.tuples(st.integers(-2**40, 2**40), _maybe_bytes, _maybe_bytes, _headers), min_size=1, max_size=20))
def test_kafka_records_round_trip_property(recs):
    got = decode_kafka(encode_kafka(recs), len(recs))
    assert got == [(i, d, k, v, dict(h)) for i, (d, k, v, h) in enumerate(recs)]


@settings(max_examples=60, deadline=None)
@given(
    recs=st.lists(st.tuples(st.integers(0, 2**41), _maybe_bytes, _maybe_bytes,
                            st.dictionaries(st.text(max_size=5), st.binary(max_size=5), max_size=3)),
                  min_size=1, max_size=20),
    base=st.integers(0, 2**40),
    codec=st.sampled_from(CODECS),
)
def test_kafka_batch_round_trip_property(recs, base, codec):
    batch = build_kafka_batch(recs, base_offset=base, compression=codec)
    assert decode_batches(batch, "x", 3) == _want(base, recs, "x", 3)


def test_repeated_header_key_last_wins():
    batch = build_kafka_batch([(5, b"k", b"v", [("a", b"1"), ("b", None), ("a", b"2")])])
    assert decode_batches(batch, "t", 0)[0][6] == {"a": b"2", "b": None}


# A RecordBatch v2 written out from the Kafka protocol guide, not by our encoder: three records,
# base offset 100, base timestamp 1700000000000.
FIXED_RECORDS = bytes.fromhex(
    # record 0: length 16 (zigzag 0x20), attributes 0, ts delta 0, offset delta 0,
    #           key "k" (len 1 -> 0x02), value "hello" (len 5 -> 0x0a), 1 header h="x"
    "20" "00" "00" "00" "02" "6b" "0a" "68656c6c6f" "02" "02" "68" "02" "78"
    # record 1: length 7 (0x0e), attrs 0, ts delta +300 (zigzag 600 = varint d8 04),
    #           offset delta 1 (0x02), null key (-1 -> 0x01), empty value (0x00), 0 headers
    "0e" "00" "d804" "02" "01" "00" "00"
    # record 2: length 14 (0x1c), attrs 0, ts delta -2 (0x03), offset delta 2 (0x04), key "k",
    #           null value, 2 headers: a=null (value length -1 -> 0x01), a="z" (repeated key)
    "1c" "00" "03" "04" "02" "6b" "01" "04" "02" "61" "01" "02" "61" "02" "7a"
)


def _fixed_batch(records: bytes = FIXED_RECORDS, attributes: int = 0, count: int = 3) -> bytes:
    tail = struct.pack(
        ">hiqqqhii",
        attributes,            # attributes: compression in bits 0-2
        2,                     # last_offset_delta
        1_700_000_000_000,     # base_timestamp
        1_700_000_000_300,     # max_timestamp
        -1, -1, -1,            # producer_id, producer_epoch, base_sequence
        count,                 # record_count
    )
    body = tail + records
    # base_offset, batch_length (bytes after this field), partition_leader_epoch, magic 2, crc
    return struct.pack(">qiibI", 100, 4 + 1 + 4 + len(body), 0, 2, crc32c(body)) + body


FIXED_WANT = [
    ("t", 0, 100, 1_700_000_000_000, b"k", b"hello", {"h": b"x"}),
    ("t", 0, 101, 1_700_000_000_300, None, b"", {}),
    ("t", 0, 102, 1_699_999_999_998, b"k", None, {"a": b"z"}),
]


def test_fixed_kafka_batch_from_the_spec():
    batch = _fixed_batch()
    assert validate_batch(batch).magic == MAGIC_KAFKA
    assert decode_batches(batch, "t", 0) == FIXED_WANT
    assert decode_batches(batch, "t", 0, min_offset=101) == FIXED_WANT[1:]
    # our encoder writes the same records byte for byte (headers as pairs, to keep the repeat)
    ours = encode_kafka([(0, b"k", b"hello", {"h": b"x"}), (300, None, b"", None), (-2, b"k", None, [("a", None), ("a", b"z")])])
    assert ours == FIXED_RECORDS


def test_log_append_time_gives_every_record_max_timestamp():
    batch = _fixed_batch(attributes=TIMESTAMP_TYPE_BIT)
    assert [r[3] for r in decode_batches(batch, "t", 0)] == [1_700_000_000_300] * 3


def test_control_batches_are_skipped():
    control = _fixed_batch(attributes=CONTROL_BIT)
    after = build_native_batch(RECS, base_offset=103)
    assert decode_batches(control + after, "t", 0) == _want(103)


# -- snappy framing -------------------------------------------------------------------------


def _xerial(*blocks: bytes) -> bytes:
    """xerial framing by hand: magic, version 1, compatible version 1, then length-prefixed blocks."""
    out = b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x01"
    for b in blocks:
        raw = bytes(cramjam.snappy.compress_raw(b))
        out += struct.pack(">i", len(raw)) + raw
    return out


def test_snappy_xerial_and_raw_both_decode():
    data = b"".join(b"record %d " % i for i in range(5000))
    assert decompress(COMPRESSION_SNAPPY, _xerial(data[:1000], data[1000:])) == data
    assert decompress(COMPRESSION_SNAPPY, bytes(cramjam.snappy.compress_raw(data))) == data
    assert decompress(COMPRESSION_SNAPPY, _xerial()) == b""


def test_snappy_batches_in_either_framing_decode():
    for payload in (_xerial(FIXED_RECORDS), bytes(cramjam.snappy.compress_raw(FIXED_RECORDS))):
        assert decode_batches(_fixed_batch(payload, attributes=COMPRESSION_SNAPPY), "t", 0) == FIXED_WANT


def test_snappy_written_as_xerial_in_32k_blocks():
    data = bytes(range(256)) * 300  # 76800 bytes: three blocks
    out = compress(COMPRESSION_SNAPPY, data)
    assert out[:16] == XERIAL_MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x01"
    pos, blocks = 16, []
    while pos < len(out):
        (n,) = struct.unpack_from(">i", out, pos)
        blocks.append(bytes(cramjam.snappy.decompress_raw(out[pos + 4 : pos + 4 + n])))
        pos += 4 + n
    assert [len(b) for b in blocks] == [32768, 32768, 11264] and b"".join(blocks) == data


def test_lz4_kafka_frames_have_independent_blocks():
    big = [(1, None, bytes(range(256)) * 1000, None)] * 3  # several 64 KiB blocks
    flg = lambda batch: batch[HEADER_SIZE + 4]  # noqa: E731 - frame magic is 4 bytes, then FLG
    kafka = build_kafka_batch(big, compression=COMPRESSION_LZ4)
    assert kafka[HEADER_SIZE:HEADER_SIZE + 4] == b"\x04\x22\x4d\x18"
    assert flg(kafka) & 0x20
    native = build_native_batch(big, compression=COMPRESSION_LZ4)
    assert not flg(native) & 0x20  # linked blocks, as native producers always wrote
    assert [r[5] for r in decode_batches(kafka, "t", 0)] == [r[5] for r in decode_batches(native, "t", 0)] == [big[0][2]] * 3


def test_gzip_is_a_deterministic_gzip_stream():
    assert gzip.decompress(compress(COMPRESSION_GZIP, b"abc" * 100)) == b"abc" * 100
    assert compress(COMPRESSION_GZIP, b"xyz") == compress(COMPRESSION_GZIP, b"xyz")


# -- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize("build", [build_native_batch, build_kafka_batch])
def test_crc_mismatch_detected(build):
    batch = bytearray(build(RECS, base_offset=7))
    batch[-1] ^= 0x01
    with pytest.raises(CorruptBatchError, match=r"t-0: batch at offset 7: CRC mismatch") as info:
        decode_batches(bytes(batch), "t", 0)
    assert info.value.offset == 7
    with pytest.raises(CorruptBatchError, match="bad crc"):
        validate_batch(batch)


def test_unknown_magic_and_codec_named():
    batch = bytearray(build_kafka_batch(RECS, base_offset=3))
    batch[16] = 1
    with pytest.raises(CorruptBatchError, match="t-5: batch at offset 3: unknown magic 1"):
        decode_batches(bytes(batch), "t", 5)
    batch = bytearray(build_kafka_batch(RECS, base_offset=3))
    struct.pack_into(">h", batch, 21, 5)
    _refresh_crc(batch)
    with pytest.raises(CorruptBatchError, match="unknown compression codec 5"):
        decode_batches(bytes(batch), "t", 0)


def test_kafka_count_mismatch():
    with pytest.raises(CorruptBatchError, match="after the last of 2 records"):
        decode_batches(_fixed_batch(count=2), "t", 0)
    with pytest.raises(CorruptBatchError, match="truncated varint"):
        decode_batches(_fixed_batch(count=4), "t", 0)


def _cut_payload(batch: bytes, keep: int) -> bytes:
    """The batch with its payload cut to ``keep`` bytes and the length and CRC made consistent."""
    buf = bytearray(batch[: HEADER_SIZE + keep])
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    _refresh_crc(buf)
    return bytes(buf)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("build", [build_native_batch, build_kafka_batch])
def test_truncated_payload_raises_codec_error(build, codec):
    batch = build(RECS, compression=codec)
    for keep in range(len(batch) - HEADER_SIZE):
        with pytest.raises(CorruptBatchError):
            decode_batches(_cut_payload(batch, keep), "t", 0)


def test_truncated_kafka_records_never_index_error():
    for keep in range(len(FIXED_RECORDS)):
        with pytest.raises(CorruptBatchError):
            decode_kafka(FIXED_RECORDS[:keep], 3)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), count=st.integers(0, 5))
def test_kafka_records_garbage_raises_only_codec_error(data, count):
    try:
        decode_kafka(data, count)
    except CorruptBatchError:
        pass


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(HEADER_SIZE, 10_000), byte=st.integers(0, 255), build=st.sampled_from([build_native_batch, build_kafka_batch]),
       codec=st.sampled_from(CODECS))
def test_damaged_payload_raises_only_codec_error(pos, byte, build, codec):
    batch = bytearray(build(RECS, compression=codec))
    batch[pos % len(batch) if pos % len(batch) >= HEADER_SIZE else HEADER_SIZE] = byte
    try:
        decode_batches(set_base_offset(bytes(batch), 0), "t", 0, verify_crc=False)
    except CorruptBatchError:
        pass
