"""Kafka's murmur2 hash: keyed partitioning (docs/protocol.md §6) and group -> coordinator placement.

Shared by the broker and the clients (a protocol-level definition, like the codec).
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit MurmurHash2 of ``data``, as a signed 32-bit int.

    >>> murmur2(b"21")
    -973932308
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length & ~3
    from_bytes = int.from_bytes
    for i in range(0, n4, 4):
        k = from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def positive_hash_mod(data: bytes, n: int) -> int:
    """``(murmur2(data) & 0x7fffffff) % n``: keyed partitions, and a group's offsets partition."""
    return (murmur2(data) & 0x7FFFFFFF) % n
