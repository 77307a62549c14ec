"""Kafka's wire format, with kio's schemas: request headers and bodies in, responses out.

A Kafka message on the wire is ``INT32 size`` then the message (:mod:`.framer` cuts
them).  A request is a header then a body::

    request header v1   api_key INT16, api_version INT16, correlation_id INT32,
                        client_id NULLABLE_STRING
    request header v2   v1 + tagged fields            (flexible versions of the API)
    response header v0  correlation_id INT32
    response header v1  v0 + tagged fields            (flexible versions, except
                                                       ApiVersions: always v0, KIP-511)

Whether a version is flexible comes from kio's generated schema of that (key, version).
Bodies are decoded into kio's frozen dataclasses and encoded from them (kio's native
reader and writer).  Handlers answer with plain dicts of field values
(:func:`build`): one dict shape for every version of an API, fields the version lacks
are left out, fields the dict lacks get their zero value, and Kafka-typed fields are
converted (ints to :class:`ErrorCode`, milliseconds to timedeltas, hex strings to UUIDs).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import struct
import types
import typing
import uuid
from typing import Any

from kio.index import UnknownAPIKey, UnknownEntity, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode as KioErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import TZAware, i32Timedelta, i64Timedelta

from zbroker.frontends.kafka.lengths import LengthError, check_lengths, read_uvarint

API_VERSIONS_KEY = 18
_HEADER = struct.Struct(">hhi")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_ERROR_CODES = {int(e.value): e for e in KioErrorCode}
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)


class MalformedRequest(ValueError):
    """The peer sent bytes that are not a request of the API and version it names."""


@dataclasses.dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    size: int  # bytes of the header: the body starts there


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """``(api_key, api_version, correlation_id)`` of a request, read before anything else:
    enough to answer even a request this broker cannot decode."""
    if len(frame) < _HEADER.size:
        raise MalformedRequest(f"a request of {len(frame)} bytes is shorter than a request header")
    return _HEADER.unpack_from(frame, 0)


@functools.lru_cache(maxsize=None)
def request_schema(api_key: int, version: int) -> type | None:
    """kio's request class of (key, version), or None if kio has none."""
    try:
        return load_request_schema(api_key, version)
    except (UnknownAPIKey, UnknownEntity):
        return None


@functools.lru_cache(maxsize=None)
def response_schema(api_key: int, version: int) -> type:
    return load_response_schema(api_key, version)


def decode_header(frame: bytes, flexible: bool) -> RequestHeader:
    api_key, version, cid = peek_header(frame)
    pos = _HEADER.size
    if len(frame) < pos + 2:
        raise MalformedRequest("the request header ends before its client_id")
    (length,) = _INT16.unpack_from(frame, pos)
    pos += 2
    client_id = None
    if length >= 0:
        if pos + length > len(frame):
            raise MalformedRequest(f"client_id claims {length} bytes; the request has {len(frame) - pos} left")
        client_id = frame[pos:pos + length].decode("utf-8", "replace")
        pos += length
    if flexible:  # tagged fields: an unsigned varint count of (tag, size, bytes); none are defined for requests
        count, pos = _uvarint(frame, pos)
        for _ in range(count):
            _tag, pos = _uvarint(frame, pos)
            size, pos = _uvarint(frame, pos)
            pos += size
        if pos > len(frame):
            raise MalformedRequest("the request header's tagged fields run past its end")
    return RequestHeader(api_key, version, cid, client_id, pos)


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_uvarint(buf, pos, len(buf), "the request header")
    except LengthError as exc:
        raise MalformedRequest(str(exc)) from None


def decode_body(schema: type, frame: bytes, offset: int):
    """The request body as kio's dataclass.

    Every count and length is checked against the bytes after it first
    (:mod:`.lengths`): kio reserves memory for an array's declared count before reading it,
    and a lying count would make it ask for gigabytes (a failed allocation aborts the
    process).  kio's reader decodes an array of length -1 as None whether or not the field
    is nullable; a null where the schema has none is refused too (Kafka's parser refuses it:
    "non-nullable field ... was serialized as null"), so handlers meet only the types the
    schema names."""
    try:
        check_lengths(schema, frame, offset)
    except LengthError as exc:
        raise MalformedRequest(f"cannot decode {schema.__name__} v{schema.__version__}: {exc}") from None
    try:
        body, _size = entity_reader(schema)(frame, offset)
    except Exception as exc:  # kio's reader raises several types for short or bad input
        raise MalformedRequest(f"cannot decode {schema.__name__} v{schema.__version__}: {exc}") from None
    where = _null_field(body)
    if where is not None:
        raise MalformedRequest(f"{schema.__name__} v{schema.__version__}: non-nullable field {where} is null")
    return body


def _null_field(entity) -> str | None:
    """The path of the first non-nullable array or struct of ``entity`` that is None, or None.

    Runtime: O(structs in the request), primitives are not looked at."""
    for name, nullable, nested in _checked_fields(type(entity)):
        value = getattr(entity, name)
        if value is None:
            if nullable:
                continue
            return name
        if nested is not None:
            for item in value if isinstance(value, tuple) else (value,):
                where = _null_field(item)
                if where is not None:
                    return f"{name}.{where}"
    return None


@functools.lru_cache(maxsize=None)
def _checked_fields(schema: type) -> tuple[tuple[str, bool, type | None], ...]:
    """``(field, nullable, struct type or None)`` of each array or struct field of ``schema``."""
    hints = typing.get_type_hints(schema)
    plan = []
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        args = typing.get_args(hint)
        nullable = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        if nullable:
            hint = next(a for a in args if a is not type(None))
        is_array = typing.get_origin(hint) is tuple
        item = typing.get_args(hint)[0] if is_array else hint
        nested = item if dataclasses.is_dataclass(item) and _checked_fields(item) else None  # else: nothing to look at inside
        if is_array or dataclasses.is_dataclass(item):
            plan.append((f.name, nullable, nested))
    return tuple(plan)


# -- responses -------------------------------------------------------------------------

def encode_response(api_key: int, version: int, correlation_id: int, body: dict) -> bytes:
    """The whole response: size, header, body (the body given as a dict, see :func:`build`)."""
    schema = response_schema(api_key, version)
    out = io.BytesIO()
    out.write(b"\0\0\0\0")
    out.write(_INT32.pack(correlation_id))
    if schema.__flexible__ and api_key != API_VERSIONS_KEY:
        out.write(b"\0")  # response header v1: no tagged fields
    entity_writer(schema)(out, build(schema, body))
    data = out.getbuffer()
    _INT32.pack_into(data, 0, len(data) - 4)
    return bytes(data)


def error_only_response(correlation_id: int, code: int) -> bytes:
    """For a request this broker cannot decode or does not serve at all: the correlation
    id and one INT16 error code (the shape of every response's first field that has one,
    and of ApiVersions v0)."""
    return _INT32.pack(6) + _INT32.pack(correlation_id) + _INT16.pack(code)


def build(schema: type, data: dict) -> Any:
    """A kio dataclass of ``schema`` from ``data``: absent fields get their default or zero,
    keys the schema lacks (fields of other versions) are ignored."""
    kwargs = {}
    for name, convert, zero in _plan(schema):
        if name in data:
            kwargs[name] = convert(data[name])
        elif zero is not _HAS_DEFAULT:
            kwargs[name] = zero
    return schema(**kwargs)


_HAS_DEFAULT = object()


@functools.lru_cache(maxsize=None)
def _plan(schema: type) -> tuple:
    hints = typing.get_type_hints(schema)
    plan = []
    for f in dataclasses.fields(schema):
        convert, zero = _converter(hints[f.name])
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        plan.append((f.name, convert, _HAS_DEFAULT if has_default else zero))
    return tuple(plan)


def _identity(v):
    return v


def _converter(hint) -> tuple:
    """``(convert, zero value)`` for a field annotation."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        convert, _zero = _converter(inner)
        return (lambda v: None if v is None else convert(v)), None
    if typing.get_origin(hint) is tuple:
        item = args[0]
        convert, _zero = _converter(item)
        if convert is _identity:
            return tuple, ()
        return (lambda v: tuple(convert(x) for x in v)), ()
    if dataclasses.is_dataclass(hint):
        return (lambda v: v if isinstance(v, hint) else build(hint, v)), None
    if hint is KioErrorCode:
        return _error_code, KioErrorCode.none
    if hint in (i32Timedelta, i64Timedelta):
        return (lambda v: v if isinstance(v, datetime.timedelta) else datetime.timedelta(milliseconds=v)), datetime.timedelta(0)
    if hint is TZAware:
        return (lambda v: v if isinstance(v, datetime.datetime) else _EPOCH + datetime.timedelta(milliseconds=v)), _EPOCH
    if hint is uuid.UUID:
        return _uuid, uuid.UUID(int=0)
    if isinstance(hint, type) and issubclass(hint, bool):
        return _identity, False
    if isinstance(hint, type) and issubclass(hint, (int, float)):
        return _identity, 0
    if isinstance(hint, type) and issubclass(hint, str):
        return _identity, ""
    if isinstance(hint, type) and issubclass(hint, bytes):
        return _identity, b""
    return _identity, None


def _error_code(v) -> KioErrorCode:
    if isinstance(v, KioErrorCode):
        return v
    return _ERROR_CODES.get(int(v), KioErrorCode.unknown_server_error)


def _uuid(v) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if not v:
        return uuid.UUID(int=0)
    return uuid.UUID(hex=v)


def millis(value) -> int:
    """A request's timedelta or datetime field as milliseconds (kio decodes Kafka's
    durations and timestamps into Python's types)."""
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(milliseconds=1)
    if isinstance(value, datetime.datetime):
        return (value - _EPOCH) // datetime.timedelta(milliseconds=1)
    return int(value)
