"""What every bridge and mirror shares about answers: error names, and Completion callbacks
that a bridge's bug cannot turn into a failure of whatever settled the Completion.

A :class:`~zbroker.context.Completion` runs its callback inside the code that settled it (a
producer's append waking a parked fetch, the replication ack loop, a peer's reply), so an
exception in a bridge's callback would break that code's caller: :func:`guarded` logs it,
:class:`CallbackGuard` also counts it and rate-limits the log.
"""

from __future__ import annotations

import logging
import traceback
from typing import Callable

from zbroker.context import Completion
from zbroker.errors import ErrorCode
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


class CallbackGuard:
    """Completion callbacks made safe: a Completion runs its callback inside whatever settled it
    (the replication ack loop, a peer's reply), which a bridge's bug must not fail.  A callback
    that raises is counted (``errors``) and logged, rate-limited, with its traceback."""

    def __init__(self, name: str, clock: Callable[[], int]) -> None:
        """``clock()``: the bridge's last known time in ms (for the log's rate limit)."""
        self.name = name
        self.errors = 0
        self._clock = clock
        self._log = RateLimitedLog(log, burst=5, window_s=10.0)

    def __call__(self, callback: Callable[[Completion], None], what: str) -> Callable[[Completion], None]:
        def run(done: Completion) -> None:
            try:
                callback(done)
            except Exception:
                self.errors += 1
                self._log.log(self._clock() / 1000, "callback_error", logging.ERROR,
                              "bridge %s: error handling %s (%d so far); the broker keeps serving\n%s",
                              self.name, what, self.errors, traceback.format_exc())
        return run


def guarded(callback: Callable, what: str) -> Callable:
    """``callback`` for a Completion, made safe: a Completion runs its callback inside whatever
    settled it (a producer's append waking a parked fetch), which a bridge's bug must not fail."""
    def run(*args) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("bridge: error handling %s; the broker keeps serving", what)
    return run
