"""Record batches: the unit the broker validates, stores and serves.

A batch is a fixed 61-byte big-endian header (Kafka RecordBatch v2 layout) followed by a
payload. The broker touches only the header (and, for a produced uncompressed magic-2
batch, parses the records to refuse what no reader could read: :func:`validate_produced_batch`);
records are decoded by clients and tools.

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

``magic`` names the payload's record encoding (:mod:`storage.records`): 122 = native, a
msgpack array of ``[timestamp_delta, key, value, headers]``, record ``i`` at offset
``base_offset + i``; 2 = Kafka v2 varint records, each carrying its offset delta. Record
timestamps are ``base_timestamp + timestamp_delta`` (for magic 2 with the timestamp type bit
set, LogAppendTime, every record's timestamp is ``max_timestamp``). With compression the whole
records section is compressed (:mod:`storage.compression`: gzip, snappy, lz4, zstd). Control
batches (bit 5) hold transaction markers, not user records: :func:`decode_batches` skips them.

Because the CRC starts at ``attributes``, the broker can overwrite ``base_offset`` and
``leader_epoch`` (:func:`patch_batch`) without recomputing it.
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple

import crc32c as _crc32c

from storage.compression import (
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_MASK, COMPRESSION_NONE, COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD, compress, decompress,
)
from storage.errors import CorruptBatchError, InvalidRecordError, UnsupportedCodecError
from storage.records import _varint_reference, decode_native, encode_kafka, encode_native

__all__ = [
    "HEADER_SIZE", "LOG_OVERHEAD", "MAGIC_KAFKA", "MAGIC_NATIVE",
    "COMPRESSION_NONE", "COMPRESSION_GZIP", "COMPRESSION_SNAPPY", "COMPRESSION_LZ4",
    "COMPRESSION_ZSTD", "COMPRESSION_MASK", "TIMESTAMP_TYPE_BIT", "TRANSACTIONAL_BIT",
    "CONTROL_BIT", "BatchHeader", "CorruptBatchError", "parse_header", "validate_batch",
    "validate_produced_batch",
    "patch_batch", "build_native_batch", "encode_native_batch", "build_kafka_batch",
    "decode_native_records", "iter_batches", "walk",
    "set_base_offset", "DECODE_RATIO", "decode_limit",
]

HEADER_SIZE = 61
LOG_OVERHEAD = 12
MAGIC_KAFKA = 2
MAGIC_NATIVE = 122
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
        raise InvalidRecordError(f"record count mismatch: negative record_count {h.record_count}")
    if h.record_count > 0 and h.last_offset_delta != h.record_count - 1:
        raise InvalidRecordError(
            f"record count mismatch: record_count {h.record_count} but last_offset_delta "
            f"{h.last_offset_delta}"
        )
    check_crc(buf, h)
    return h


def check_crc(buf: bytes | bytearray | memoryview, h: BatchHeader) -> None:
    """Compare the CRC-32C of one whole batch ``buf`` with its parsed header's ``h.crc``.

    Raises:
        CorruptBatchError: They differ.
    """
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    actual = _crc(mv[_CRC_START:])
    if actual != h.crc:
        raise CorruptBatchError(f"bad crc: header 0x{h.crc:08x}, computed 0x{actual:08x}")


def validate_produced_batch(buf: bytes | bytearray | memoryview, max_size: int | None = None) -> BatchHeader:
    """:func:`validate_batch`, plus the rules a producer's batch must keep (Kafka's LogValidator
    for appends from clients), so that nothing a reader cannot read is acknowledged.

    On top of framing, magic and CRC: the codec is defined (0-4); ``record_count >= 1`` and
    ``last_offset_delta == record_count - 1`` (so the offsets the batch takes are exactly its
    records); it is not a control batch (the broker writes those) and does not claim
    LogAppendTime (every topic uses CreateTime, and only a broker may stamp append times);
    ``max_timestamp >= base_timestamp``. An uncompressed payload's first bytes must agree with
    its header: a native payload's msgpack array header counts ``record_count`` records, a
    magic-2 payload starts with a record length that fits in the payload.  Records are never
    decoded here, of either magic, compressed or not: they are the producer's to get right
    (the CRC the producer computed covers them), and a reader reports an undecodable batch with
    its offset.  Parsing every magic-2 record cost ~2.8 us a record on the broker's loop and
    halved what a Kafka producer could write (docs/architecture.md §9).

    Runtime: what :func:`validate_batch` costs (one header unpack, one CRC-32C) plus a few
    integer compares, whatever the batch holds.

    Raises:
        UnsupportedCodecError: The codec id is 5, 6 or 7.
        InvalidRecordError: A rule above is broken; the message names it.
        CorruptBatchError: As :func:`validate_batch` (framing, magic, CRC, size).
    """
    h = validate_batch(buf, max_size)
    codec = h.attributes & COMPRESSION_MASK
    if codec > COMPRESSION_ZSTD:
        raise UnsupportedCodecError(f"undefined compression codec {codec} (attributes bits 0-2): defined are 0-4")
    if h.record_count < 1:
        raise InvalidRecordError(
            f"batch claims {h.record_count} records (last_offset_delta {h.last_offset_delta}): a batch holds at least one"
        )
    if h.attributes & CONTROL_BIT:
        raise InvalidRecordError("control batches (attributes bit 5) are written by the broker, never produced")
    if h.attributes & TIMESTAMP_TYPE_BIT:
        raise InvalidRecordError("the LogAppendTime bit (attributes bit 3) is the broker's; every topic uses CreateTime")
    if h.max_timestamp < h.base_timestamp:
        raise InvalidRecordError(f"max_timestamp {h.max_timestamp} is before base_timestamp {h.base_timestamp}")
    if h.magic == MAGIC_NATIVE and codec == COMPRESSION_NONE:
        count = _native_array_length(buf, HEADER_SIZE)
        if count != h.record_count:
            raise InvalidRecordError(f"native payload holds an array of {count} records but record_count is {h.record_count}"
                                     if count is not None else "native payload does not start with a msgpack array")
    if h.magic == MAGIC_KAFKA and codec == COMPRESSION_NONE:
        try:  # the first record's zigzag varint length (at most 10 bytes: O(1))
            length, start = _varint_reference(buf, HEADER_SIZE, min(len(buf), HEADER_SIZE + 10))
        except CorruptBatchError:
            raise InvalidRecordError("magic-2 payload does not start with a record length that fits in it") from None
        if not 0 < length <= len(buf) - start:
            raise InvalidRecordError(f"magic-2 payload's first record claims {length} bytes; the payload holds "
                                     f"{len(buf) - start} after its length")
    return h


def _native_array_length(buf, pos: int) -> int | None:
    """The length of the msgpack array starting at ``buf[pos]`` (its header only: O(1)), or None."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    if 0x90 <= first <= 0x9F:  # fixarray
        return first & 0x0F
    if first == 0xDC and pos + 3 <= len(buf):  # array 16
        return int.from_bytes(buf[pos + 1 : pos + 3], "big")
    if first == 0xDD and pos + 5 <= len(buf):  # array 32
        return int.from_bytes(buf[pos + 1 : pos + 5], "big")
    return None


def patch_batch(buf: bytearray | memoryview, base_offset: int, leader_epoch: int) -> None:
    """Overwrite ``base_offset`` and ``leader_epoch`` in place (the CRC stays valid).

    Args:
        buf: A writable buffer holding the batch at position 0.
        base_offset: Offset to assign to the first record.
        leader_epoch: Epoch of the leader appending the batch.
    """
    _BASE_OFFSET.pack_into(buf, 0, base_offset)
    _LEADER_EPOCH.pack_into(buf, 12, leader_epoch)


def _frame(
    magic: int, payload: bytes, count: int, base_timestamp: int, max_timestamp: int,
    compression: int, producer_id: int, producer_epoch: int, base_sequence: int,
    base_offset: int, leader_epoch: int,
) -> bytes:
    """Compress ``payload`` and put the header (with its CRC) in front of it."""
    payload = compress(compression, payload, lz4_linked_blocks=magic == MAGIC_NATIVE)
    tail = _TAIL.pack(
        compression & COMPRESSION_MASK, count - 1, base_timestamp, max_timestamp,
        producer_id, producer_epoch, base_sequence, count,
    )
    crc = _crc(payload, _crc(tail))
    return b"".join((
        _PREFIX.pack(base_offset, HEADER_SIZE - LOG_OVERHEAD + len(payload), leader_epoch),
        _MAGIC_CRC.pack(magic, crc),
        tail,
        payload,
    ))


def encode_native_batch(
    records, base_timestamp: int, max_timestamp: int, compression: int = COMPRESSION_NONE,
    producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
) -> bytes:
    """Encode one native batch from records already relative to ``base_timestamp``.

    The producer's path: records are packed as given, with no per-record Python work.
    (Native LZ4 payloads keep python-lz4's linked blocks, as native producers always wrote.)

    Args:
        records: A non-empty sequence of ``(timestamp_delta, key, value, headers)``; key/value
            ``bytes | None``, headers ``dict[str, bytes] | None``.
        base_timestamp: ms since the epoch; record i has ``base_timestamp + delta_i``.
        max_timestamp: The largest record timestamp.
        compression: A ``COMPRESSION_*`` codec.
        producer_id: Idempotent producer id, -1 for none.
        producer_epoch: Producer epoch, -1 for none.
        base_sequence: Sequence number of the first record, -1 for none.

    Returns:
        The batch bytes (base_offset 0, leader_epoch -1: the broker fills them).

    Runtime: one msgpack pack of the records, O(bytes).
    """
    return _frame(MAGIC_NATIVE, encode_native(records), len(records), base_timestamp, max_timestamp,
                  compression, producer_id, producer_epoch, base_sequence, 0, -1)


def _build(magic, encode, records, base_offset, base_timestamp, compression=COMPRESSION_NONE,
           producer_id=-1, producer_epoch=-1, base_sequence=-1, leader_epoch=-1) -> bytes:
    if not records:
        raise ValueError("a batch needs at least one record")
    max_timestamp = max(r[0] for r in records)
    payload = encode([(ts - base_timestamp, k, v, h or None) for ts, k, v, h in records])
    return _frame(magic, payload, len(records), base_timestamp, max_timestamp, compression,
                  producer_id, producer_epoch, base_sequence, base_offset, leader_epoch)


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
    """Build one native (magic 122) batch from records with absolute timestamps.

    Args:
        records: ``(timestamp_ms, key, value, headers)`` tuples; key/value may be None,
            headers may be None or a dict of str -> bytes (empty dict is stored as nil).
        base_offset: Offset of the first record (the broker overwrites it).
        base_timestamp: Defaults to the smallest record timestamp.
        compression: One of the ``COMPRESSION_*`` codecs.
        producer_id: Idempotent producer id, -1 for none.
        producer_epoch: Producer epoch, -1 for none.
        base_sequence: Sequence number of the first record, -1 for none.
        leader_epoch: Leader epoch (the broker overwrites it).

    Returns:
        The complete batch bytes with a valid CRC.

    Raises:
        ValueError: ``records`` is empty, or the codec is unknown.
    """
    if base_timestamp is None and records:
        base_timestamp = min(r[0] for r in records)
    return _build(MAGIC_NATIVE, encode_native, records, base_offset, base_timestamp, compression,
                  producer_id, producer_epoch, base_sequence, leader_epoch)


def build_kafka_batch(records: list[tuple], base_offset: int = 0, base_timestamp: int | None = None,
                      **kw) -> bytes:
    """Build one Kafka RecordBatch v2 (magic 2), as a Kafka producer would send it.

    Takes the arguments of :func:`build_native_batch`, with two differences: headers may also
    be a list of ``(str, bytes | None)`` pairs (a key may repeat), and ``base_timestamp``
    defaults to the first record's timestamp, as Kafka's producer does (later records may
    have negative deltas). Snappy is written in xerial framing, LZ4 frames with independent
    blocks; the timestamp type is CreateTime.
    """
    if base_timestamp is None and records:
        base_timestamp = records[0][0]
    return _build(MAGIC_KAFKA, encode_kafka, records, base_offset, base_timestamp, **kw)


def set_base_offset(batch: bytes, base_offset: int) -> bytes:
    """Return ``batch`` with its base_offset replaced (what a broker does; the CRC stays valid)."""
    return _BASE_OFFSET.pack(base_offset) + batch[8:]


def _check_count(got: int, want: int) -> None:
    if got != want:
        raise CorruptBatchError(f"record count mismatch: header says {want}, payload has {got} records")


DECODE_RATIO = 64
"""A broker decodes a stored batch's records only up to ``DECODE_RATIO * max_message_bytes``
uncompressed bytes (:func:`decode_limit`): list_offsets by timestamp, the cleaner, and the
loads of ``__consumer_offsets`` and the metadata log. A batch past that is treated as one it
cannot decode record by record (kept whole, answered by its base offset, skipped with an
ERROR line) instead of costing the broker gigabytes for a few KiB on disk."""


def decode_limit(max_message_bytes: int) -> int:
    """The most bytes a broker lets one stored batch of a log decompress to (see DECODE_RATIO)."""
    return DECODE_RATIO * max_message_bytes


def decode_native_records(
    buf: bytes | bytearray | memoryview, max_size: int | None = None,
) -> list[tuple[int, int, bytes | None, bytes | None, dict[str, bytes]]]:
    """Decode the records of one native batch (decompressing if needed).

    Not for the hot path: it checks every record's shape.

    Args:
        buf: One complete native batch.
        max_size: If given, the most bytes the payload may decompress to (and about the most
            it allocates for that); the broker passes :func:`decode_limit`. None: no bound
            (tools and tests over trusted data).

    Returns:
        ``(offset, timestamp, key, value, headers)`` per record; headers is always a dict.

    Raises:
        DecompressionLimitError: The payload decompresses past ``max_size``
            (a :class:`CorruptBatchError`).
        CorruptBatchError: The batch is not native, or the payload does not decode or does
            not match the header's record count.
    """
    h = parse_header(buf)
    if h.magic != MAGIC_NATIVE:
        raise CorruptBatchError(f"bad magic {h.magic}: not a native batch ({MAGIC_NATIVE})")
    items = decode_native(decompress(h.compression, memoryview(buf)[HEADER_SIZE:h.size], max_size))
    _check_count(len(items), h.record_count)
    out = []
    base, ts0 = h.base_offset, h.base_timestamp
    for i, rec in enumerate(items):
        if not isinstance(rec, tuple) or len(rec) != 4:
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


def walk(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Walk the batch headers of a fetched buffer without decoding payloads.

    Returns:
        ``(next_offset, complete_bytes)``: the offset after the last complete batch (-1 if
        there is none) and how many leading bytes form whole batches.

    Runtime: O(number of batches).
    """
    nxt, end = -1, 0
    for pos, h in iter_batches(buf):
        nxt, end = h.next_offset, pos + h.size
    return nxt, end
