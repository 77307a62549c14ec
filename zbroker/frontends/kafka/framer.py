"""Kafka framing, sans-IO: bytes in, whole requests out; replies out in request order.

Every Kafka message is ``INT32 size`` followed by ``size`` bytes.  :class:`Framer` takes
whatever the socket read and returns the complete requests, refusing a size above the
limit before buffering it (a hostile size costs nothing).  Kafka clients pipeline
requests and match replies by correlation id *and* order: a broker answers each
connection's requests in the order they came, even when a later one (a metadata
request) is ready before an earlier one (a long-poll fetch).  :class:`ReplyOrder` holds
the early answers until the ones before them are out.
"""

from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")


class FrameTooLarge(ValueError):
    """A request announced more bytes than the broker accepts (or a negative size)."""


class Framer:
    """Cuts a byte stream into Kafka requests.

    >>> f = Framer(max_size=100)
    >>> f.feed(b"\\0\\0\\0\\x03ab")
    []
    >>> f.feed(b"c\\0\\0\\0\\x01z")
    [b'abc', b'z']
    """

    __slots__ = ("max_size", "_buf")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every request now complete.

        Raises:
            FrameTooLarge: a size prefix above ``max_size`` or below 0 (the stream cannot
                be resynchronised: close the connection).
        """
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _SIZE.unpack_from(buf, pos)
            if size < 0 or size > self.max_size:
                raise FrameTooLarge(f"a request of {size} bytes (the limit is {self.max_size})")
            if len(buf) - pos - 4 < size:
                break
            frames.append(bytes(buf[pos + 4:pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return frames


class ReplyOrder:
    """Slots for a connection's replies, released in request order.

    :meth:`reserve` a slot per request as it arrives, :meth:`fill` it with the reply
    bytes (None: the request has no reply, such as an acks=0 produce), and take the
    replies that may leave with :meth:`ready`.
    """

    __slots__ = ("_next", "_first", "_filled")

    def __init__(self) -> None:
        self._next = 0  # the next slot to hand out
        self._first = 0  # the oldest slot not yet released
        self._filled: dict[int, object] = {}

    def __len__(self) -> int:
        """Requests whose replies have not left yet."""
        return self._next - self._first

    def reserve(self) -> int:
        slot = self._next
        self._next += 1
        return slot

    def fill(self, slot: int, reply) -> None:
        if self._first <= slot < self._next and slot not in self._filled:
            self._filled[slot] = reply

    def ready(self) -> list:
        """Replies that can be sent now, oldest first.  A reply that is not bytes (a marker
        such as the router's CLOSE_CONNECTION) ends the list: nothing after it is released."""
        out = []
        filled = self._filled
        while self._first in filled:
            reply = filled.pop(self._first)
            self._first += 1
            if reply is not None:
                out.append(reply)
                if not isinstance(reply, (bytes, bytearray, memoryview)):
                    break
        return out
