"""Record batches: the unit the broker validates, stores and serves.

A batch is a fixed 61-byte big-endian header (Kafka RecordBatch v2 layout) followed by a
payload. The broker only ever touches the header; records are decoded by clients and tools.

::

    offset size field
    0      8    base_offset        i64
    8      4    batch_length       i32   total batch bytes - 12 (bytes after this field)
    12     4    leader_epoch       i32
    16     1    magic              i8    2 = Kafka varint records, 122 = zbroker native (msgpack)
    17     4    crc                u32   CRC-32C of bytes [21:end] (attributes .. end)
    21     2    attributes         i16   bits 0-2 compression, bit 3 timestamp type,
                                         bit 4 transactional, bit 5 control
    23     4    last_offset_delta  i32
    27     8    base_timestamp     i64
    35     8    max_timestamp      i64
    43     8    producer_id        i64   (-1 none)
    51     2    producer_epoch     i16   (-1 none)
    53     4    base_sequence      i32   (-1 none)
    57     4    record_count       i32
    61     ...  payload

Native payload (magic 122): a msgpack array of records ``[timestamp_delta, key, value,
headers]`` (key/value bin or nil, headers a map str->bin or nil). Record ``i`` has offset
``base_offset + i`` and timestamp ``base_timestamp + timestamp_delta``. With compression the
whole msgpack payload is compressed (gzip: zlib gzip stream, lz4: lz4 frame, zstd: zstd frame).

Because the CRC starts at ``attributes``, the broker can overwrite ``base_offset`` and
``leader_epoch`` (:func:`patch_batch`) without recomputing it.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator, NamedTuple

import crc32c as _crc32c
import lz4.frame
import msgpack
import zstandard

from storage.errors import CorruptBatchError

__all__ = [
    "HEADER_SIZE", "LOG_OVERHEAD", "MAGIC_KAFKA", "MAGIC_NATIVE",
    "COMPRESSION_NONE", "COMPRESSION_GZIP", "COMPRESSION_SNAPPY", "COMPRESSION_LZ4",
    "COMPRESSION_ZSTD", "COMPRESSION_MASK", "TIMESTAMP_TYPE_BIT", "TRANSACTIONAL_BIT",
    "CONTROL_BIT", "BatchHeader", "CorruptBatchError", "parse_header", "validate_batch",
    "patch_batch", "build_native_batch", "decode_native_records", "iter_batches",
]

HEADER_SIZE = 61
LOG_OVERHEAD = 12
MAGIC_KAFKA = 2
MAGIC_NATIVE = 122
COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4
COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

_CRC_START = 21
_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qii")  # base_offset, batch_length, leader_epoch
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. record_count (covered by the CRC)
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_MAGIC_CRC = struct.Struct(">bI")
_VALID_MAGICS = (MAGIC_KAFKA, MAGIC_NATIVE)

_crc = _crc32c.crc32c


class BatchHeader(NamedTuple):
    """The decoded 61-byte batch header."""

    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        """Offset of the last record in the batch."""
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """Offset that follows this batch."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size(self) -> int:
        """Total size of the batch in bytes, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def compression(self) -> int:
        """Compression codec id (``attributes & COMPRESSION_MASK``)."""
        return self.attributes & COMPRESSION_MASK


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Decode the batch header at ``buf[pos:pos+61]`` without any validation.

    Args:
        buf: Buffer holding at least one header at ``pos``.
        pos: Byte position of the header.

    Returns:
        The decoded header.

    Raises:
        CorruptBatchError: Fewer than 61 bytes are available at ``pos``.
    """
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptBatchError(
            f"truncated batch header: {len(buf) - pos} bytes, need {HEADER_SIZE}"
        )
    return BatchHeader._make(_HEADER.unpack_from(buf, pos))


def validate_batch(buf: bytes | bytearray | memoryview, max_size: int | None = None) -> BatchHeader:
    """Check framing, magic, CRC and record count of exactly one whole batch.

    Records are not decoded; the cost is one header unpack plus a CRC-32C over the bytes.

    Args:
        buf: One complete batch.
        max_size: If given, batches larger than this many bytes are rejected.

    Returns:
        The batch header.

    Raises:
        CorruptBatchError: The message names the problem (short, bad length, too large,
            bad magic, bad crc, count mismatch).
    """
    n = len(buf)
    if n < HEADER_SIZE:
        raise CorruptBatchError(f"batch too short: {n} bytes, header needs {HEADER_SIZE}")
    h = BatchHeader._make(_HEADER.unpack_from(buf, 0))
    if h.batch_length + LOG_OVERHEAD != n:
        raise CorruptBatchError(
            f"bad batch length: header says {h.batch_length} (+{LOG_OVERHEAD}), buffer has {n} bytes"
        )
    if max_size is not None and n > max_size:
        raise CorruptBatchError(f"batch too large: {n} bytes exceeds max {max_size}")
    if h.magic not in _VALID_MAGICS:
        raise CorruptBatchError(f"bad magic {h.magic}: expected {MAGIC_KAFKA} or {MAGIC_NATIVE}")
    if h.record_count < 0:
        raise CorruptBatchError(f"record count mismatch: negative record_count {h.record_count}")
    if h.record_count > 0 and h.last_offset_delta != h.record_count - 1:
        raise CorruptBatchError(
            f"record count mismatch: record_count {h.record_count} but last_offset_delta "
            f"{h.last_offset_delta}"
        )
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    actual = _crc(mv[_CRC_START:])
    if actual != h.crc:
        raise CorruptBatchError(f"bad crc: header 0x{h.crc:08x}, computed 0x{actual:08x}")
    return h


def patch_batch(buf: bytearray | memoryview, base_offset: int, leader_epoch: int) -> None:
    """Overwrite ``base_offset`` and ``leader_epoch`` in place (the CRC stays valid).

    Args:
        buf: A writable buffer holding the batch at position 0.
        base_offset: Offset to assign to the first record.
        leader_epoch: Epoch of the leader appending the batch.
    """
    _BASE_OFFSET.pack_into(buf, 0, base_offset)
    _LEADER_EPOCH.pack_into(buf, 12, leader_epoch)


def _compress(codec: int, data: bytes) -> bytes:
    if codec == COMPRESSION_NONE:
        return data
    if codec == COMPRESSION_ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    if codec == COMPRESSION_LZ4:
        return lz4.frame.compress(data)
    if codec == COMPRESSION_GZIP:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    if codec == COMPRESSION_SNAPPY:
        raise CorruptBatchError("snappy compression is not supported")
    raise CorruptBatchError(f"unknown compression codec {codec}")


def _decompress(codec: int, data: bytes) -> bytes:
    try:
        if codec == COMPRESSION_NONE:
            return data
        if codec == COMPRESSION_ZSTD:
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if codec == COMPRESSION_LZ4:
            return lz4.frame.decompress(data)
        if codec == COMPRESSION_GZIP:
            return zlib.decompress(data, 31)
    except Exception as exc:  # codec libraries raise assorted types
        raise CorruptBatchError(f"cannot decompress payload (codec {codec}): {exc}") from exc
    if codec == COMPRESSION_SNAPPY:
        raise CorruptBatchError("snappy compression is not supported")
    raise CorruptBatchError(f"unknown compression codec {codec}")


def build_native_batch(
    records: list[tuple[int, bytes | None, bytes | None, dict[str, bytes] | None]],
    base_offset: int = 0,
    base_timestamp: int | None = None,
    compression: int = COMPRESSION_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    leader_epoch: int = -1,
) -> bytes:
    """Build one native (magic 122) batch.

    Args:
        records: ``(timestamp_ms, key, value, headers)`` tuples; key/value may be None,
            headers may be None or a dict of str -> bytes (empty dict is stored as nil).
        base_offset: Offset of the first record (the broker overwrites it).
        base_timestamp: Defaults to the smallest record timestamp.
        compression: One of the ``COMPRESSION_*`` codecs (snappy is unsupported).
        producer_id: Idempotent producer id, -1 for none.
        producer_epoch: Producer epoch, -1 for none.
        base_sequence: Sequence number of the first record, -1 for none.
        leader_epoch: Leader epoch (the broker overwrites it).

    Returns:
        The complete batch bytes with a valid CRC.

    Raises:
        ValueError: ``records`` is empty.
        CorruptBatchError: The compression codec is unsupported.
    """
    if not records:
        raise ValueError("a batch needs at least one record")
    timestamps = [r[0] for r in records]
    if base_timestamp is None:
        base_timestamp = min(timestamps)
    max_timestamp = max(timestamps)
    payload = msgpack.packb(
        [[ts - base_timestamp, k, v, h or None] for ts, k, v, h in records],
        use_bin_type=True,
    )
    payload = _compress(compression, payload)
    count = len(records)
    tail = _TAIL.pack(
        compression & COMPRESSION_MASK, count - 1, base_timestamp, max_timestamp,
        producer_id, producer_epoch, base_sequence, count,
    )
    crc = _crc(payload, _crc(tail))
    return b"".join((
        _PREFIX.pack(base_offset, HEADER_SIZE - LOG_OVERHEAD + len(payload), leader_epoch),
        _MAGIC_CRC.pack(MAGIC_NATIVE, crc),
        tail,
        payload,
    ))


def decode_native_records(
    buf: bytes | bytearray | memoryview,
) -> list[tuple[int, int, bytes | None, bytes | None, dict[str, bytes]]]:
    """Decode the records of one native batch (decompressing if needed).

    Not for the hot path: it does per-record Python work.

    Args:
        buf: One complete native batch.

    Returns:
        ``(offset, timestamp, key, value, headers)`` per record; headers is always a dict.

    Raises:
        CorruptBatchError: The batch is not native, or the payload does not decode or does
            not match the header's record count.
    """
    h = parse_header(buf)
    if h.magic != MAGIC_NATIVE:
        raise CorruptBatchError(f"bad magic {h.magic}: not a native batch ({MAGIC_NATIVE})")
    payload = bytes(memoryview(buf)[HEADER_SIZE:h.size])
    payload = _decompress(h.compression, payload)
    try:
        items = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:
        raise CorruptBatchError(f"bad native payload: {exc}") from exc
    if not isinstance(items, list) or len(items) != h.record_count:
        raise CorruptBatchError(
            f"record count mismatch: header says {h.record_count}, payload has "
            f"{len(items) if isinstance(items, list) else 'no array'}"
        )
    out = []
    base, ts0 = h.base_offset, h.base_timestamp
    for i, rec in enumerate(items):
        if not isinstance(rec, list) or len(rec) != 4:
            raise CorruptBatchError(f"bad native record {i}: expected [ts_delta, key, value, headers]")
        delta, key, value, headers = rec
        out.append((base + i, ts0 + delta, key, value, headers or {}))
    return out


def iter_batches(
    buf: bytes | bytearray | memoryview, start: int = 0
) -> Iterator[tuple[int, BatchHeader]]:
    """Iterate ``(position, header)`` over concatenated batches (framing only, no CRC check).

    Stops at the first incomplete batch, or at a header whose length is impossible.

    Args:
        buf: Concatenated batches.
        start: Position of the first batch.
    """
    n = len(buf)
    pos = start
    unpack = _HEADER.unpack_from
    while n - pos >= HEADER_SIZE:
        h = BatchHeader._make(unpack(buf, pos))
        size = h.batch_length + LOG_OVERHEAD
        if size < HEADER_SIZE or pos + size > n:
            return
        yield pos, h
        pos += size
