"""A mirror's positions, committed to its group on this cluster (sans-IO).

Each partition's :attr:`~zbroker.frontends.bridge.mirror_partition.MirroredPartition.position`
(the next source offset the target lacks, moved only by an acknowledged append) is committed
to the group ``mirror.NAME`` on the target topic-partition: at most every
:data:`COMMIT_INTERVAL_MS`, one commit in flight at a time, and once more when the mirror
stops -- after the commit in flight, if there is one, has settled (its answer may say less
than the final positions).
"""

from __future__ import annotations

from typing import Callable, Iterable

from zbroker.frontends.bridge.callbacks import guarded

COMMIT_INTERVAL_MS = 500


class PositionCommits:
    """Commits the positions of the partitions ``parts()`` returns.

    Args:
        on_result: ``on_result(error)`` after each commit (None: it was stored).
    """

    def __init__(self, gateway, group: str, parts: Callable[[], Iterable], on_result: Callable, now_ms: int) -> None:
        self.gateway, self.group = gateway, group
        self._parts, self._on_result = parts, on_result
        self.next_at = now_ms + COMMIT_INTERVAL_MS
        self.in_flight = False
        self._final = False  # stopped while a commit was in flight: commit again once it settles

    def settled(self) -> bool:
        """No commit in flight and none to follow (what a stopping broker waits for)."""
        return not self.in_flight and not self._final

    def deadline(self) -> int | None:
        """When :meth:`maybe` has work: a position not committed yet."""
        return self.next_at if any(p.position > p.committed for p in self._parts()) else None

    def maybe(self, now_ms: int) -> None:
        if self.in_flight or now_ms < self.next_at:
            return
        self.next_at = now_ms + COMMIT_INTERVAL_MS
        self._commit(now_ms)

    def final(self, now_ms: int) -> None:
        """The mirror stops: commit the positions now, or once the commit in flight has settled."""
        if self.in_flight:
            self._final = True
        else:
            self._commit(now_ms)

    def _commit(self, now_ms: int) -> None:
        offsets = {(p.target, p.partition): p.position for p in self._parts() if p.position > p.committed}
        if not offsets:
            return
        self.in_flight = True
        self.gateway.commit(self.group, offsets, now_ms).on_done(
            guarded(lambda c: self._done(offsets, c, now_ms), "a mirror's commit answer"))

    def _done(self, offsets: dict, completion, now_ms: int) -> None:
        self.in_flight = False
        if completion.error is None:
            for part in self._parts():
                offset = offsets.get((part.target, part.partition))
                if offset is not None:
                    part.committed = max(part.committed, offset)
        self._on_result(completion.error)
        if self._final:
            self._final = False
            self._commit(now_ms)
