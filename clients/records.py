"""Native record batches (magic 122): encode for the producer, decode for the consumer.

Layout (docs/protocol.md §5), 61-byte big-endian header then the payload::

     0 base_offset i64        21 attributes i16          43 producer_id i64
     8 batch_length i32       23 last_offset_delta i32   51 producer_epoch i16
    12 leader_epoch i32       27 base_timestamp i64      53 base_sequence i32
    16 magic i8 (122)         35 max_timestamp i64       57 record_count i32
    17 crc u32 = CRC-32C of bytes 21..end                61 payload ...

The payload is one msgpack array ``[[timestamp_delta, key, value, headers], ...]``,
optionally compressed as a whole (one zstd frame or one LZ4 frame).

This module is self-contained (it does not import ``storage``) and tuned for
speed: one ``msgpack.packb`` per batch to encode, one ``msgpack.unpackb`` per
batch plus one list comprehension to decode.
"""

from __future__ import annotations

import gc
import struct
from itertools import count as _count

import msgpack
from crc32c import crc32c

from clients.structs import Record
from zbroker.errors import CorruptMessageError, UnsupportedCompressionTypeError

HEADER_SIZE = 61
MAGIC_NATIVE = 122
COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4
COMPRESSION_MASK = 0x07

COMPRESSION_BY_NAME = {"none": COMPRESSION_NONE, None: COMPRESSION_NONE, "lz4": COMPRESSION_LZ4, "zstd": COMPRESSION_ZSTD}

# base_offset, batch_length, leader_epoch, magic, crc, then the CRC-covered part.
_HEAD = struct.Struct(">qiib")  # 17 bytes before the crc
_TAIL = struct.Struct(">hiqqqhii")  # 40 bytes from attributes to record_count
_FULL = struct.Struct(">qiibIhiqqqhii")
assert _FULL.size == HEADER_SIZE and _HEAD.size + 4 + _TAIL.size == HEADER_SIZE

_packb = msgpack.packb
_unpackb = msgpack.unpackb
_tnew = tuple.__new__
_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable

_zstd_c = None
_zstd_d = None


def _compress(codec: int, payload: bytes) -> bytes:
    global _zstd_c
    if codec == COMPRESSION_ZSTD:
        if _zstd_c is None:
            import zstandard

            _zstd_c = zstandard.ZstdCompressor(level=3)
        return _zstd_c.compress(payload)
    if codec == COMPRESSION_LZ4:
        import lz4.frame

        return lz4.frame.compress(payload)
    if codec == COMPRESSION_GZIP:
        import gzip

        return gzip.compress(payload)
    raise UnsupportedCompressionTypeError(f"compression codec {codec} not supported")


def _decompress(codec: int, data) -> bytes:
    global _zstd_d
    if codec == COMPRESSION_ZSTD:
        if _zstd_d is None:
            import zstandard

            _zstd_d = zstandard.ZstdDecompressor()
        # decompressobj copes with frames that do not record their content size.
        return _zstd_d.decompressobj().decompress(bytes(data))
    if codec == COMPRESSION_LZ4:
        import lz4.frame

        return lz4.frame.decompress(bytes(data))
    if codec == COMPRESSION_GZIP:
        import gzip

        return gzip.decompress(bytes(data))
    raise UnsupportedCompressionTypeError(f"compression codec {codec} not supported")


def encode_batch(
    records,
    base_timestamp: int,
    max_timestamp: int,
    compression: int = COMPRESSION_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """Encode one native batch from records already relative to ``base_timestamp``.

    Args:
        records: sequence of ``(timestamp_delta, key, value, headers)`` tuples with
            key/value ``bytes | None`` and headers ``dict[str, bytes] | None``.
        base_timestamp: ms since the epoch; record i has ``base_timestamp + delta_i``.
        max_timestamp: the largest record timestamp.
        compression: a ``COMPRESSION_*`` codec.

    Returns:
        The batch bytes (base_offset 0, leader_epoch -1: the broker fills them).

    Runtime: one msgpack pack of the records, O(bytes).
    """
    n = len(records)
    payload = _packb(records, use_bin_type=True)
    if compression:
        payload = _compress(compression, payload)
    tail = _TAIL.pack(compression, n - 1, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, n)
    crc = crc32c(payload, crc32c(tail))
    return b"".join((_HEAD.pack(0, HEADER_SIZE - 12 + len(payload), -1, MAGIC_NATIVE), crc.to_bytes(4, "big"), tail, payload))


def build_batch(records, compression: int = COMPRESSION_NONE) -> bytes:
    """Encode records with absolute timestamps: ``[(timestamp_ms, key, value, headers), ...]``.

    Convenience for tests and tools; the producer uses :func:`encode_batch`.
    """
    if not records:
        raise ValueError("a batch needs at least one record")
    base = records[0][0]
    mx = max(r[0] for r in records)
    return encode_batch([(r[0] - base, r[1], r[2], r[3]) for r in records], base, mx, compression)


def set_base_offset(batch: bytes, base_offset: int) -> bytes:
    """Return ``batch`` with its base_offset replaced (what a broker does; used in tests)."""
    return struct.pack(">q", base_offset) + batch[8:]


def walk(buf) -> tuple[int, int]:
    """Walk the batch headers of a fetched buffer without decoding payloads.

    Returns:
        ``(next_offset, complete_bytes)``: the offset after the last complete
        batch (-1 if there is none) and how many leading bytes form whole batches.
    """
    pos = 0
    n = len(buf)
    nxt = -1
    unpack_from = _FULL.unpack_from
    while pos + HEADER_SIZE <= n:
        h = unpack_from(buf, pos)
        end = pos + 12 + h[1]
        if end > n or h[1] < HEADER_SIZE - 12:
            break
        nxt = h[0] + h[6] + 1
        pos = end
    return nxt, pos


def decode_batches(buf, topic: str, partition: int, min_offset: int = 0, verify_crc: bool = True) -> list[Record]:
    """Decode concatenated batches into :class:`Record` objects.

    Records below ``min_offset`` are skipped (a fetch may start mid-batch).  A
    trailing partial batch is ignored.

    The cyclic garbage collector is paused while the records are built: they
    are many small container objects and otherwise trigger a collection every
    few hundred records, halving throughput.  It is re-enabled before returning.

    Raises:
        CorruptMessageError: a CRC mismatch, a bad length or a wrong record count.
        UnsupportedCompressionTypeError: a codec this client cannot read.

    Runtime: O(bytes); one msgpack unpack per batch.
    """
    if not _gc_isenabled():
        return _decode(buf, topic, partition, min_offset, verify_crc)
    _gc_disable()
    try:
        return _decode(buf, topic, partition, min_offset, verify_crc)
    finally:
        _gc_enable()


def _decode(buf, topic: str, partition: int, min_offset: int, verify_crc: bool) -> list[Record]:
    out: list[Record] = []
    extend = out.extend
    mv = memoryview(buf)
    pos = 0
    n = len(buf)
    unpack_from = _FULL.unpack_from
    while pos + HEADER_SIZE <= n:
        (base_offset, length, _le, magic, crc, attrs, lod, base_ts, _mx, _pid, _pe, _bs, cnt) = unpack_from(buf, pos)
        end = pos + 12 + length
        if length < HEADER_SIZE - 12:
            raise CorruptMessageError(f"{topic}-{partition}: batch at byte {pos} has bad length {length}")
        if end > n:
            break
        if base_offset + lod < min_offset:
            pos = end
            continue
        if verify_crc and crc32c(mv[pos + 21 : end]) != crc:
            raise CorruptMessageError(f"{topic}-{partition}: CRC mismatch in batch at offset {base_offset}")
        if magic != MAGIC_NATIVE:
            raise CorruptMessageError(f"{topic}-{partition}: batch at offset {base_offset} has magic {magic}, expected {MAGIC_NATIVE}")
        payload = mv[pos + HEADER_SIZE : end]
        codec = attrs & COMPRESSION_MASK
        if codec:
            payload = _decompress(codec, payload)
        try:
            recs = _unpackb(payload, raw=False, use_list=False)
        except Exception as exc:
            raise CorruptMessageError(f"{topic}-{partition}: batch at offset {base_offset} payload undecodable: {exc}") from None
        if len(recs) != cnt:
            raise CorruptMessageError(f"{topic}-{partition}: batch at offset {base_offset} holds {len(recs)} records, header says {cnt}")
        if base_offset < min_offset:
            recs = recs[min_offset - base_offset :]
            base_offset = min_offset
        extend(
            [
                _tnew(Record, (topic, partition, off, base_ts + d, k, v, h or {}))
                for off, (d, k, v, h) in zip(_count(base_offset), recs)
            ]
        )
        pos = end
    return out
