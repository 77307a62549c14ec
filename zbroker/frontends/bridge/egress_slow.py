"""A PUB egress bridge and a subscriber that stays connected but does not read (sans-IO).

The bridge's XPUB has XPUB_NODROP: a send a full subscriber cannot take fails, and the bridge
holds the record (back-pressure, no silent loss).  A subscriber that is alive but does not read
-- libzmq's I/O thread answers its heartbeats, so it is never cut off -- would hold the bridge
for good.  :class:`SlowSubscribers` gives NODROP up once a record has been held ``long_hold_ms``:
for :data:`DROP_MS` ZeroMQ drops what a full subscriber cannot take and the others get live data
again.  Then NODROP is on again; while the last give-up is recent (:data:`RECENT_MS`), a hold of
:data:`SHORT_HOLD_MS` is enough to give it up again (a subscriber is known not to read).
ZeroMQ does not say which subscriber is full nor what it dropped: ``count`` is the times NODROP
was given up, ``sent`` the records sent meanwhile (an upper bound on what one may have missed).
"""

from __future__ import annotations

from typing import Callable

DROP_MS, SHORT_HOLD_MS, RECENT_MS = 10_000, 1000, 60_000


class SlowSubscribers:
    def __init__(self, nodrop: Callable[[bool], None] | None, long_hold_ms: int,
                 log: Callable[[int, int, int, int], None]) -> None:
        """``nodrop(on)`` sets the XPUB's NODROP (None: not a PUB bridge, nothing to do);
        ``log(now_ms, held_ms, drop_ms, count)`` reports a give-up."""
        self._nodrop, self.long_hold_ms, self._log = nodrop, long_hold_ms, log
        self.until: int | None = None  # NODROP is given up until then
        self._gave_up_at: int | None = None
        self.count = self.sent = 0

    def check(self, now_ms: int, feeds: list, replays) -> None:
        """Give NODROP up (``feeds`` or ``replays`` held long enough), or take it back (time is up)."""
        if self._nodrop is None:
            return
        if self.until is not None:
            if now_ms >= self.until:
                self.until = None
                self._nodrop(True)
            return
        since = [f.held_since for f in feeds if f.held_since is not None]
        if replays.held_since is not None:
            since.append(replays.held_since)
        if not since:
            return
        recent = self._gave_up_at is not None and now_ms - self._gave_up_at < RECENT_MS
        held = now_ms - min(since)
        if held < (SHORT_HOLD_MS if recent else self.long_hold_ms):
            return
        self._nodrop(False)
        self.until = now_ms + DROP_MS
        self._gave_up_at = now_ms
        self.count += 1
        for f in feeds:  # offered again at once
            if f.held_since is not None:
                f.held_since, f.not_before = None, now_ms
        replays.unhold(now_ms)
        self._log(now_ms, held, DROP_MS, self.count)
