"""Kafka's consumer protocol payloads, read: what a classic member subscribes to and is assigned.

Classic groups carry a member's subscription (JoinGroup's protocol metadata) and its
assignment (SyncGroup's) as opaque bytes that the coordinator stores as given.  When the
group's protocol type is ``consumer`` those bytes are Kafka's ConsumerProtocol, and
``zbroker groups describe`` shows them as topics and partitions::

    ConsumerProtocolSubscription   version INT16, topics [STRING], user_data NULLABLE_BYTES,
                                   (v1+) owned_partitions [topic STRING, partitions [INT32]], ...
    ConsumerProtocolAssignment     version INT16, assigned_partitions [topic STRING,
                                   partitions [INT32]], user_data NULLABLE_BYTES

Arrays are INT32-counted and strings INT16-length-prefixed (these schemas are never
flexible).  Reading is bounded by the bytes given; anything that does not parse gives an
empty answer, never an exception: the bytes came from a client.
"""

from __future__ import annotations

import struct

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class _Short(Exception):
    pass


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def _take(self, fmt: struct.Struct) -> int:
        if self.pos + fmt.size > len(self.buf):
            raise _Short
        (value,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return value

    def count(self) -> int:
        n = self._take(_I32)
        if n < 0:
            return 0
        if n > len(self.buf) - self.pos:  # each element takes at least a byte
            raise _Short
        return n

    def string(self) -> str:
        n = self._take(_I16)
        if n < 0 or self.pos + n > len(self.buf):
            raise _Short
        text = self.buf[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return text

    def int32(self) -> int:
        return self._take(_I32)


def subscribed_topics(metadata: bytes) -> list[str]:
    """The topics of a ConsumerProtocolSubscription, sorted; [] if it does not parse."""
    try:
        r = _Reader(metadata)
        r._take(_I16)
        return sorted({r.string() for _ in range(r.count())})
    except _Short:
        return []


def assigned_partitions(assignment: bytes) -> list[tuple[str, int]]:
    """The (topic, partition) pairs of a ConsumerProtocolAssignment, sorted; [] if it does not parse."""
    try:
        r = _Reader(assignment)
        r._take(_I16)
        out = set()
        for _ in range(r.count()):
            topic = r.string()
            for _ in range(r.count()):
                out.add((topic, r.int32()))
        return sorted(out)
    except _Short:
        return []
