"""Reading fetched bytes: concatenated record batches of either magic into records, bounded.

What a consumer runs on a fetch answer (:func:`decode_batches`, :func:`decode_some_batches`):
every batch's framing and CRC are checked, its payload decompressed within a bound and its
records decoded into ``record_type`` tuples in offset order; records below ``min_offset``
are skipped.  A batch that cannot be read stops the decode with a
:class:`storage.errors.CorruptBatchError` naming topic, partition and offset, after the
records before it.  The single-batch codec (header, CRC, building) is :mod:`storage.batch`.
"""

from __future__ import annotations

import gc
from itertools import count as _count
from typing import NamedTuple

from storage.batch import (
    _CRC_START, _HEADER, COMPRESSION_MASK, CONTROL_BIT, HEADER_SIZE, LOG_OVERHEAD, MAGIC_KAFKA, MAGIC_NATIVE,
    TIMESTAMP_TYPE_BIT, _check_count, _crc,
)
from storage.compression import DecompressionLimitError, decompress
from storage.errors import CorruptBatchError
from storage.records import decode_kafka, decode_native

__all__ = ["Decoded", "decode_batches", "decode_some_batches"]

_tnew = tuple.__new__
_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable


class Decoded(NamedTuple):
    """What :func:`decode_some_batches` read: records, bytes consumed, and why it stopped."""

    records: list
    end: int  # bytes of the buffer consumed: whole batches decoded (or skipped)
    error: CorruptBatchError | None  # the batch at ``end`` cannot be read (None: not an error)


def decode_batches(
    buf: bytes | bytearray | memoryview, topic: str, partition: int, min_offset: int = 0,
    verify_crc: bool = True, record_type: type = tuple, max_batch_bytes: int | None = None,
) -> list:
    """Decode concatenated batches of either magic into records, in offset order.

    Each record is ``record_type((topic, partition, offset, timestamp, key, value, headers))``
    (``record_type`` is ``tuple`` or a tuple subclass such as a NamedTuple with those seven
    fields); headers is a dict, ``{}`` when none. Records below ``min_offset`` are skipped (a
    fetch may start mid-batch), so are control batches; a trailing partial batch is ignored.

    Native batches cost one ``msgpack.unpackb`` and one list comprehension each; Kafka
    batches are parsed field by field. The cyclic garbage collector is paused meanwhile
    (the many small records would otherwise trigger a collection every few hundred,
    halving throughput) and re-enabled before returning.

    Args:
        max_batch_bytes: If given, the most bytes one compressed payload may decompress to
            (:func:`storage.compression.decompress`'s ``max_size``).

    Raises:
        CorruptBatchError: Naming topic, partition and the batch's base offset (also in
            ``exc.offset``): a bad length, a CRC mismatch, an unknown magic or codec, or
            records that do not decode or do not match the header's count.
            :class:`~storage.compression.DecompressionLimitError` when a payload
            decompresses past ``max_batch_bytes``.

    Runtime: O(bytes).
    """
    res = _paused(buf, topic, partition, min_offset, verify_crc, record_type, max_batch_bytes, None)
    if res.error is not None:
        raise res.error
    return res.records


def decode_some_batches(
    buf: bytes | bytearray | memoryview, topic: str, partition: int, min_offset: int,
    verify_crc: bool, record_type: type, max_bytes: int,
) -> Decoded:
    """Decode batches from the start of ``buf`` as :func:`decode_batches` does, but stop
    early instead of failing or growing without bound.

    It stops (1) before the first batch it cannot read, keeping the records before it, or
    (2) after the batch that brings the decoded payload bytes to ``max_bytes`` or more; the
    caller decodes ``buf[end:]`` in a later call. So one call holds at most about
    ``2 * max_bytes`` of payload, and no payload may decompress past ``max_bytes``.

    Returns:
        ``Decoded(records, end, error)``; ``error`` (naming topic, partition and offset, as
        :func:`decode_batches` raises it) is the reason for stopping at ``end``, or None
        when ``end`` is the end of the whole batches or the budget ran out there.

    Runtime: O(bytes consumed).
    """
    return _paused(buf, topic, partition, min_offset, verify_crc, record_type, max_bytes, max_bytes)


def _paused(buf, topic, partition, min_offset, verify_crc, record_type, limit, budget) -> Decoded:
    """:func:`_decode` with the cyclic garbage collector paused.

    Everything is allocated while paused (the result is built inside): a container
    allocated with the collector on and its young count over the threshold makes it scan
    every record just decoded, once per call (20% of the native decode path). So callers read
    the result by attribute: unpacking a tuple subclass allocates an iterator.
    """
    if not _gc_isenabled():
        return _decode(buf, topic, partition, min_offset, verify_crc, record_type, limit, budget)
    _gc_disable()
    try:
        return _decode(buf, topic, partition, min_offset, verify_crc, record_type, limit, budget)
    finally:
        _gc_enable()


def _decode(buf, topic, partition, min_offset, verify_crc, record_type, limit, budget) -> Decoded:
    out: list = []
    extend = out.extend
    mv = memoryview(buf)
    pos = 0
    n = len(buf)
    used = 0
    unpack_from = _HEADER.unpack_from
    while pos + HEADER_SIZE <= n:
        (base_offset, length, _le, magic, crc, attrs, lod, base_ts, max_ts, _pid, _pe, _bs, cnt) = unpack_from(buf, pos)
        end = pos + LOG_OVERHEAD + length
        try:
            if length < HEADER_SIZE - LOG_OVERHEAD:
                raise CorruptBatchError(f"bad length {length} at byte {pos}")
            if end > n:
                break
            if base_offset + lod < min_offset or attrs & CONTROL_BIT:
                pos = end
                continue
            if verify_crc and _crc(mv[pos + _CRC_START : end]) != crc:
                raise CorruptBatchError("CRC mismatch")
            payload = mv[pos + HEADER_SIZE : end]
            codec = attrs & COMPRESSION_MASK
            if codec:
                payload = decompress(codec, payload, limit)
            used += len(payload)
            if magic == MAGIC_NATIVE:
                recs = decode_native(payload)
                _check_count(len(recs), cnt)
                if base_offset < min_offset:
                    recs = recs[min_offset - base_offset :]
                    base_offset = min_offset
                try:
                    extend([
                        _tnew(record_type, (topic, partition, off, base_ts + d, k, v, h or {}))
                        for off, (d, k, v, h) in zip(_count(base_offset), recs)
                    ])
                except (TypeError, ValueError) as exc:
                    raise CorruptBatchError(f"bad native record: {exc}") from None
            elif magic == MAGIC_KAFKA:
                recs = decode_kafka(payload, cnt)
                log_append = attrs & TIMESTAMP_TYPE_BIT
                extend([
                    _tnew(record_type, (topic, partition, base_offset + od,
                                        max_ts if log_append else base_ts + td, k, v, h))
                    for od, td, k, v, h in recs if base_offset + od >= min_offset
                ])
            else:
                raise CorruptBatchError(f"unknown magic {magic} (known: {MAGIC_KAFKA}, {MAGIC_NATIVE})")
        except CorruptBatchError as exc:  # ``out`` holds the batches before this one only
            where = f"{topic}-{partition}: batch at offset {base_offset}: {exc}"
            if isinstance(exc, DecompressionLimitError):
                return Decoded(out, pos, DecompressionLimitError(where, exc.limit, base_offset))
            return Decoded(out, pos, CorruptBatchError(where, offset=base_offset))
        pos = end
        if budget is not None and used >= budget:
            break
    return Decoded(out, pos, None)
