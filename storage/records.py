"""The records inside a batch payload (after decompression), for both magic values.

A record here is ``(timestamp_delta, key, value, headers)`` going in, relative to the batch's
``base_timestamp``; record ``i`` gets offset delta ``i``. Batch framing, CRC and compression
live in :mod:`storage.batch` and :mod:`storage.compression`.

Native records (magic 122): one msgpack array, one entry per record::

    [[timestamp_delta, key, value, headers], ...]
      int              bin|nil bin|nil map str->bin | nil

Kafka v2 records (magic 2): records back to back, each::

    length             varint   bytes that follow in this record
    attributes         int8     unused, 0
    timestamp_delta    varlong
    offset_delta       varint
    key_length         varint   -1 = null key
    key                bytes
    value_length       varint   -1 = null value
    value              bytes
    header_count       varint
    per header: key_length varint, key UTF-8, value_length varint (-1 = null), value

Every varint/varlong is zigzag encoded (``(n << 1) ^ (n >> 63)``) then written 7 bits at a
time, least significant group first, high bit set on all but the last byte (protobuf style).

Decoders raise :class:`CorruptBatchError` on anything malformed or truncated, never
IndexError.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import msgpack

from storage.errors import CorruptBatchError

__all__ = ["encode_native", "decode_native", "encode_kafka", "decode_kafka", "Headers"]

Headers = Mapping[str, "bytes | None"] | Sequence[tuple[str, "bytes | None"]] | None

_packb = msgpack.packb
_unpackb = msgpack.unpackb


# -- native (msgpack) ---------------------------------------------------------------


def encode_native(records: Sequence) -> bytes:
    """Pack ``(timestamp_delta, key, value, headers)`` records as one msgpack array.

    Records are packed exactly as given (an empty headers dict stays an empty map).

    Runtime: one ``msgpack.packb``, O(bytes).
    """
    return _packb(records, use_bin_type=True)


def decode_native(payload) -> tuple:
    """Unpack a native payload into a tuple of ``(timestamp_delta, key, value, headers)``.

    Only the outer shape is checked (a msgpack array); callers check the count and unpack
    each record, turning TypeError/ValueError into :class:`CorruptBatchError`.

    Raises:
        CorruptBatchError: The payload is not msgpack or not an array.

    Runtime: one ``msgpack.unpackb``, O(bytes).
    """
    try:
        recs = _unpackb(payload, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises assorted types
        raise CorruptBatchError(f"native payload undecodable: {exc}") from None
    if not isinstance(recs, tuple):
        raise CorruptBatchError(f"native payload is a {type(recs).__name__}, not an array of records")
    return recs


# -- Kafka v2 (varints) -------------------------------------------------------------


def _put_varint(out: bytearray, n: int) -> None:
    z = (n << 1) ^ (n >> 63)
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _put_bytes(out: bytearray, b: bytes | None) -> None:
    if b is None:
        out.append(1)  # zigzag(-1)
    else:
        _put_varint(out, len(b))
        out += b


def encode_kafka(records: Iterable[tuple[int, bytes | None, bytes | None, Headers]]) -> bytes:
    """Encode ``(timestamp_delta, key, value, headers)`` records as Kafka v2 records.

    Args:
        records: Record ``i`` gets offset delta ``i``. ``headers`` is None, a mapping
            str -> bytes, or a sequence of ``(str, bytes | None)`` pairs (keys may repeat).

    Runtime: O(bytes), Python work per record and per header.
    """
    out = bytearray()
    body = bytearray()
    for i, (ts_delta, key, value, headers) in enumerate(records):
        body.clear()
        body.append(0)  # attributes
        _put_varint(body, ts_delta)
        _put_varint(body, i)
        _put_bytes(body, key)
        _put_bytes(body, value)
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        pairs = list(pairs)
        _put_varint(body, len(pairs))
        for hk, hv in pairs:
            _put_bytes(body, hk.encode("utf-8"))
            _put_bytes(body, hv)
        _put_varint(out, len(body))
        out += body
    return bytes(out)


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptBatchError(f"varint longer than 10 bytes at byte {pos}")
    raise CorruptBatchError(f"truncated varint at byte {pos}")


def _bytes(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes | None, int]:
    size, pos = _varint(buf, pos, end)
    if size < 0:
        if size != -1:
            raise CorruptBatchError(f"negative {what} length {size} at byte {pos}")
        return None, pos
    if pos + size > end:
        raise CorruptBatchError(f"{what} of {size} bytes at byte {pos} overruns its record")
    return buf[pos : pos + size], pos + size


def decode_kafka(payload, count: int) -> list[tuple[int, int, bytes | None, bytes | None, dict]]:
    """Decode ``count`` Kafka v2 records.

    Args:
        payload: The decompressed records (exactly ``count`` of them, nothing after).
        count: The batch header's record_count.

    Returns:
        ``(offset_delta, timestamp_delta, key, value, headers)`` per record; headers is a
        dict str -> bytes (or None for a null header value); for a repeated header key the
        last value wins.

    Raises:
        CorruptBatchError: A record is truncated, overruns its length, leaves bytes over,
            a header key is not UTF-8, or bytes follow the last record.

    Runtime: O(bytes), Python work per field.
    """
    buf = bytes(payload)
    n = len(buf)
    pos = 0
    out = []
    for i in range(count):
        size, pos = _varint(buf, pos, n)
        end = pos + size
        if size < 1 or end > n:
            raise CorruptBatchError(f"record {i}: length {size} at byte {pos} does not fit in {n} bytes")
        pos += 1  # attributes: no record-level attribute is defined
        ts_delta, pos = _varint(buf, pos, end)
        off_delta, pos = _varint(buf, pos, end)
        key, pos = _bytes(buf, pos, end, "key")
        value, pos = _bytes(buf, pos, end, "value")
        nh, pos = _varint(buf, pos, end)
        if nh < 0:
            raise CorruptBatchError(f"record {i}: negative header count {nh}")
        headers = {}
        for _ in range(nh):
            hk, pos = _bytes(buf, pos, end, "header key")
            if hk is None:
                raise CorruptBatchError(f"record {i}: null header key")
            try:
                hk = hk.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorruptBatchError(f"record {i}: header key is not UTF-8: {exc}") from None
            headers[hk], pos = _bytes(buf, pos, end, "header value")
        if pos != end:
            raise CorruptBatchError(f"record {i}: {end - pos} bytes left over inside the record")
        out.append((off_delta, ts_delta, key, value, headers))
    if pos != n:
        raise CorruptBatchError(f"{n - pos} bytes after the last of {count} records")
    return out
