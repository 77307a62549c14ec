"""The client's in-flight table: requests waiting for an answer, and their deadlines.

Pure data, no sockets and no clock of its own (``now`` is passed in); the
transport (:mod:`clients.connection`) owns one and calls back the entries it
returns.  An entry leaves the table exactly once: by its response
(:meth:`InFlightTable.pop`), its deadline (:meth:`expire`), a broken connection
(:meth:`fail_address`), a cancel (:meth:`cancel`) or the client's close
(:meth:`drain`).  Every way but a response marks it ``cancelled``, so an entry
still waiting in a connection's outbox is dropped there instead of being sent.

Deadlines sit in a heap of ``(deadline, cid)``; entries that left the table
leave stale heap items behind, skipped when they surface and swept when the
heap grows past four times the table (and 1024 items).
"""

from __future__ import annotations

import heapq
from typing import Callable


class InFlight:
    """One request waiting for its answer."""

    __slots__ = ("cid", "address", "callback", "deadline", "sent", "cancelled", "kind")

    def __init__(self, cid: int, address: str, callback: Callable | None, deadline: float, kind: str) -> None:
        self.cid = cid
        self.address = address
        self.callback = callback
        self.deadline = deadline
        self.kind = kind
        self.sent = False  # handed to the socket (it may have reached the broker)
        self.cancelled = False  # left the table without a response

    def __repr__(self) -> str:
        return f"InFlight(cid={self.cid}, kind={self.kind!r}, address={self.address!r}, deadline={self.deadline})"


class InFlightTable:
    """Requests by correlation id, with their deadlines.

    >>> t = InFlightTable()
    >>> e = t.add(1, "b1:9555", None, deadline=5.0, kind="fetch")
    >>> t.next_deadline(), len(t)
    (5.0, 1)
    >>> [x.cid for x in t.expire(now=5.0)], len(t), e.cancelled
    ([1], 0, True)
    """

    _SWEEP_AT = 1024

    def __init__(self) -> None:
        self._entries: dict[int, InFlight] = {}
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cid: int) -> bool:
        return cid in self._entries

    def add(self, cid: int, address: str, callback: Callable | None, deadline: float, kind: str) -> InFlight:
        """Track a new request.  O(log n)."""
        if cid in self._entries:
            raise ValueError(f"correlation id {cid} is already in flight")
        entry = InFlight(cid, address, callback, deadline, kind)
        self._entries[cid] = entry
        heapq.heappush(self._heap, (deadline, cid))
        return entry

    def pop(self, cid: int) -> InFlight | None:
        """The entry a response answers (removed), or None if it already left.  O(1)."""
        return self._entries.pop(cid, None)

    def cancel(self, cid: int) -> InFlight | None:
        """Remove an entry that will get no response; returns it, or None if it already left.  O(1)."""
        entry = self._entries.pop(cid, None)
        if entry is not None:
            entry.cancelled = True
        return entry

    def expire(self, now: float) -> list[InFlight]:
        """Remove and return the entries whose deadline is ``<= now``, earliest first.

        Runtime: O(k log n) for k heap items due.
        """
        heap = self._heap
        entries = self._entries
        out = []
        while heap and heap[0][0] <= now:
            _deadline, cid = heapq.heappop(heap)
            entry = entries.get(cid)
            if entry is not None and entry.deadline <= now:
                del entries[cid]
                entry.cancelled = True
                out.append(entry)
        if len(heap) > self._SWEEP_AT and len(heap) > 4 * len(entries):
            self._heap = heap = [(e.deadline, e.cid) for e in entries.values()]
            heapq.heapify(heap)
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline to wake up for (possibly of an entry that already left), or None.  O(1)."""
        return self._heap[0][0] if self._heap else None

    def fail_address(self, address: str) -> list[InFlight]:
        """Remove and return the entries *sent* to ``address`` (its connection broke).

        Entries not sent yet stay: they never left this process.  O(n).
        """
        gone = [e for e in self._entries.values() if e.address == address and e.sent]
        for e in gone:
            del self._entries[e.cid]
            e.cancelled = True
        return gone

    def drain(self) -> list[InFlight]:
        """Remove and return every entry (the client closes).  O(n)."""
        out = list(self._entries.values())
        self._entries.clear()
        self._heap.clear()
        for e in out:
            e.cancelled = True
        return out
