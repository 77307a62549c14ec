"""Rate-limited logging: a hostile peer must not turn the broker's log into its megaphone.

:class:`RateLimitedLog` writes at most ``burst`` lines of one kind per ``window_s``
seconds; the rest of the window's lines of that kind are counted, and the first line
of that kind after the window ends is preceded by one summary::

    suppressed 4321 similar messages (kind=bad_request) in the last 10 s

Kinds are fixed strings chosen by the code (never taken from input), so the state is
bounded.  Pure: the caller passes ``now`` (seconds, any monotonic clock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """Writes through ``logger``, at most ``burst`` lines per kind per ``window_s``."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window_s: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def log(self, now: float, kind: str, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless this kind is over its budget; returns whether
        it was written."""
        window = self._windows.get(kind)
        if window is None or now - window.start >= self.window_s:
            if window is not None and window.suppressed:
                self.logger.log(level, "suppressed %d similar messages (kind=%s) in the last %g s",
                                window.suppressed, kind, self.window_s)
            window = self._windows[kind] = _Window(now)
        if window.written >= self.burst:
            window.suppressed += 1
            return False
        window.written += 1
        self.logger.log(level, msg, *args)
        return True
