"""Every count and length of a Kafka request, checked against the bytes after it before kio reads it.

kio's reader (native code) reserves room for an array's declared item count before it reads
the first item: four bytes announcing 2**31 - 1 items of a 72-byte struct make it ask for
154 GB, and a failed allocation there aborts the whole process -- one request of a few bytes,
from any client that can connect, stopped the broker (``scripts/fuzz.py`` found it).  Every
array item takes at least a known number of bytes on the wire, so a count the bytes left
cannot hold is a lie: :func:`check_lengths` walks a request body with its kio schema --
counts and lengths only, nothing is built -- and refuses it (:class:`~.codec.MalformedRequest`,
the connection closes as for any request that does not decode) before kio sees it.  kio then
reserves at most about what the request's own bytes could hold.

What the walk reads, per field of the schema in order (flexible versions: compact lengths and
a tagged-field section per struct, whose tags holding arrays or structs are walked too)::

    int8/16/32/64, uint16, bool, float64, uuid, durations   fixed size: skipped
    string          INT16 length (-1 null) | compact: UVARINT length + 1 (0 null)
    bytes, records  INT32 length (-1 null) | compact: UVARINT length + 1 (0 null)
    array           INT32 count (-1 null)  | compact: UVARINT count + 1 (0 null);
                    count * least item size must fit in the bytes left
    struct          its fields in turn

Runtime: O(1) for an array whose items have a fixed size (a Fetch's partitions before v12),
O(items) Python steps otherwise -- a few microseconds per item, beside kio's own parse.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import types
import typing

_FIXED = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1,
          "float64": 8, "uuid": 16, "timedelta_i32": 4, "timedelta_i64": 8, "datetime_i64": 8, "error_code": 2}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

# op kinds
_SKIP, _STRING, _BYTES, _ARRAY, _STRUCT = range(5)


class LengthError(ValueError):
    """A count or length in the request runs past its end (``codec`` turns it into MalformedRequest)."""


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How to walk one struct: ``ops`` for its untagged fields in order, ``tagged`` ops by tag
    (flexible structs only), and the least bytes one takes on the wire."""

    ops: tuple
    flexible: bool
    tagged: dict
    least: int


def check_lengths(schema: type, buf: bytes, pos: int) -> None:
    """Walk the body of ``schema`` (a kio request class) at ``buf[pos:]``.

    Raises:
        LengthError: a count or length needs more bytes than follow it.
    """
    _walk(_plan(schema), buf, pos, len(buf))


def _walk(plan: _Plan, buf, pos: int, end: int) -> int:
    flexible = plan.flexible
    for kind, arg, name in plan.ops:
        if kind == _SKIP:
            pos += arg
        elif kind == _ARRAY:
            pos = _array(arg, name, flexible, buf, pos, end)
        elif kind == _STRUCT:
            pos = _walk(arg, buf, pos, end)
        else:
            pos = _sized(kind, name, flexible, buf, pos, end)
        if pos > end:
            raise LengthError(f"field {name} runs past the end of the request")
    if flexible:
        pos = _tagged(plan, buf, pos, end)
    return pos


def _sized(kind: int, name: str, flexible: bool, buf, pos: int, end: int) -> int:
    """Past a string or bytes field, its length checked."""
    if flexible:
        n, pos = read_uvarint(buf, pos, end, name)
        n -= 1
    elif kind == _STRING:
        _need(2, pos, end, name)
        (n,) = _I16.unpack_from(buf, pos)
        pos += 2
    else:
        _need(4, pos, end, name)
        (n,) = _I32.unpack_from(buf, pos)
        pos += 4
    if n > 0:
        _need(n, pos, end, name)
        pos += n
    return pos


def _array(item, name: str, flexible: bool, buf, pos: int, end: int) -> int:
    """Past an array, its count checked against the least size of its items."""
    if flexible:
        n, pos = read_uvarint(buf, pos, end, name)
        n -= 1
    else:
        _need(4, pos, end, name)
        (n,) = _I32.unpack_from(buf, pos)
        pos += 4
    if n <= 0:
        return pos
    kind, arg, least = item
    if n * least > end - pos:
        raise LengthError(f"array {name} claims {n} items of at least {least} bytes; {end - pos} bytes are left")
    if kind == _SKIP:
        return pos + n * arg
    if kind == _STRUCT:
        ops = arg.ops
        if arg.flexible and len(ops) == 1 and ops[0][0] == _SKIP:  # fixed fields, then tagged ones: mostly none
            size = ops[0][1]
            for _ in range(n):
                pos += size
                if pos < end and buf[pos] == 0:
                    pos += 1
                else:
                    pos = _tagged(arg, buf, pos, end)
            if pos > end:
                raise LengthError(f"array {name} runs past the end of the request")
            return pos
        for _ in range(n):
            pos = _walk(arg, buf, pos, end)
        return pos
    for _ in range(n):
        pos = _sized(kind, name, flexible, buf, pos, end)
    return pos


def _tagged(plan: _Plan, buf, pos: int, end: int) -> int:
    """Past a flexible struct's tagged fields; a known tag holding an array or struct is walked."""
    count, pos = read_uvarint(buf, pos, end, "tagged fields")
    for _ in range(count):
        tag, pos = read_uvarint(buf, pos, end, "a tag")
        size, pos = read_uvarint(buf, pos, end, "a tagged field's size")
        _need(size, pos, end, f"tagged field {tag}")
        op = plan.tagged.get(tag)
        if op is not None:
            kind, arg, name = op
            if kind == _ARRAY:
                _array(arg, name, True, buf, pos, pos + size)
            elif kind == _STRUCT:
                _walk(arg, buf, pos, pos + size)
        pos += size
        if pos > end:
            raise LengthError("tagged fields run past the end of the request")
    return pos


def _need(n: int, pos: int, end: int, name: str) -> None:
    if n > end - pos:
        raise LengthError(f"field {name} claims {n} bytes; {max(0, end - pos)} are left")


def read_uvarint(buf, pos: int, end: int, name: str) -> tuple[int, int]:
    """The unsigned varint at ``buf[pos]`` (at most 5 bytes, before ``end``) and the position after it."""
    value = shift = 0
    while True:
        if pos >= end or shift > 28:
            raise LengthError(f"a bad varint in {name}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


# -- plans ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _plan(schema: type) -> _Plan:
    hints = typing.get_type_hints(schema)
    flexible = bool(getattr(schema, "__flexible__", False))
    ops: list = []
    tagged: dict = {}
    least = 1 if flexible else 0  # the tagged-field count
    for f in dataclasses.fields(schema):
        op, size = _op(hints[f.name], f.metadata.get("kafka_type"), f.name, flexible)
        if flexible and "tag" in f.metadata:
            tagged[f.metadata["tag"]] = op
            continue
        least += size
        if op[0] == _SKIP and ops and ops[-1][0] == _SKIP:  # consecutive fixed fields: one skip
            ops[-1] = (_SKIP, ops[-1][1] + op[1], f"{ops[-1][2]}, {f.name}")
        else:
            ops.append(op)
    return _Plan(tuple(ops), flexible, tagged, least)


def _op(hint, kafka_type: str | None, name: str, flexible: bool) -> tuple[tuple, int]:
    """``((kind, arg, name), least bytes)`` of one field."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        item_args = typing.get_args(item)
        if typing.get_origin(item) in (typing.Union, types.UnionType) and type(None) in item_args:
            item = next(a for a in item_args if a is not type(None))
        (kind, arg, _), least = _op(item, kafka_type, name, flexible)
        return (_ARRAY, (kind, arg, max(1, least)), name), 1 if flexible else 4
    if dataclasses.is_dataclass(hint):
        plan = _plan(hint)
        if not plan.flexible and all(op[0] == _SKIP for op in plan.ops):  # fixed fields only: a fixed size
            return (_SKIP, plan.least, name), plan.least
        return (_STRUCT, plan, name), plan.least
    if kafka_type in _FIXED:
        return (_SKIP, _FIXED[kafka_type], name), _FIXED[kafka_type]
    if kafka_type == "string":
        return (_STRING, None, name), 1 if flexible else 2
    if kafka_type in ("bytes", "records"):
        return (_BYTES, None, name), 1 if flexible else 4
    raise TypeError(f"no length rule for field {name} of kafka type {kafka_type!r}")
