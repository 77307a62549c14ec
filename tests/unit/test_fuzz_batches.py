"""A fuzzer of the record-batch codec (storage/): native and Kafka v2 batches, every codec.

Inputs (:mod:`tests.fuzzcorpus`, drawn by hypothesis with a bounded, derandomized budget):
a valid batch of each magic and codec (none, gzip, snappy, lz4, zstd) with header fields
that lie (batch_length, record_count, last_offset_delta, magic, attributes and codec bits,
offsets, timestamps), payload bytes damaged, another codec's payload, a decompression bomb;
the CRC made to match (so the damage reaches the codecs and the record decoders) or not;
the batch cut short or followed by more bytes.  Every reader a broker or client runs on
such bytes is called on them, each with a bound of ``LIMIT`` bytes:

- validation refuses (:class:`~storage.errors.CorruptBatchError`, of which
  InvalidRecordError and UnsupportedCodecError) or accepts; a batch a producer may append
  (:func:`~storage.batch.validate_produced_batch`) is appended to a log, read back as it was
  stored, and found again when the log is reopened (recovery);
- decoding (:func:`~storage.decode.decode_batches`, ``decode_some_batches``,
  :func:`~storage.batch.decode_native_records`, :func:`~storage.records.decode_kafka`,
  :func:`~storage.compression.decompress`), converting for Kafka consumers
  (:func:`~storage.convert.to_kafka_batches`) and walking headers (``iter_batches``, ``walk``)
  return or raise ``CorruptBatchError`` -- nothing else;
- no payload is decompressed past ``LIMIT``, and a decompression bomb costs at most a few
  times ``LIMIT`` of memory (tracemalloc), whatever its framing says about its size;
- what conversion hands a Kafka consumer is magic 2 only, each converted batch with a CRC
  that matches.
"""

from __future__ import annotations

import itertools
import shutil
import struct
import tracemalloc

import lz4.frame
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from storage import Log, LogConfig
from storage.batch import (
    HEADER_SIZE, MAGIC_KAFKA, MAGIC_NATIVE, decode_native_records, iter_batches, parse_header, validate_batch,
    validate_produced_batch, walk,
)
from storage.compression import COMPRESSION_NONE, DecompressionLimitError, decompress
from storage.convert import to_kafka_batches
from storage.decode import decode_batches, decode_some_batches
from storage.errors import CorruptBatchError
from storage.records import decode_kafka
from tests.fuzzcorpus import BATCHES, BOMB_SIZE, BOMBS, CODECS, DrawChooser, bomb, fuzz_budget, fuzz_timeout, mutate_batch

pytestmark = fuzz_timeout(120)

LIMIT = 1 << 20  # every reader's bound on one decompressed payload here; the corpus's bombs are 8 MiB
MAX_MESSAGE = 1 << 20
_values = st.none()  # batches need no msgpack values from the chooser
_dirs = itertools.count()


def refused_cleanly(call, *args, **kwargs):
    """``call(...)``'s result, or None if it raised CorruptBatchError (its subclasses too):
    any other exception fails the test."""
    try:
        return call(*args, **kwargs)
    except CorruptBatchError as exc:
        assert str(exc), "a refusal names what was wrong"
        return None


def payload_of(buf: bytes) -> tuple[int, memoryview] | None:
    """``(codec, payload)`` of the batch at the start of ``buf``, as far as its header says."""
    if len(buf) < HEADER_SIZE:
        return None
    h = parse_header(buf)
    return h.compression, memoryview(buf)[HEADER_SIZE:max(HEADER_SIZE, min(len(buf), h.size))]


def check_readers(buf: bytes) -> None:
    """Every reader of batch bytes returns, or refuses with CorruptBatchError, within LIMIT."""
    for _pos, h in iter_batches(buf):
        assert h.size >= HEADER_SIZE
    nxt, end = walk(buf)
    assert 0 <= end <= len(buf)
    refused_cleanly(validate_batch, buf, MAX_MESSAGE)
    records = refused_cleanly(decode_batches, buf, "t", 0, max_batch_bytes=LIMIT)
    for record in records or ():
        assert len(record) == 7 and (record[5] is None or len(record[5]) <= LIMIT)
    some = decode_some_batches(buf, "t", 0, 0, True, tuple, LIMIT)
    assert 0 <= some.end <= len(buf) and (some.error is None or isinstance(some.error, CorruptBatchError))
    if len(buf) >= HEADER_SIZE and buf[16] == MAGIC_NATIVE:
        refused_cleanly(decode_native_records, buf, LIMIT)
    where = payload_of(buf)
    if where is not None:
        codec, payload = where
        out = refused_cleanly(decompress, codec, payload, LIMIT)
        assert out is None or len(out) <= LIMIT
        if out is not None and buf[16] == MAGIC_KAFKA:
            refused_cleanly(decode_kafka, out, parse_header(buf).record_count)
    check_conversion(buf)


def check_conversion(buf: bytes) -> None:
    """What a Kafka consumer is served of ``buf``: magic-2 batches only (a partial one may end
    it), each converted one with a CRC that matches."""
    served = refused_cleanly(to_kafka_batches, buf, LIMIT, MAX_MESSAGE)
    if served is None or served is buf:
        return
    served = bytes(served)
    for pos, h in iter_batches(served):
        assert h.magic == MAGIC_KAFKA, "a magic-122 batch reached a Kafka consumer"
    _nxt, end = walk(served)
    assert len(served) - end < HEADER_SIZE or served[end + 16] == MAGIC_KAFKA


def check_same_records(stored: bytes) -> None:
    """A Kafka consumer reads the records a native one does (when both can read them)."""
    native = refused_cleanly(decode_batches, stored, "t", 0, max_batch_bytes=LIMIT)
    served = refused_cleanly(to_kafka_batches, stored, LIMIT)
    if native is not None and served is not None:
        kafka = decode_batches(served, "t", 0)  # what the conversion wrote must decode
        assert kafka == native[:len(kafka)]


def check_log(tmp_path, batch: bytes) -> None:
    """A batch a producer may append is stored between two valid ones, read back as it was
    appended, and found again, unchanged, when the log is reopened (recovery)."""
    header = refused_cleanly(validate_produced_batch, batch, MAX_MESSAGE)
    if header is None:
        return
    directory = tmp_path / f"log-{next(_dirs)}"
    config = LogConfig(segment_bytes=1024, max_message_bytes=MAX_MESSAGE)
    log = Log(directory, config, 1_000)
    try:
        before = BATCHES[(MAGIC_KAFKA, COMPRESSION_NONE)]
        log.append(before, 1_000)
        info = log.append(batch, 1_001, header=header)
        log.append(before, 1_002)
        log._check()
        stored = log.read(info.base_offset, 1 << 22).data
        assert stored[:len(batch)][16:] == batch[16:] and stored[:8] == struct.pack(">q", info.base_offset)
        end = log.log_end_offset
        log.close()
        log = Log(directory, config, 2_000)
        log._check()
        assert log.log_end_offset == end and log.read(info.base_offset, 1 << 22).data == stored
        for timestamp in (-1, 0, 1_001, header.max_timestamp, 2**63 - 1):
            refused_cleanly(log.offset_for_timestamp, timestamp)
        check_readers(stored)
        check_same_records(stored)
    finally:
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


@fuzz_budget(1000)
@given(data=st.data(), base=st.sampled_from(sorted(BATCHES)))
def test_mutated_batches_of_every_magic_and_codec(tmp_path_factory, data, base):
    ch = DrawChooser(data.draw, _values)
    batch = mutate_batch(ch, BATCHES[base])
    check_readers(batch)
    check_readers(batch + BATCHES[base])  # a bad batch first, a good one after it
    check_readers(BATCHES[base] + batch)
    check_log(tmp_path_factory.getbasetemp(), batch)


@pytest.mark.parametrize("base", sorted(BATCHES), ids=lambda b: f"magic{b[0]}-codec{b[1]}")
def test_every_truncation_of_every_batch(base):
    batch = BATCHES[base]
    for n in range(len(batch) + 1):
        check_readers(batch[:n])


def peak_bytes(call, *args) -> int:
    """Peak bytes ``call(*args)`` allocates (tracemalloc); it must return or refuse cleanly."""
    tracemalloc.start()
    try:
        refused_cleanly(call, *args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def lying_sizes(codec: int, size: int, claim: int) -> list[bytes]:
    """Payloads of ``size`` zero bytes whose framing claims ``claim`` bytes, where the codec's
    framing says anything about the size (lz4 and zstd frames, a raw snappy block)."""
    zeros = bytes(size)
    if codec == 3:  # the header (with its checksum) of a frame of ``claim`` bytes, the blocks of ``size``
        header = lz4.frame.compress(bytes(min(claim, 8 << 20)), store_size=True)[:15] if claim else b""
        unsized = lz4.frame.compress(zeros, store_size=False)
        return [header + unsized[7:]] if header else []
    if codec == 4:
        frame = bytearray(zstandard.ZstdCompressor(write_content_size=True).compress(zeros))
        descriptor = frame[4]
        fcs_bytes = {0: 1 if descriptor & 0x20 else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
        at = 5 + (0 if descriptor & 0x20 else 1) + {0: 0, 1: 1, 2: 2, 3: 4}[descriptor & 3]
        if fcs_bytes in (4, 8):
            frame[at:at + fcs_bytes] = claim.to_bytes(fcs_bytes, "little")
        return [bytes(frame)]
    if codec == 2:
        raw = bomb(codec, size)
        varint = bytearray()
        n = claim
        while n > 0x7F:
            varint.append(n & 0x7F | 0x80)
            n >>= 7
        varint.append(n)
        length = 0
        while raw[length] & 0x80:
            length += 1
        return [bytes(varint) + raw[length + 1:]]
    return []


@fuzz_budget(40)
@given(codec=st.sampled_from([c for c in CODECS if c != COMPRESSION_NONE]),
       size=st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 4 * LIMIT, BOMB_SIZE]),
       claim=st.sampled_from([0, 1, LIMIT // 2, LIMIT, LIMIT + 1, 2**32 - 1]))
def test_decompression_bombs_and_lying_sizes_stay_within_the_bound(codec, size, claim):
    honest = BOMBS[codec] if size == BOMB_SIZE else bomb(codec, size)
    for payload in [honest, *lying_sizes(codec, size, claim)]:
        peak = peak_bytes(decompress, codec, payload, LIMIT)
        # the payload's copy plus a few bound-sized buffers, never the claimed or the real size
        assert peak < 2 * len(payload) + 4 * LIMIT, (codec, size, claim, peak)
    if size > LIMIT:
        with pytest.raises(DecompressionLimitError):
            decompress(codec, honest, LIMIT)
    else:
        assert decompress(codec, honest, LIMIT) == bytes(size)


@pytest.mark.parametrize("codec", [c for c in CODECS if c != COMPRESSION_NONE])
@pytest.mark.parametrize("magic", [MAGIC_KAFKA, MAGIC_NATIVE])
def test_a_bomb_in_a_valid_batch_is_refused_by_every_reader_within_the_bound(magic, codec):
    from tests.unit.batchforge import forge

    batch = forge(BATCHES[(magic, codec)], BOMBS[codec])
    assert validate_produced_batch(batch, MAX_MESSAGE).compression == codec  # judged by its header: accepted
    for call, args in [(decode_some_batches, (batch, "t", 0, 0, True, tuple, LIMIT)),
                       (decode_native_records if magic == MAGIC_NATIVE else decode_kafka_batch, (batch, LIMIT)),
                       (to_kafka_batches, (batch, LIMIT)), (decompress, (codec, batch[HEADER_SIZE:], LIMIT))]:
        peak = peak_bytes(call, *args)
        assert peak < 2 * len(batch) + 4 * LIMIT, (call.__name__, peak)
    with pytest.raises(DecompressionLimitError):
        decode_batches(batch, "t", 0, max_batch_bytes=LIMIT)


def decode_kafka_batch(batch: bytes, limit: int):
    return decode_batches(batch, "t", 0, max_batch_bytes=limit)
