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
#
# Both directions have a fast path and a reference path. The reference functions
# (``_encode_kafka_reference``, ``_decode_record_reference``) are the straightforward codec;
# the fast paths give exactly their results, and hand over to them whenever anything is
# off, so every error is raised by the reference code with its own type and message.


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


def _encode_kafka_reference(records) -> bytes:
    """:func:`encode_kafka` written out field by field: what the fast path must equal, and
    what raises when a record cannot be encoded."""
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


def _zigzag_bytes(z: int) -> bytes:
    """The varint bytes of an already zigzagged ``z`` (7 bits at a time, low group first)."""
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_CACHED = 1 << 14  # zigzag values below this (every 1- and 2-byte varint) are kept once made


class _ByZigzag(dict):
    """``self[z]``: the varint bytes of the zigzag value ``z``, made on first use."""

    def __missing__(self, z: int) -> bytes:
        b = _zigzag_bytes(z)
        if z < _CACHED:
            self[z] = b
        return b


class _ByLength(dict):
    """``self[n]``: the varint bytes of the non-negative ``n`` (zigzag ``2n``), made on first use."""

    def __missing__(self, n: int) -> bytes:
        b = _VZ[n << 1]
        if n < _CACHED >> 1:
            self[n] = b
        return b


# Filled as values turn up: at most 16384 + 8192 entries, about 2.2 MB if every one does.
_VZ = _ByZigzag()
_VU = _ByLength()


def encode_kafka(records: Iterable[tuple[int, bytes | None, bytes | None, Headers]]) -> bytes:
    """Encode ``(timestamp_delta, key, value, headers)`` records as Kafka v2 records.

    Args:
        records: Record ``i`` gets offset delta ``i``. ``headers`` is None, a mapping
            str -> bytes, or a sequence of ``(str, bytes | None)`` pairs (keys may repeat).

    Raises:
        TypeError, ValueError, AttributeError: A record is not of that shape (the error
            :func:`_encode_kafka_reference` raises for it).

    Runtime: O(bytes), Python work per record and per header: about 0.35 us per record
    with no key and no headers, a quarter of the field-by-field
    :func:`_encode_kafka_reference` (``storage/convert.py``'s docstring has the figures and
    the command). The varints of lengths and offset deltas below 8192 and of timestamp
    deltas within 8.2 s come from caches; those of deltas within 17 minutes are built
    inline (~0.2 us more), longer ones ~0.4 us more; headers add 0.15-0.35 us each. Each
    record is one ``bytes.join`` of its pieces, the batch one more. Records of another
    shape are encoded again by :func:`_encode_kafka_reference`, which raises.
    """
    if not isinstance(records, (list, tuple)):
        records = list(records)
    try:
        return _encode_kafka_fast(records)
    except Exception:  # a record of another shape or type: the reference raises its own error
        return _encode_kafka_reference(records)


def _encode_kafka_fast(records) -> bytes:
    """:func:`_encode_kafka_reference`'s bytes with no per-byte Python work: varints from the
    caches, a record's length taken from its joined body (so it counts what is written, as
    the reference's does). Raises where the reference raises, if not always the same error."""
    vz = _VZ
    vu = _VU
    join = b"".join
    parts: list = []
    i = 0
    for ts, key, value, headers in records:
        z = (ts << 1) ^ (ts >> 63)  # zigzag
        if z < _CACHED:
            tsb = vz[z]
        elif z < 1 << 21:  # 3 bytes: a delta under 17.5 minutes either way
            tsb = bytes(((z & 0x7F) | 0x80, (z >> 7 & 0x7F) | 0x80, z >> 14))
        else:
            tsb = _zigzag_bytes(z)
        if key is None:
            kl = b"\x01"  # zigzag(-1)
            key = b""
        else:
            kl = vu[len(key)]
        if value is None:
            vl = b"\x01"
            value = b""
        else:
            vl = vu[len(value)]
        # attributes, timestamp delta, offset delta, key, value, headers
        if headers is None:
            body = join((b"\x00", tsb, vu[i], kl, key, vl, value, b"\x00"))
        else:
            pairs = headers.items() if type(headers) is dict else list(
                headers.items() if isinstance(headers, Mapping) else (headers or ()))
            fields = [b"\x00", tsb, vu[i], kl, key, vl, value, vu[len(pairs)]]
            for hk, hv in pairs:
                hk = hk.encode("utf-8")
                if hv is None:
                    fields += (vu[len(hk)], hk, b"\x01")
                else:
                    fields += (vu[len(hk)], hk, vu[len(hv)], hv)
            body = join(fields)
        parts += (vu[len(body)], body)
        i += 1
    return join(parts)


class _Irregular(Exception):
    """Raised inside :func:`decode_kafka`'s fast path: let the reference parse this record."""


def _varint_reference(buf: bytes, pos: int, end: int) -> tuple[int, int]:
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


def _bytes_reference(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes | None, int]:
    size, pos = _varint_reference(buf, pos, end)
    if size < 0:
        if size != -1:
            raise CorruptBatchError(f"negative {what} length {size} at byte {pos}")
        return None, pos
    if pos + size > end:
        raise CorruptBatchError(f"{what} of {size} bytes at byte {pos} overruns its record")
    return buf[pos : pos + size], pos + size


def _decode_record_reference(buf: bytes, pos: int, n: int, i: int) -> tuple[tuple, int]:
    """Record ``i`` at ``buf[pos]`` parsed field by field, every bound checked: what
    :func:`decode_kafka`'s fast path must equal, and what raises for a malformed record."""
    size, pos = _varint_reference(buf, pos, n)
    end = pos + size
    if size < 1 or end > n:
        raise CorruptBatchError(f"record {i}: length {size} at byte {pos} does not fit in {n} bytes")
    pos += 1  # attributes: no record-level attribute is defined
    ts_delta, pos = _varint_reference(buf, pos, end)
    off_delta, pos = _varint_reference(buf, pos, end)
    key, pos = _bytes_reference(buf, pos, end, "key")
    value, pos = _bytes_reference(buf, pos, end, "value")
    nh, pos = _varint_reference(buf, pos, end)
    if nh < 0:
        raise CorruptBatchError(f"record {i}: negative header count {nh}")
    headers = {}
    for _ in range(nh):
        hk, pos = _bytes_reference(buf, pos, end, "header key")
        if hk is None:
            raise CorruptBatchError(f"record {i}: null header key")
        try:
            hk = hk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptBatchError(f"record {i}: header key is not UTF-8: {exc}") from None
        headers[hk], pos = _bytes_reference(buf, pos, end, "header value")
    if pos != end:
        raise CorruptBatchError(f"record {i}: {end - pos} bytes left over inside the record")
    return (off_delta, ts_delta, key, value, headers), pos


def _zigzag_at(buf: bytes, pos: int) -> tuple[int, int]:
    """The zigzag value of the varint at ``buf[pos]`` and the position after it; no bound but
    the buffer's (IndexError past it); :class:`_Irregular` past 10 bytes."""
    z = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return z, pos
        shift += 7
        if shift > 63:
            raise _Irregular


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

    Runtime: O(bytes), Python work per field: 0.7-0.8 us per record with no key and no
    headers, less than half the field-by-field :func:`_decode_record_reference` (figures in
    ``storage/convert.py``'s docstring); headers add 0.3-0.5 us each.

    Each record is read by a fast path with its varints inlined (1 and 2 bytes, timestamp
    deltas 3) that checks the record's bounds in total rather than at every field: it
    reads only within the buffer (IndexError past it), its position only moves forward
    (a negative length stops it), and it accepts a record only when that position ends
    exactly at the record's end, itself within the buffer -- so nothing it read lay outside
    the record, and it decoded what the reference would. Anything else (a negative or
    overrunning length, a varint over 10 bytes, a null or non-UTF-8 header key, bytes left
    over) happens only in a malformed record, which :func:`_decode_record_reference` then
    parses again to raise its error: hostile bytes cost at most one extra pass.
    """
    buf = bytes(payload)
    n = len(buf)
    pos = 0
    out: list = []
    append = out.append
    zigzag_at = _zigzag_at
    for i in range(count):
        start = pos
        try:
            # length (zigzag: even and >= 2 for a length >= 1)
            z = buf[pos]
            if z < 0x80:
                pos += 1
            else:
                b = buf[pos + 1]
                if b < 0x80:
                    z = (z & 0x7F) | (b << 7)
                    pos += 2
                else:
                    z, pos = zigzag_at(buf, pos)
            end = pos + (z >> 1)
            if z & 1 or end == pos or end > n:
                raise _Irregular
            pos += 1  # attributes
            # timestamp delta (3 bytes inline too: batches spanning seconds are common)
            z = buf[pos]
            if z < 0x80:
                pos += 1
            else:
                b = buf[pos + 1]
                if b < 0x80:
                    z = (z & 0x7F) | (b << 7)
                    pos += 2
                elif buf[pos + 2] < 0x80:
                    z = (z & 0x7F) | ((b & 0x7F) << 7) | (buf[pos + 2] << 14)
                    pos += 3
                else:
                    z, pos = zigzag_at(buf, pos)
            ts = (z >> 1) ^ -(z & 1)
            # offset delta
            z = buf[pos]
            if z < 0x80:
                pos += 1
            else:
                b = buf[pos + 1]
                if b < 0x80:
                    z = (z & 0x7F) | (b << 7)
                    pos += 2
                else:
                    z, pos = zigzag_at(buf, pos)
            off = (z >> 1) ^ -(z & 1)
            # key (zigzag 1 = length -1 = null; any other odd value is a negative length)
            z = buf[pos]
            if z < 0x80:
                pos += 1
            else:
                b = buf[pos + 1]
                if b < 0x80:
                    z = (z & 0x7F) | (b << 7)
                    pos += 2
                else:
                    z, pos = zigzag_at(buf, pos)
            if z & 1:
                if z != 1:
                    raise _Irregular
                key = None
            else:
                z >>= 1
                key = buf[pos : pos + z]
                pos += z
            # value
            z = buf[pos]
            if z < 0x80:
                pos += 1
            else:
                b = buf[pos + 1]
                if b < 0x80:
                    z = (z & 0x7F) | (b << 7)
                    pos += 2
                else:
                    z, pos = zigzag_at(buf, pos)
            if z & 1:
                if z != 1:
                    raise _Irregular
                value = None
            else:
                z >>= 1
                value = buf[pos : pos + z]
                pos += z
            # headers
            z = buf[pos]
            pos += 1
            headers = {}
            if z:
                if z > 0x7F:
                    z, pos = zigzag_at(buf, pos - 1)
                if z & 1:
                    raise _Irregular
                for _ in range(z >> 1):
                    z = buf[pos]
                    if z < 0x80:
                        pos += 1
                    else:
                        z, pos = zigzag_at(buf, pos)
                    if z & 1:  # a null or negative key length
                        raise _Irregular
                    z >>= 1
                    hk = buf[pos : pos + z].decode()
                    pos += z
                    z = buf[pos]
                    if z < 0x80:
                        pos += 1
                    else:
                        z, pos = zigzag_at(buf, pos)
                    if z & 1:
                        if z != 1:
                            raise _Irregular
                        headers[hk] = None
                    else:
                        z >>= 1
                        headers[hk] = buf[pos : pos + z]
                        pos += z
            if pos != end:
                raise _Irregular
            append((off, ts, key, value, headers))
        except (IndexError, UnicodeDecodeError, _Irregular):
            rec, pos = _decode_record_reference(buf, start, n, i)
            append(rec)
    if pos != n:
        raise CorruptBatchError(f"{n - pos} bytes after the last of {count} records")
    return out
