"""Optional serializers and deserializers for keys and values.

A serializer turns a Python object into ``bytes`` (or ``None``); a deserializer
does the reverse.  Pass either a callable or one of the names ``"bytes"``,
``"str"`` (UTF-8) or ``"json"`` as ``key_serializer=`` / ``value_serializer=``
on :class:`~clients.producer.Producer` and ``key_deserializer=`` /
``value_deserializer=`` on :class:`~clients.consumer.Consumer`.  ``None``
passes through unchanged in every case (a null key, a tombstone value).
"""

from __future__ import annotations

import json
from typing import Any, Callable


def bytes_serializer(obj: Any) -> bytes | None:
    """bytes/bytearray/memoryview -> bytes; str -> UTF-8."""
    if obj is None or type(obj) is bytes:
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"expected bytes or str, got {type(obj).__name__}")


def str_serializer(obj: Any) -> bytes | None:
    """str -> UTF-8 bytes (``str(obj)`` for other types)."""
    if obj is None:
        return None
    return (obj if isinstance(obj, str) else str(obj)).encode("utf-8")


def json_serializer(obj: Any) -> bytes | None:
    """Any JSON-serialisable object -> compact UTF-8 JSON."""
    if obj is None:
        return None
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def bytes_deserializer(data: bytes | None) -> bytes | None:
    """Identity."""
    return data


def str_deserializer(data: bytes | None) -> str | None:
    """UTF-8 bytes -> str."""
    return None if data is None else data.decode("utf-8")


def json_deserializer(data: bytes | None) -> Any:
    """UTF-8 JSON bytes -> object."""
    return None if data is None else json.loads(data)


SERIALIZERS = {"bytes": bytes_serializer, "str": str_serializer, "json": json_serializer}
DESERIALIZERS = {"bytes": bytes_deserializer, "str": str_deserializer, "json": json_deserializer}


def resolve(spec: str | Callable | None, table: dict, what: str) -> Callable | None:
    """Turn a name or callable into a callable (None stays None).

    Raises:
        ValueError: an unknown name.
    """
    if spec is None or callable(spec):
        return spec
    try:
        return table[spec]
    except KeyError:
        raise ValueError(f"{what} must be a callable or one of {sorted(table)}, got {spec!r}") from None
