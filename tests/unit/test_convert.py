"""Native batches (magic 122) served to Kafka consumers as RecordBatch v2 (storage/convert.py).

What comes out is read back with kio 0.6.5's RecordBatch v2 reader, a decoder independent of
storage's (it checks the CRC-32C); kio does not decompress, so a compressed batch has its
header read with kio's primitive readers, its CRC checked here, and its payload decompressed
with storage.compression and parsed with storage.records.decode_kafka.
"""

from __future__ import annotations

import logging

import msgpack
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.records.readers import read_batch
from kio.serial.readers import read_int8, read_int16, read_int32, read_int64, read_uint32

from storage.batch import (
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_SNAPPY, COMPRESSION_ZSTD, CONTROL_BIT,
    HEADER_SIZE, MAGIC_KAFKA, MAGIC_NATIVE, TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT, build_kafka_batch,
    build_native_batch, iter_batches, parse_header,
)
from storage.compression import DecompressionLimitError, decompress
from storage.convert import to_kafka_batch, to_kafka_batches
from storage.decode import decode_batches
from storage.errors import CorruptBatchError
from storage.records import decode_kafka
from tests.unit.batchforge import forge

CODECS = [COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD]
LIMIT = 1 << 20
TS = 1_700_000_000_000

RECS = [
    (TS, b"k1", b"v1", {"h": b"x", "trace": b"\x00\x01", "\u00e9t\u00e9": b""}),
    (TS + 5, None, b"v2", None),
    (TS - 10, b"k3", None, {}),  # earlier than the first: a negative delta (base_timestamp set below)
    (TS + 7, b"", b"", {"a": b""}),
    (TS + 1_500, None, None, {"n": None}),  # a null header value
]
PRODUCER = dict(producer_id=4242, producer_epoch=7, base_sequence=1_000)

# kio's header fields, in wire order, with their readers (RecordBatch v2)
_KIO_HEADER = [("base_offset", read_int64), ("batch_length", read_int32), ("leader_epoch", read_int32),
               ("magic", read_int8), ("crc", read_uint32), ("attributes", read_int16),
               ("last_offset_delta", read_int32), ("base_timestamp", read_int64), ("max_timestamp", read_int64),
               ("producer_id", read_int64), ("producer_epoch", read_int16), ("base_sequence", read_int32),
               ("record_count", read_int32)]
_KEPT = ("base_offset", "leader_epoch", "attributes", "last_offset_delta", "base_timestamp", "max_timestamp",
         "producer_id", "producer_epoch", "base_sequence", "record_count")


def _native(recs=RECS, **kw) -> bytes:
    kw = {"base_offset": 300, "leader_epoch": 9, "base_timestamp": TS, **PRODUCER, **kw}
    return build_native_batch(recs, **kw)


def _kio_header(buf) -> dict:
    """The 61-byte header read with kio's readers; the CRC-32C is checked over attributes..end."""
    out, pos = {}, 0
    for name, read in _KIO_HEADER:
        out[name], size = read(buf, pos)
        pos += size
    assert out["batch_length"] + 12 == len(buf)
    assert out["crc"] == crc32c(bytes(buf[21:]))
    return out


def _check_kafka(out: bytes, native: bytes, recs) -> None:
    """``out`` is the Kafka v2 equivalent of ``native`` (which holds ``recs``, absolute timestamps)."""
    src = parse_header(native)
    head = _kio_header(out)
    assert head["magic"] == MAGIC_KAFKA
    assert {k: head[k] for k in _KEPT} == {k: getattr(src, k) for k in _KEPT}
    codec = src.compression
    payload = decompress(codec, memoryview(out)[HEADER_SIZE:])
    want = [(i, ts - src.base_timestamp, k, v, h or {}) for i, (ts, k, v, h) in enumerate(recs)]
    assert decode_kafka(payload, len(recs)) == want
    if codec == COMPRESSION_NONE:
        batch, size = read_batch(out, 0)  # kio: framing, CRC, every record
        assert size == len(out)
        assert (batch.base_offset, batch.partition_leader_epoch, batch.attributes, batch.producer_id,
                batch.producer_epoch, batch.base_sequence, batch.last_offset_delta, batch.base_timestamp,
                batch.max_timestamp) == (src.base_offset, src.leader_epoch, src.attributes, src.producer_id,
                                         src.producer_epoch, src.base_sequence, src.last_offset_delta,
                                         src.base_timestamp, src.max_timestamp)
        assert len(batch.records) == len(recs)
        for i, (rec, (ts, k, v, h)) in enumerate(zip(batch.records, recs)):
            assert (rec.offset, rec.key, rec.value) == (src.base_offset + i, k, v)
            assert [(x.key, x.value) for x in rec.headers] == [(hk.encode(), hv) for hk, hv in (h or {}).items()]
            assert int(rec.timestamp.timestamp()) == ts // 1000  # kio keeps whole seconds
    # and storage's own reader sees the same records in both
    assert decode_batches(out, "t", 0) == decode_batches(native, "t", 0)


@pytest.mark.parametrize("codec", CODECS)
def test_native_batch_converts_every_codec(codec):
    native = _native(compression=codec)
    out = to_kafka_batch(native, LIMIT)
    assert parse_header(out).compression == codec
    _check_kafka(out, native, RECS)


@pytest.mark.parametrize("codec", CODECS)
def test_memoryview_in_the_middle_of_a_buffer(codec):
    native = _native(compression=codec)
    buf = memoryview(b"xx" + native + b"yy")[2:-2]
    assert to_kafka_batch(buf, LIMIT) == to_kafka_batch(native, LIMIT)


def test_header_bits_are_kept():
    for bits in (TRANSACTIONAL_BIT, TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT | CONTROL_BIT):
        native = forge(_native(compression=COMPRESSION_ZSTD), attributes=COMPRESSION_ZSTD | bits)
        out = to_kafka_batch(native, LIMIT)
        assert _kio_header(out)["attributes"] == COMPRESSION_ZSTD | bits
        assert decode_kafka(decompress(COMPRESSION_ZSTD, out[HEADER_SIZE:]), len(RECS))[1][2:4] == (None, b"v2")


def test_lz4_is_rewritten_with_independent_blocks():
    """Native producers write linked LZ4 blocks, which Kafka's readers refuse (FLG bit 5)."""
    recs = [(TS + i, None, bytes([i % 251]) * 1000, None) for i in range(200)]  # > 64 KiB: several blocks
    native = _native(recs, compression=COMPRESSION_LZ4)
    assert native[HEADER_SIZE + 4] & 0x20 == 0  # linked
    out = to_kafka_batch(native, LIMIT)
    assert out[HEADER_SIZE:HEADER_SIZE + 4] == b"\x04\x22\x4d\x18" and out[HEADER_SIZE + 4] & 0x20
    _check_kafka(out, native, recs)


def test_magic2_batch_is_returned_itself():
    kafka = build_kafka_batch(RECS, compression=COMPRESSION_SNAPPY)
    assert to_kafka_batch(kafka, LIMIT) is kafka


_maybe_bytes = st.none() | st.binary(max_size=40)


@settings(max_examples=120, deadline=None)
@given(
    recs=st.lists(st.tuples(st.integers(0, 2**41), _maybe_bytes, _maybe_bytes,
                            st.none() | st.dictionaries(st.text(max_size=6), _maybe_bytes, max_size=3)),
                  min_size=1, max_size=25),
    base=st.integers(0, 2**40), epoch=st.integers(-1, 2**31 - 1), codec=st.sampled_from(CODECS),
    producer=st.tuples(st.integers(-1, 2**63 - 1), st.integers(-1, 2**15 - 1), st.integers(-1, 2**31 - 1)),
    lowest_base=st.booleans(),
)
def test_random_native_batches_convert_property(recs, base, epoch, codec, producer, lowest_base):
    pid, pepoch, seq = producer
    native = build_native_batch(recs, base_offset=base, leader_epoch=epoch, compression=codec,
                                base_timestamp=None if lowest_base else recs[0][0],
                                producer_id=pid, producer_epoch=pepoch, base_sequence=seq)
    _check_kafka(to_kafka_batch(native, LIMIT), native, recs)


# -- fetch chunks ---------------------------------------------------------------------


def _chunk():
    """Kafka, native, native zstd, Kafka gzip, native lz4: offsets 0..24 in five batches."""
    parts = [build_kafka_batch(RECS, base_offset=0), _native(base_offset=5),
             _native(base_offset=10, compression=COMPRESSION_ZSTD),
             build_kafka_batch(RECS, base_offset=15, compression=COMPRESSION_GZIP),
             _native(base_offset=20, compression=COMPRESSION_LZ4)]
    return parts, b"".join(parts)


def _split(buf) -> list[bytes]:
    """The batches of ``buf`` (kio reads the uncompressed ones, headers of all)."""
    out, pos = [], 0
    while pos < len(buf):
        size = _kio_header(buf[pos:pos + 12 + int.from_bytes(buf[pos + 8:pos + 12], "big")])["batch_length"] + 12
        out.append(bytes(buf[pos:pos + size]))
        pos += size
    return out


def test_chunk_of_mixed_magics():
    parts, chunk = _chunk()
    out = to_kafka_batches(chunk, LIMIT)
    got = _split(out)
    assert [parse_header(b).magic for b in got] == [MAGIC_KAFKA] * 5
    assert got[0] == parts[0] and got[3] == parts[3]  # magic 2: as stored
    for i in (1, 2, 4):
        assert got[i] == to_kafka_batch(parts[i], LIMIT)
        _check_kafka(got[i], parts[i], RECS)
    assert decode_batches(out, "t", 0) == decode_batches(chunk, "t", 0)
    assert to_kafka_batches(memoryview(chunk), LIMIT) == out


@pytest.mark.parametrize("wrap", [bytes, memoryview])
def test_chunk_without_native_batches_is_returned_itself(wrap):
    kafka = b"".join(build_kafka_batch(RECS, base_offset=5 * i, compression=c) for i, c in enumerate(CODECS))
    for chunk in (wrap(kafka), wrap(kafka[:-30]), wrap(kafka[: len(kafka) * 6 // 7]), wrap(b"")):
        assert to_kafka_batches(chunk, LIMIT) is chunk  # a partial magic-2 tail stays (clients ignore it)


def test_truncated_tail_is_dropped_once_anything_is_converted():
    parts, chunk = _chunk()
    whole = to_kafka_batches(b"".join(parts[:4]), LIMIT)
    for cut in (1, 16, 17, HEADER_SIZE, len(parts[4]) - 1):
        assert to_kafka_batches(chunk[:len(chunk) - len(parts[4]) + cut], LIMIT) == whole
    # a cut native batch after magic-2 ones only: dropped (no magic-122 header reaches a Kafka client)
    cut_native = parts[0] + parts[1][:100]
    assert to_kafka_batches(cut_native, LIMIT) == parts[0]
    assert to_kafka_batches(parts[1][:100], LIMIT) == b""
    # too short to show a magic: kept as a Kafka client would get it from Kafka
    assert to_kafka_batches(parts[0] + parts[1][:16], LIMIT) == parts[0] + parts[1][:16]


def test_decompression_bomb_is_bounded():
    bomb = _native([(TS, None, b"\0" * 200_000, None)], base_offset=5, compression=COMPRESSION_ZSTD)
    assert len(bomb) < 500
    with pytest.raises(DecompressionLimitError):
        to_kafka_batch(bomb, 100_000)
    with pytest.raises(DecompressionLimitError) as exc:
        to_kafka_batches(bomb + _native(base_offset=6), 100_000)
    assert exc.value.offset == 5 and exc.value.limit == 100_000
    first = build_kafka_batch(RECS, base_offset=0)
    assert to_kafka_batches(first + bomb + _native(base_offset=6), 100_000) == first
    assert len(to_kafka_batch(bomb, 200_100)) < 500  # within the bound it converts


def _bad_crc(batch: bytes) -> bytes:
    return batch[:-1] + bytes([batch[-1] ^ 1])


def _bad_records() -> list[bytes]:
    """Native batches whose CRC matches but whose records cannot be served."""
    ok = _native(base_offset=5)
    return [
        forge(ok, payload=msgpack.packb([[0, "a str key", b"v", None]]), record_count=1, last_offset_delta=0),
        forge(ok, payload=msgpack.packb([[0, None, b"v", {b"bin key": b"x"}]]), record_count=1, last_offset_delta=0),
        forge(ok, payload=msgpack.packb([[0.5, None, b"v", None]]), record_count=1, last_offset_delta=0),
        forge(ok, payload=msgpack.packb([[0, None, b"v"]]), record_count=1, last_offset_delta=0),
        forge(ok, payload=msgpack.packb([[0, None, b"v", None]] * 2), record_count=3, last_offset_delta=2),
        forge(ok, payload=b"\xc1 not msgpack"),
        forge(ok, attributes=COMPRESSION_ZSTD, payload=b"not zstd"),
        forge(ok, attributes=6),  # undefined codec
        forge(ok, magic=7),
        _bad_crc(ok),
        ok[:-1],  # length disagrees with the buffer (one batch only)
    ]


def test_corrupt_batch_raises():
    for bad in _bad_records():
        with pytest.raises(CorruptBatchError):
            to_kafka_batch(bad, LIMIT)


def test_corrupt_batch_stops_the_chunk(caplog):
    first = _native(base_offset=0)
    later = _native(base_offset=6)
    for bad in _bad_records()[:-1]:
        with pytest.raises(CorruptBatchError) as exc:
            to_kafka_batches(bad + later, LIMIT)
        assert exc.value.offset == 5 and "offset 5" in str(exc.value)
        with caplog.at_level(logging.WARNING, logger="storage.convert"):
            assert to_kafka_batches(first + bad + later, LIMIT) == to_kafka_batch(first, LIMIT)
        assert "offset 5" in caplog.records[-1].getMessage()


def test_impossible_length_stops_the_chunk():
    kafka = build_kafka_batch(RECS, base_offset=0)
    bad = forge(_native(base_offset=5), batch_length=10)
    with pytest.raises(CorruptBatchError) as exc:
        to_kafka_batches(bad + _native(base_offset=6), LIMIT)
    assert exc.value.offset == 5
    assert to_kafka_batches(_native(base_offset=0) + bad, LIMIT) == to_kafka_batch(_native(base_offset=0), LIMIT)
    assert to_kafka_batches(kafka + bad, LIMIT) == kafka  # a native header, even with a bad length


def test_corrupt_magic2_batch_is_passed_on():
    """A magic-2 batch is the Kafka consumer's to check (as a Kafka broker serves it)."""
    bad = _bad_crc(build_kafka_batch(RECS, base_offset=0))
    assert to_kafka_batch(bad, LIMIT) is bad
    out = to_kafka_batches(bad + _native(base_offset=5), LIMIT)
    assert out == bad + to_kafka_batch(_native(base_offset=5), LIMIT)
    assert parse_header(_native()).magic == MAGIC_NATIVE


def test_conversion_stops_at_a_batch_boundary_once_the_native_budget_is_spent():
    """``max_native_bytes`` bounds the loop's work per fetch: whole batches only, at least one."""
    natives = [build_native_batch([(1000 + i, None, b"v" * 100, None)] * 50, base_offset=50 * i) for i in range(4)]
    kafka = build_kafka_batch([(1000, None, b"k", None)] * 10, base_offset=200)
    chunk = b"".join(natives) + kafka
    size = len(natives[0])
    one = to_kafka_batches(chunk, 1 << 20, max_native_bytes=1)  # less than a batch: still the first one
    assert [h.base_offset for _, h in iter_batches(one)] == [0]
    two = to_kafka_batches(chunk, 1 << 20, max_native_bytes=2 * size)
    assert [h.base_offset for _, h in iter_batches(two)] == [0, 50]
    everything = to_kafka_batches(chunk, 1 << 20, max_native_bytes=None)
    assert [h.base_offset for _, h in iter_batches(everything)] == [0, 50, 100, 150, 200]
    assert bytes(to_kafka_batches(kafka + natives[0], 1 << 20, max_native_bytes=1)) == kafka  # magic-2 first: it alone
