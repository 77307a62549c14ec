"""Delayed operations: requests parked until a condition holds or a deadline passes.

Kafka calls this the purgatory.  A long-poll fetch (not enough bytes yet) and,
with replication, an acks=all produce (not yet on every in-sync replica) are
parked here instead of blocking the event loop.  An operation watches keys
(partitions); whoever changes a key (an append, a follower's progress) calls
:meth:`Purgatory.check`, which retries the watchers of that key.  The event loop
calls :meth:`Purgatory.expire` with ``now`` and sleeps no longer than
:meth:`Purgatory.next_deadline`.  Pure: time is passed in, and handed on to the
operations' callbacks, so a parked request sees the loop's one clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from typing import Callable, Hashable, Iterable


class DelayedOperation:
    """A parked request.

    Args:
        deadline_ms: when to give up waiting and complete anyway.
        keys: what to watch (repeats are ignored).
        try_complete: ``try_complete(now_ms)``, called on a change to a watched key
            (and once on entry); returns True once it has completed the operation.
        on_expire: ``on_expire(now_ms)`` completes the operation at the deadline.
    """

    __slots__ = ("deadline_ms", "keys", "_try", "_expire", "done")

    def __init__(
        self,
        deadline_ms: int,
        keys: Iterable[Hashable],
        try_complete: Callable[[int], bool],
        on_expire: Callable[[int], None],
    ) -> None:
        self.deadline_ms = deadline_ms
        self.keys = tuple(dict.fromkeys(keys))  # each key once: a repeated key would retry it once per copy
        self._try = try_complete
        self._expire = on_expire
        self.done = False

    def try_complete(self, now_ms: int) -> bool:
        if not self.done and self._try(now_ms):
            self.done = True
        return self.done

    def force_expire(self, now_ms: int) -> None:
        if not self.done:
            self.done = True
            self._expire(now_ms)


class Purgatory:
    """Parked operations, by watched key and by deadline."""

    def __init__(self) -> None:
        self._watchers: dict[Hashable, list[DelayedOperation]] = defaultdict(list)
        self._deadlines: list[tuple[int, int, DelayedOperation]] = []
        self._seq = itertools.count()
        self._cancelled = 0  # cancelled operations still in the heap or the watcher lists

    def __len__(self) -> int:
        return sum(1 for _, _, op in self._deadlines if not op.done)

    def park(self, op: DelayedOperation, now_ms: int) -> bool:
        """Try ``op`` once; if not complete, park it. Returns True if it completed now."""
        if op.try_complete(now_ms):
            return True
        for key in op.keys:
            self._watchers[key].append(op)
        heapq.heappush(self._deadlines, (op.deadline_ms, next(self._seq), op))
        return False

    def call_at(self, at_ms: int, fn: Callable[[int], None], now_ms: int) -> None:
        """A timer: ``fn(now_ms)`` once ``at_ms`` has passed (or at :meth:`cancel_all`)."""
        self.park(DelayedOperation(at_ms, (), _never, fn), now_ms)

    def check(self, key: Hashable, now_ms: int) -> int:
        """Retry the operations watching ``key``; returns how many completed."""
        ops = self._watchers.get(key)
        if not ops:
            return 0
        completed = 0
        for op in list(ops):  # a completion may park or check again: iterate a copy
            if op.done:
                continue
            if op.try_complete(now_ms):
                completed += 1
        for op in list(self._watchers.get(key, ())):
            if op.done:
                self._unwatch(op)  # from every key it watched, so idle keys do not keep it alive
        return completed

    def expire(self, now_ms: int) -> int:
        """Complete every operation whose deadline has passed; returns how many."""
        expired = 0
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, _, op = heapq.heappop(self._deadlines)
            if not op.done:
                op.force_expire(now_ms)
                expired += 1
                self._unwatch(op)
        # drop completed operations from the head so next_deadline stays meaningful
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
        return expired

    def _unwatch(self, op: DelayedOperation) -> None:
        for key in op.keys:
            ops = self._watchers.get(key)
            if ops is not None:
                remaining = [o for o in ops if o is not op]
                if remaining:
                    self._watchers[key] = remaining
                else:
                    del self._watchers[key]

    def cancel(self, op: DelayedOperation) -> None:
        """Forget ``op`` without completing it: nobody waits for its answer any more.  Its
        callbacks (and what they hold) are let go at once; its entries are purged once the
        cancelled ones are half of all, so they cost O(1) amortised and the purgatory holds
        at most about twice the operations still waited for."""
        if op.done:
            return
        op.done = True
        op._try = op._expire = None
        self._cancelled += 1
        if self._cancelled > 64 and 2 * self._cancelled > len(self._deadlines):
            self._deadlines = [entry for entry in self._deadlines if not entry[2].done]
            heapq.heapify(self._deadlines)
            for key in list(self._watchers):
                live = [o for o in self._watchers[key] if not o.done]
                if live:
                    self._watchers[key] = live
                else:
                    del self._watchers[key]
            self._cancelled = 0

    def next_deadline(self) -> int | None:
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def cancel_all(self, now_ms: int) -> None:
        """Expire everything (shutdown)."""
        for _, _, op in self._deadlines:
            op.force_expire(now_ms)
        self._deadlines.clear()
        self._watchers.clear()


def _never(now_ms: int) -> bool:
    return False
