r"""Serving native batches to Kafka consumers: magic 122 -> Kafka RecordBatch v2 (magic 2).

Kafka consumers read only magic 2 (DESIGN §9), while native producers store magic 122
(:mod:`storage.batch`). The Kafka front door's fetch passes what :meth:`storage.log.Log.read`
returns through :func:`to_kafka_batches`; magic-2 batches go out as stored.

A converted batch keeps everything but its ``batch_length``, ``magic``, ``crc`` and payload:
header bytes 21..60 (attributes -- the codec, the timestamp type, the transactional and
control bits --, ``last_offset_delta``, base and max timestamp, producer id and epoch, base
sequence, record count) are copied as they are, ``base_offset`` and ``leader_epoch`` too. The
records are the native ones, each as a Kafka v2 record (:func:`storage.records.encode_kafka`):
record ``i`` gets offset delta ``i`` (a native record's offset is ``base_offset + i``), the
same timestamp delta, key, value and headers (a native headers map becomes Kafka's list of
``(key, value)`` pairs). The payload is compressed again with the batch's own codec (the codec
ids are the same in both magics); LZ4 as an LZ4 frame with independent blocks, which Kafka's
readers need (native producers write linked blocks). The CRC-32C is computed afresh -- after
the native batch's own CRC was checked, so a damaged batch is never passed on under a valid
CRC. (The timestamp-type bit is kept too, though native readers ignore it; no native batch
carries it: :func:`storage.batch.validate_produced_batch` refuses it from producers.)

Cost (measured with :mod:`timeit` on a shared two-core machine, Python 3.11, best of 15; a
64 KiB native batch of 620 records with 100-byte values, no key, no headers, timestamp deltas
0-154 ms): about 0.45 us per record uncompressed (0.25-0.31 ms for the batch) and about
0.55 us per record with zstd (0.31-0.36 ms), i.e. some 200 MB of records per second per
core. ~0.35 us of it is :func:`storage.records.encode_kafka`'s per-record Python work
(0.20-0.24 ms a batch); the CRC check, the msgpack unpack and zstd decompression add ~0.1 us
per record, zstd compression ~0.1 us. Before ``encode_kafka`` had its fast path (same
machine, same day) it took 1.3-1.6 us per record and the conversion 1.3-1.5 us (1.4-1.7 us
with zstd). Timestamp deltas over 8.2 s cost ~0.2 us more per record, over 17 minutes
~0.4 us. The other way, :func:`storage.records.decode_kafka` reads the same records in
0.7-0.8 us each (0.43-0.48 ms a batch; 1.5-1.7 us before its fast path). A chunk with no
native batch costs one header walk, under 1 us per batch, and is returned without a copy.
The command, from the repository root (``"enc(r)"`` or ``"dec(b, 620)"`` for the codec
alone, ``compression=4`` for zstd)::

    python -m timeit -r 15 \
        -s "from storage.records import encode_kafka as enc, decode_kafka as dec" \
        -s "from storage.batch import build_native_batch as nb" \
        -s "from storage.convert import to_kafka_batch as conv" \
        -s "r = [(i // 4, None, bytes([i % 251]) * 100, None) for i in range(620)]" \
        -s "b = enc(r); n = nb([(10**12 + t, k, v, h) for t, k, v, h in r], compression=0)" \
        "conv(n, 1 << 22)"
"""

from __future__ import annotations

import logging

from storage.batch import (
    _CRC_START, _MAGIC_CRC, _PREFIX, HEADER_SIZE, LOG_OVERHEAD, MAGIC_KAFKA, BatchHeader, _check_count, _crc,
    iter_batches, parse_header, validate_batch,
)
from storage.compression import DecompressionLimitError, compress, decompress
from storage.errors import CorruptBatchError
from storage.records import decode_native, encode_kafka

__all__ = ["to_kafka_batch", "to_kafka_batches"]

log = logging.getLogger(__name__)

_MAGIC_POS = 16  # byte position of ``magic`` in the header


def to_kafka_batch(batch: bytes | memoryview, max_decompressed: int) -> bytes | memoryview:
    """Convert one stored native batch (magic 122) into the equivalent Kafka v2 batch.

    Args:
        batch: Exactly one whole batch.
        max_decompressed: The most bytes its payload may decompress to
            (:func:`storage.compression.decompress`'s ``max_size``; a broker passes
            :func:`storage.batch.decode_limit`).

    Returns:
        The magic-2 batch (see the module docstring for what it keeps). A magic-2 ``batch`` is
        returned itself, unchecked and uncopied.

    Raises:
        DecompressionLimitError: The payload decompresses past ``max_decompressed`` (a
            :class:`CorruptBatchError`).
        CorruptBatchError: The batch is short, its length, magic, record count or CRC is wrong
            (:func:`storage.batch.validate_batch`), its payload does not decompress or decode,
            holds another number of records than the header says, or a record is not
            ``[int, bin|nil, bin|nil, map str->bin|nil]``.

    Runtime: O(bytes), Python work per record (see the module docstring).
    """
    if len(batch) > _MAGIC_POS and batch[_MAGIC_POS] == MAGIC_KAFKA:
        return batch
    return _convert(memoryview(batch), validate_batch(batch), max_decompressed)


def to_kafka_batches(chunk: bytes | memoryview, max_decompressed: int,
                     max_native_bytes: int | None = None) -> bytes | memoryview:
    """Convert every native batch of a fetch chunk (concatenated batches), in order.

    With ``max_native_bytes``, conversion stops at the first native batch that would take
    the native bytes converted past it, once at least one batch is in the answer: the
    answer ends at that batch's start (a whole number of batches), and the consumer's next
    fetch starts there.  Conversion is Python work on the broker's one loop; this bounds
    what one fetch can cost it.

    Magic-2 batches are copied as they are (their CRC is the consumer's to check). When the
    chunk holds no native batch it is returned itself, without a copy: one header walk.

    A partial batch at the end (a chunk cut at a byte budget) is dropped when anything is
    converted: a converted batch has another length, so the bytes that would complete it
    could never follow. With no native batch it stays, as Kafka clients ignore a partial
    trailing batch -- unless its header names another magic than 2 (a cut native batch):
    then it is dropped too, so no magic-122 byte ever reaches a Kafka client.

    A batch that cannot be converted (corrupt, or a payload over ``max_decompressed``) stops
    the conversion there: the batches before it are returned, and the batch is reported (a
    WARNING naming its offset) by this call and raised by the next, which starts at it (a
    Kafka consumer fetches next from the offset after the last record it got). When it is
    the first batch, the error is raised with ``exc.offset`` = its base offset, as
    :meth:`storage.log.Log.read` raises a batch it cannot read. Dropping just that batch and
    going on instead would skip its offsets without any consumer being told.

    Args:
        chunk: Whole batches, concatenated, the last possibly cut short (what
            :meth:`storage.log.Log.read` returns, possibly trimmed).
        max_decompressed: The most bytes one payload may decompress to (:func:`to_kafka_batch`).

    Returns:
        Kafka v2 batches only: ``chunk`` itself when nothing needed converting, otherwise new
        bytes (``b""`` when the chunk held only a partial native batch).

    Raises:
        DecompressionLimitError: The first batch's payload decompresses past
            ``max_decompressed``; ``exc.offset`` is its base offset.
        CorruptBatchError: The first batch cannot be converted (as :func:`to_kafka_batch`
            says), or the chunk starts with a header whose length is impossible;
            ``exc.offset`` is its base offset.

    Runtime: O(batches) with no native batch; otherwise O(bytes) plus Python work per
    native record.
    """
    batches = list(iter_batches(chunk))
    end = batches[-1][0] + batches[-1][1].size if batches else 0
    rest = len(chunk) - end
    cut_native = rest > _MAGIC_POS and chunk[end + _MAGIC_POS] != MAGIC_KAFKA
    if not cut_native and all(h.magic == MAGIC_KAFKA for _, h in batches):
        return chunk
    mv = memoryview(chunk)
    pieces: list = []
    run = 0  # start of the magic-2 batches not yet in ``pieces``
    converted = 0  # native bytes converted so far
    for pos, h in batches:
        if h.magic == MAGIC_KAFKA:
            continue
        if max_native_bytes is not None and pos > 0 and converted + h.size > max_native_bytes:
            pieces.append(mv[run:pos])
            return b"".join(pieces)
        converted += h.size
        pieces.append(mv[run:pos])
        run = pos + h.size
        try:
            pieces.append(_convert(mv[pos:run], validate_batch(mv[pos:run]), max_decompressed))
        except CorruptBatchError as exc:
            return _stop(pieces, h, exc)
    pieces.append(mv[run:end])
    if rest >= HEADER_SIZE and (h := parse_header(mv, end)).size < HEADER_SIZE:
        return _stop(pieces, h, CorruptBatchError(f"impossible batch_length {h.batch_length}"))
    return b"".join(pieces)


def _stop(pieces: list, h: BatchHeader, exc: CorruptBatchError) -> bytes:
    """End a conversion at the batch ``h`` that failed with ``exc``: raise it if nothing
    precedes it in the chunk, else log it and return ``pieces`` (the batches before it)."""
    where = f"batch at offset {h.base_offset} cannot be served to a Kafka client: {exc}"
    if not any(pieces):
        if isinstance(exc, DecompressionLimitError):
            raise DecompressionLimitError(where, exc.limit, h.base_offset) from None
        raise CorruptBatchError(where, offset=h.base_offset) from None
    log.warning("%s (the batches before it are served)", where)
    return b"".join(pieces)


def _convert(mv: memoryview, h: BatchHeader, limit: int) -> bytes:
    """The Kafka v2 batch equivalent to the validated native batch ``mv`` (header ``h``)."""
    codec = h.compression
    recs = decode_native(decompress(codec, mv[HEADER_SIZE:], limit))
    _check_count(len(recs), h.record_count)
    try:
        records = encode_kafka(recs)
    except (TypeError, ValueError, AttributeError) as exc:  # a record of another shape or type
        raise CorruptBatchError(f"bad native record: {exc}") from None
    payload = compress(codec, records)
    tail = mv[_CRC_START:HEADER_SIZE]
    return b"".join((
        _PREFIX.pack(h.base_offset, HEADER_SIZE - LOG_OVERHEAD + len(payload), h.leader_epoch),
        _MAGIC_CRC.pack(MAGIC_KAFKA, _crc(payload, _crc(tail))),
        tail,
        payload,
    ))
