"""storage.records' Kafka v2 record codec (magic 2) against a straightforward reference kept here.

``encode_kafka`` and ``decode_kafka`` run fast paths (varint caches, inlined varints, bounds
checked per record in total) and hand over to the module's field-by-field code when anything
is off. The reference below is written independently, one field at a time with every bound
checked where it is read, with the messages ``decode_kafka`` has always raised. Every encoding
must be byte-identical to it; every decode must give the same records or raise a
CorruptBatchError with the same message, whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from storage import records as records_module
from storage.errors import CorruptBatchError
from storage.records import decode_kafka, encode_kafka

# -- the reference codec --------------------------------------------------------------------


def ref_varint(n: int) -> bytes:
    """Zigzag, then 7 bits a byte, least significant group first."""
    z = (n << 1) ^ (n >> 63)
    groups = []
    while True:
        low, z = z & 0x7F, z >> 7
        if not z:
            return bytes(groups + [low])
        groups.append(low | 0x80)


def ref_field(b) -> bytes:
    return b"\x01" if b is None else ref_varint(len(b)) + bytes(b)


def ref_encode(recs) -> bytes:
    out = []
    for i, (ts, key, value, headers) in enumerate(recs):
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        body = b"\x00" + ref_varint(ts) + ref_varint(i) + ref_field(key) + ref_field(value) + ref_varint(len(pairs))
        body += b"".join(ref_field(k.encode("utf-8")) + ref_field(v) for k, v in pairs)
        out += [ref_varint(len(body)), body]
    return b"".join(out)


class _Cursor:
    """Reads ``buf`` from ``pos``, never past the ``end`` each read is given."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def varint(self, end: int) -> int:
        z = 0
        for group in range(10):
            if self.pos >= end:
                raise CorruptBatchError(f"truncated varint at byte {self.pos}")
            b = self.buf[self.pos]
            self.pos += 1
            z |= (b & 0x7F) << (7 * group)
            if b < 0x80:
                return (z >> 1) ^ -(z & 1)
        raise CorruptBatchError(f"varint longer than 10 bytes at byte {self.pos}")

    def field(self, end: int, what: str) -> bytes | None:
        size = self.varint(end)
        if size == -1:
            return None
        if size < 0:
            raise CorruptBatchError(f"negative {what} length {size} at byte {self.pos}")
        if self.pos + size > end:
            raise CorruptBatchError(f"{what} of {size} bytes at byte {self.pos} overruns its record")
        self.pos += size
        return self.buf[self.pos - size : self.pos]


def ref_decode(payload, count: int) -> list:
    c = _Cursor(bytes(payload))
    total = len(c.buf)
    out = []
    for i in range(count):
        size = c.varint(total)
        end = c.pos + size
        if size < 1 or end > total:
            raise CorruptBatchError(f"record {i}: length {size} at byte {c.pos} does not fit in {total} bytes")
        c.pos += 1  # attributes
        ts, off = c.varint(end), c.varint(end)
        key, value = c.field(end, "key"), c.field(end, "value")
        count_h = c.varint(end)
        if count_h < 0:
            raise CorruptBatchError(f"record {i}: negative header count {count_h}")
        headers = {}
        for _ in range(count_h):
            name = c.field(end, "header key")
            if name is None:
                raise CorruptBatchError(f"record {i}: null header key")
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorruptBatchError(f"record {i}: header key is not UTF-8: {exc}") from None
            headers[name] = c.field(end, "header value")
        if c.pos != end:
            raise CorruptBatchError(f"record {i}: {end - c.pos} bytes left over inside the record")
        out.append((off, ts, key, value, headers))
    if c.pos != total:
        raise CorruptBatchError(f"{total - c.pos} bytes after the last of {count} records")
    return out


def outcome(decode, payload, count):
    """What ``decode`` does with the bytes: its records, or the CorruptBatchError's message."""
    try:
        return "records", decode(payload, count)
    except CorruptBatchError as exc:
        return type(exc), str(exc)


def assert_decodes_alike(payload, count):
    assert outcome(decode_kafka, payload, count) == outcome(ref_decode, payload, count)


# -- strategies -----------------------------------------------------------------------------

# lengths either side of every varint width (1, 2, 3 bytes) and of the encoder's caches
_EDGE_LENGTHS = [0, 1, 63, 64, 65, 127, 128, 8191, 8192, 8193, 16383, 16384]
_bytes = st.one_of(
    st.none(), st.binary(max_size=40), st.sampled_from(_EDGE_LENGTHS).map(lambda n: b"\xab" * n),
)
_timestamps = st.one_of(  # deltas either side of 1-, 2-, 3- and 10-byte varints (and past 64 bits)
    st.integers(-200, 200), st.integers(-2**64, 2**64),
    st.sampled_from([-2**63, 2**63 - 1, -2**13, 2**13 - 1, 2**13, -2**20, -2**20 - 1, 2**20 - 1, 2**20]),
)
_header_values = st.one_of(st.none(), st.binary(max_size=10), st.sampled_from([b"\x00" * 64, b"\x01" * 200]))
_headers = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=8), _header_values, max_size=3),
    st.lists(st.tuples(st.text(max_size=70), _header_values), max_size=3),  # keys may repeat
    st.lists(st.tuples(st.sampled_from(["a", "é", ""]), _header_values), max_size=3).map(tuple),
)
_records = st.lists(st.tuples(_timestamps, _bytes, _bytes, _headers), min_size=0, max_size=12)


def _expected(recs) -> list:
    return [(i, ts, k, v, dict(h.items() if isinstance(h, Mapping) else h or ()))
            for i, (ts, k, v, h) in enumerate(recs)]


# -- encoding -------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(recs=_records)
def test_encode_equals_reference_and_round_trips(recs):
    data = encode_kafka(recs)
    assert type(data) is bytes
    assert data == ref_encode(recs)
    assert decode_kafka(data, len(recs)) == ref_decode(data, len(recs))
    if all(-2**63 <= r[0] < 2**63 for r in recs):  # a timestamp delta past 64 bits does not come back
        assert decode_kafka(data, len(recs)) == _expected(recs)


def test_encode_many_records_and_big_values():
    """Offset deltas past the caches, 3- and 4-byte lengths, a 10-byte timestamp varint."""
    recs = [(i * 1_000_003 - 2**40, None if i % 3 else b"k%d" % i, b"v" * (i % 200), None) for i in range(20_000)]
    recs += [((i - 10_000) * 150, None, b"", None) for i in range(20_000)]  # 1- to 3-byte timestamp deltas
    recs += [(2**63 - 1, b"", b"\x00" * (1 << 21), {"big": b"h" * 20_000}), (-2**63, None, b"\x01" * 300_000, [])]
    data = encode_kafka(recs)
    assert data == ref_encode(recs)
    assert decode_kafka(data, len(recs)) == _expected(recs)


def test_encode_takes_any_iterable_and_other_buffers():
    recs = [(True, None, b"", ""), (False, bytearray(b"ab"), memoryview(b"cd"), (("k", bytearray(b"v")),)),
            (3, b"k", None, {}), (-1, None, None, [("a", None), ("a", b"z")])]
    assert encode_kafka(iter(recs)) == encode_kafka(tuple(recs)) == ref_encode(recs)
    assert encode_kafka([]) == encode_kafka(iter(())) == b""


# What the codec raised before the fast path, word for word (a converted batch names it).
_BAD_RECORDS = [
    ([5], TypeError, "cannot unpack non-iterable int object"),
    ([(0, None, b"v")], ValueError, "not enough values to unpack (expected 4, got 3)"),
    ([(0.5, None, b"v", None)], TypeError, "unsupported operand type(s) for <<: 'float' and 'int'"),
    ([(1.0, None, b"v", None)], TypeError, "unsupported operand type(s) for <<: 'float' and 'int'"),
    ([(None, None, b"v", None)], TypeError, "unsupported operand type(s) for <<: 'NoneType' and 'int'"),
    ([(0, "str key", b"v", None)], TypeError, "can't concat str to bytearray"),
    ([(0, None, "str value", None)], TypeError, "can't concat str to bytearray"),
    ([(0, 7, b"v", None)], TypeError, "object of type 'int' has no len()"),
    ([(0, (1, 2), b"v", None)], TypeError, "can't concat tuple to bytearray"),
    ([(0, None, b"v", {b"bin key": b"x"})], AttributeError, "'bytes' object has no attribute 'encode'"),
    ([(0, None, b"v", {"k": "str"})], TypeError, "can't concat str to bytearray"),
    ([(0, None, b"v", {"k": 5})], TypeError, "object of type 'int' has no len()"),
    ([(0, None, b"v", [("a",)])], ValueError, "not enough values to unpack (expected 2, got 1)"),
    ([(0, None, b"v", "ab")], ValueError, "not enough values to unpack (expected 2, got 1)"),
    ([(0, None, b"v", 5)], TypeError, "'int' object is not iterable"),
    ([(0, None, b"v", {"\ud800": b"x"})], UnicodeEncodeError,
     "'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not allowed"),
]


@pytest.mark.parametrize(("recs", "error", "message"), _BAD_RECORDS)
def test_encode_errors_are_unchanged(recs, error, message):
    good = [(0, b"k", b"v", {"h": b"x"})] * 3
    for batch in (recs, good + recs, recs + good, iter(good + recs)):
        with pytest.raises(error) as info:
            encode_kafka(batch)
        assert type(info.value) is error and str(info.value) == message


def test_varint_caches_hold_what_they_should():
    encode_kafka([(ts, b"k" * n, None, None) for ts, n in ((2**40, 9000), (-5, 20_000), (2**13, 70))])
    for z, b in records_module._VZ.items():
        assert z < 1 << 14 and b == ref_varint((z >> 1) ^ -(z & 1))
    for n, b in records_module._VU.items():
        assert n < 1 << 13 and b == ref_varint(n)


# -- decoding -------------------------------------------------------------------------------


def raw_varint(z: int, padding: int = 0) -> bytes:
    """An already zigzagged ``z`` as a varint, with ``padding`` redundant zero groups (a
    longer encoding of the same value, which a decoder must take)."""
    groups = []
    while True:
        groups.append(z & 0x7F)
        z >>= 7
        if not z:
            break
    groups += [0] * padding
    return bytes([g | 0x80 for g in groups[:-1]] + groups[-1:])


def _mostly(usual, *unusual, times: int = 12):
    """``usual`` ``times`` times as often as each of ``unusual``: most crafted records are
    well formed, and most malformed ones are wrong in one place only."""
    return st.sampled_from([usual] * times + list(unusual))


_padding = _mostly(0, 1, 1, 8, 8, 9, 10, times=150)  # 9, 10 and 11 bytes for a value under 128
_big_zigzags = st.sampled_from([2**14 - 1, 2**14, 2**64 - 1, 2**64, 2**70 - 1])  # the last two: 10 bytes
_cut = b"\x80"  # a lone continuation byte


@st.composite
def _varint(draw, z=None):
    """A varint of ``z`` (or of any value), sometimes padded to a longer form, rarely cut."""
    if draw(_mostly(False, True, times=60)):
        return _cut
    if z is None:
        z = draw(_big_zigzags) if draw(_mostly(False, True, times=8)) else draw(st.integers(0, 2**20))
    return raw_varint(z, draw(_padding))


@st.composite
def _field(draw, text=False):
    """A length-prefixed field: mostly well formed (its bytes, or null), else a negative or
    wrong length."""
    if text:
        data = draw(st.text(max_size=4)).encode()
    else:
        data = draw(st.binary(max_size=6) | st.sampled_from([b"x" * 64, b"y" * 200]))
    if text and draw(_mostly(False, True)):
        data = b"\xff" + data  # not UTF-8
    z = draw(_mostly(None, 1, 3, 5, 2**64 + 1, "short", "long", times=30))
    if z is None:
        z = 2 * len(data)
    elif z == 1:
        data = b""
    elif isinstance(z, str):
        z = 2 * (len(data) + (1 if z == "long" else -1)) if data or z == "long" else 1
    return draw(_varint(z)) + data


@st.composite
def _record_body(draw):
    """Attributes, timestamp and offset deltas, key, value, header count, headers, then
    perhaps bytes over."""
    headers = draw(st.lists(st.tuples(_field(text=True), _field()), max_size=3))
    count = len(headers) + draw(_mostly(0, -1, 1, 2**63, -len(headers) - 1, -len(headers) - 2, times=40))
    return b"".join([
        draw(st.sampled_from([b"\x00", b"\x07"])), draw(_varint()), draw(_varint()), draw(_field()), draw(_field()),
        draw(_varint((count << 1) ^ (count >> 63))), *(k + v for k, v in headers),
        draw(_mostly(b"", b"\x00", b"\x01\x02", times=30)),
    ])


@st.composite
def _crafted(draw):
    """Crafted records, each under a length prefix that is right, a little off, negative or
    anything; cut short or not; then a count."""
    payload = b""
    records = draw(st.integers(1, 3))
    for _ in range(records):
        body = draw(_record_body())
        size = len(body) + draw(_mostly(0, -1, 1, -len(body), -len(body) - 1, -len(body) - 2, 2**40, times=40))
        payload += draw(_varint((size << 1) ^ (size >> 63))) + body
    cut = draw(_mostly(0, 1, 2, 3, times=20))
    return payload[: len(payload) - cut], records + draw(_mostly(0, -1, 1, -records, times=20))


@settings(max_examples=500, deadline=None)
@given(case=_crafted())
@example(case=(b"\x04\x00\x00\x00\x80\x00", 1))  # a padded header count of 0
@example(case=(b"\x08\x00\x00\x00\x01\x01\x02\x03", 1))  # a negative header count after null key and value
def test_crafted_records_decode_as_the_reference(case):
    assert_decodes_alike(*case)


@settings(max_examples=600, deadline=None)
@given(recs=_records.filter(bool), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 5), extra=st.integers(-1, 1))
def test_damaged_encodings_decode_as_the_reference(recs, edits, cut, extra):
    data = bytearray(encode_kafka(recs))
    for where, byte in edits:
        data[where % len(data)] = byte
    data = bytes(data[: len(data) - cut])
    assert_decodes_alike(data, len(recs) + extra)
    assert_decodes_alike(memoryview(data), len(recs))


@settings(max_examples=600, deadline=None)
@given(data=st.binary(max_size=80), count=st.integers(-1, 6))
def test_garbage_decodes_as_the_reference(data, count):
    assert_decodes_alike(data, count)


# One record per way to be wrong, each with the message decode_kafka has always given.
_GOOD = ref_encode([(7, b"k", b"value", {"h": b"x"})])  # 20 00 0e 00 02 6b 0a value 02 02 68 02 78
_MALFORMED = [
    (b"", 1, "truncated varint at byte 0"),
    (b"\x80", 1, "truncated varint at byte 1"),
    (b"\xff" * 10 + b"\x01", 1, "varint longer than 10 bytes at byte 10"),
    (b"\x00", 1, "record 0: length 0 at byte 1 does not fit in 1 bytes"),
    (b"\x03\x00", 1, "record 0: length -2 at byte 1 does not fit in 2 bytes"),
    (_GOOD[:-1], 1, "record 0: length 16 at byte 1 does not fit in 16 bytes"),
    (b"\x02\x00", 1, "truncated varint at byte 2"),
    (b"\x08\x00\x00\x00\x03", 1, "negative key length -2 at byte 5"),
    (b"\x08\x00\x00\x00\x02", 1, "key of 1 bytes at byte 5 overruns its record"),
    (b"\x0a\x00\x00\x00\x01\x05", 1, "negative value length -3 at byte 6"),
    (b"\x0c\x00\x00\x00\x01\x01\x03", 1, "record 0: negative header count -2"),
    (b"\x10\x00\x00\x00\x01\x01\x02\x01\x01", 1, "record 0: null header key"),
    (b"\x12\x00\x00\x00\x01\x01\x02\x02\xff\x01", 1,
     "record 0: header key is not UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    (b"\x12\x00\x00\x00\x01\x01\x02\x02a\x05", 1, "negative header value length -3 at byte 10"),
    (b"\x14\x00\x00\x00\x01\x01\x02\x02a\x04\x00", 1, "header value of 2 bytes at byte 10 overruns its record"),
    (b"\x12\x00\x00\x00\x01\x01\x00\x00\x00\x00", 1, "record 0: 3 bytes left over inside the record"),
    # complete records, but for one field (nothing else would stop the reading)
    (b"\x0d\x00\x00\x00\x01\x01\x00", 1, "record 0: length -7 at byte 1 does not fit in 7 bytes"),
    (b"\x0c\x00\x00\x00\x03\x01\x00", 1, "negative key length -2 at byte 5"),
    (b"\x0c\x00\x00\x00\x01\x03\x00", 1, "negative value length -2 at byte 6"),
    (b"\x12\x00\x00\x00\x01\x01\x02\x02a\x03", 1, "negative header value length -2 at byte 10"),
    (b"\x20\x00" + b"\x80" * 10 + b"\x00\x00\x01\x01\x00", 1, "varint longer than 10 bytes at byte 12"),
    (_GOOD + b"\x00", 1, "1 bytes after the last of 1 records"),
    (_GOOD, 0, "17 bytes after the last of 0 records"),
    (_GOOD * 2, 3, "truncated varint at byte 34"),
]


@pytest.mark.parametrize(("data", "count", "message"), _MALFORMED)
def test_malformed_records_raise_their_message(data, count, message):
    with pytest.raises(CorruptBatchError) as info:
        decode_kafka(data, count)
    assert str(info.value) == message
    assert outcome(ref_decode, data, count) == (CorruptBatchError, message)
    assert_decodes_alike(_GOOD + data, count + 1)  # after a good record, the same (record 1, shifted bytes)
