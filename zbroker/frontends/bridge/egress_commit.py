"""When and what an egress bridge commits (sans-IO).

The bridge's group (``bridge.NAME``, :func:`~zbroker.frontends.bridge.egress.group_name`) holds, per partition, the position before
which ZeroMQ released every record (:meth:`~zbroker.frontends.bridge.egress_feed.Feed.confirmed`):
never past what was handed over.  :class:`Commits` commits the positions that moved every
``commit_ms`` and at close, one commit in flight at a time; a failed commit is tried again
at the next interval.

With ``start = "committed"`` a partition is *anchored* before anything of it is sent: its
start position is committed first (at once, not at the next interval).  Otherwise a broker
that stopped before the first regular commit would, at its restart, find nothing committed,
fall back to the log end, and pass over what came after the first start.

With ``lag`` (PUSH bridges) each commit is of the positions confirmed one interval before
(the last commit's snapshot), so the group always trails what ZeroMQ released by one to two
intervals.  That is the slack :meth:`EgressBridge.on_peer_gone` rewinds into: when a PULL peer
disconnects, ZeroMQ drops what it had queued for it, and releasing those messages makes them
look confirmed; a commit made from the moment of the drop could pass over them before the
bridge hears of the disconnect.  At close every confirmed position is committed.
"""

from __future__ import annotations

from typing import Callable

from zbroker.errors import RequestError

from .callbacks import guarded
from .egress_feed import Feed
from .gateway import retriable


class Commits:
    def __init__(self, gateway, group: str, anchor: bool, commit_ms: int, now_ms: int,
                 report: Callable[[str, bool, str], None], lag: bool = False) -> None:
        self.gateway, self.group, self.anchor, self.commit_ms, self.lag = gateway, group, anchor, commit_ms, lag
        self._snapshot: dict[Feed, int] = {}  # lag: each partition's confirmed position at the last commit
        self.next_at = now_ms + commit_ms
        self.in_flight = False
        self.failed = False  # the last commit failed: the next waits for the interval
        self.count = 0
        self._report = report

    def forget(self, feeds: list[Feed]) -> None:
        """After a rewind: nothing confirmed before it may be committed."""
        for f in feeds:
            self._snapshot[f] = f.committed

    def anchored(self, f: Feed) -> bool:
        """Whether ``f`` may be sent (see the module docstring)."""
        return not self.anchor or f.committed >= 0

    def anchor_due(self, feeds: list[Feed]) -> bool:
        """A started partition waits for its start to be committed, and that commit may go now."""
        return (self.anchor and not self.in_flight and not self.failed
                and any(f.started and f.committed < 0 for f in feeds))

    def due(self, now_ms: int, feeds: list[Feed]) -> bool:
        return now_ms >= self.next_at or self.anchor_due(feeds)

    def commit(self, now_ms: int, feeds: list[Feed], force: bool = False) -> None:
        """Commit the positions that moved (``force``: even with a commit in flight, at close)."""
        self.next_at = now_ms + self.commit_ms
        if self.in_flight and not force:
            return
        offsets = {}
        for f in feeds:
            if not f.started:
                continue
            position = now = f.confirmed()
            if self.lag and not force and f in self._snapshot:  # (after a rewind: what was committed before it)
                position = self._snapshot[f]
            self._snapshot[f] = now
            if position >= 0 and position != f.committed:
                offsets[f] = position
        if not offsets:
            return
        self.in_flight = True

        def answered(c) -> None:
            self.in_flight = False
            self.failed = c.error is not None
            if c.error is not None:
                self._report(f"committing: {c.error.code.name}: {c.error.message}", retriable(c.error), "commit")
                return
            self.count += 1
            for f, offset in offsets.items():
                f.committed = offset
        try:
            self.gateway.commit(self.group, {f.tp: offset for f, offset in offsets.items()}, now_ms).on_done(guarded(answered, "a commit answer"))
        except RequestError as exc:
            self.in_flight, self.failed = False, True
            self._report(f"committing: {exc.code.name}: {exc.message}", retriable(exc), "commit")
