"""The bridges and mirrors one broker runs: their timers, their status, their moves.

:class:`BridgeHost` is one of the event loop's timers.  It ticks every bridge or mirror
this broker runs (each a sans-IO object with the :class:`Runner` methods) and answers
``bridge_status`` from their :meth:`Runner.status`.  Bridges are bound to their broker
(their endpoints are addresses on its host): the server adds them at start.  Mirrors
follow the controller: the host starts them (with the factory the server gives it) on
the broker that is the active controller and stops them on one that no longer is, so a
broker failure moves them; their positions live in the cluster, so the new host goes on
where the old one committed.  A mirror whose start fails (a key file it cannot read, say)
is tried again after 1 s, doubling to 30 s; the first failure is logged with its traceback,
the next ones with one line each.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

from zbroker.bridge_config import MirrorConfig
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log, burst=1, window_s=10.0)

IDLE_TICK_MS = 1000  # how often the host looks at controllership when nothing else is due
#: a mirror whose start failed is tried again after this, doubling up to START_RETRY_MAX_MS
START_RETRY_MS, START_RETRY_MAX_MS = 1_000, 30_000


class Runner(Protocol):
    """A bridge or a mirror, as the host drives it."""

    name: str

    def tick(self, now_ms: int) -> None: ...

    def next_deadline(self, now_ms: int) -> int | None:
        """When :meth:`tick` next has work (absolute ms), None: only when input comes."""

    def status(self, now_ms: int) -> dict:
        """What ``zbroker bridge status`` shows: at least name, kind and state (JSON-able)."""

    def close(self, now_ms: int) -> None:
        """Stop: commit what can be committed, let go of sockets and threads."""


def _guarded(what: str, fn: Callable, *args):
    try:
        return fn(*args)
    except Exception:
        log.exception("bridge %s failed; the broker keeps serving", what)
        return None


class BridgeHost:
    """Ticks this broker's bridges and mirrors; starts and stops mirrors with controllership."""

    def __init__(self, broker_id: int, is_controller: Callable[[], bool], mirrors: tuple[MirrorConfig, ...] = (),
                 start_mirror: Callable[[MirrorConfig, int], Runner] | None = None) -> None:
        self.broker_id = broker_id
        self._is_controller = is_controller
        self._mirror_configs = mirrors
        self._start_mirror = start_mirror
        self.runners: dict[str, Runner] = {}
        self._mirrors: set[str] = set()
        self._next_check_ms = 0
        self._start_failures: dict[str, tuple[int, int]] = {}  # mirror -> (failures in a row, next try at)
        self._closing: list[Runner] = []
        self._dues: dict[int, int | None] = {}  # id(runner) -> its deadline, from next_timer_ms until the tick

    def add(self, runner: Runner) -> None:
        self.runners[runner.name] = runner

    # -- the loop's timer ------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        if now_ms >= self._next_check_ms:
            self._next_check_ms = now_ms + IDLE_TICK_MS
            self._follow_controller(now_ms)
        dues, self._dues = self._dues, {}
        for runner in [*self.runners.values(), *self._closing]:  # closed ones: their last work goes on
            # the deadline the loop asked for before this turn's poll, if it did (a runner's scan
            # of its partitions is done once a turn, not twice)
            due = dues[id(runner)] if id(runner) in dues else _guarded(runner.name, runner.next_deadline, now_ms)
            if due is not None and due <= now_ms:
                _guarded(runner.name, runner.tick, now_ms)

    def next_timer_ms(self, now_ms: int) -> int:
        due = self._next_check_ms
        for runner in [*self.runners.values(), *self._closing]:
            at = self._dues[id(runner)] = _guarded(runner.name, runner.next_deadline, now_ms)
            if at is not None:
                due = min(due, at)
        return max(0, due - now_ms)

    def _follow_controller(self, now_ms: int) -> None:
        if not self._mirror_configs or self._start_mirror is None:
            return
        leading = self._is_controller()
        if leading:
            for config in self._mirror_configs:  # each time: a mirror whose start failed is tried again
                if config.name not in self._mirrors and now_ms >= self._start_failures.get(config.name, (0, 0))[1]:
                    self._start(config, now_ms)
            return
        self._start_failures.clear()
        if self._mirrors:
            for name in sorted(self._mirrors):
                log.info("mirror %s stops on broker %s: it is no longer the controller", name, self.broker_id)
                runner = self.runners.pop(name, None)
                if runner is not None:
                    _guarded(name, runner.close, now_ms)
            self._mirrors.clear()

    def _start(self, config: MirrorConfig, now_ms: int) -> None:
        try:
            runner = self._start_mirror(config, now_ms)
        except Exception as exc:
            failures = self._start_failures.get(config.name, (0, 0))[0] + 1
            pause = min(START_RETRY_MAX_MS, START_RETRY_MS << min(failures - 1, 16))
            self._start_failures[config.name] = (failures, now_ms + pause)
            if failures == 1:
                log.exception("mirror %s cannot start on broker %s; tried again in %g s", config.name, self.broker_id,
                              pause / 1000)
            else:
                _limited.log(now_ms / 1000, f"mirror-start-{config.name}", logging.WARNING,
                             "mirror %s still cannot start (%d failures): %s: %s; tried again in %g s",
                             config.name, failures, type(exc).__name__, exc, pause / 1000)
            return
        self._start_failures.pop(config.name, None)
        log.info("mirror %s starts on broker %s (the controller's)", config.name, self.broker_id)
        self.runners[config.name] = runner
        self._mirrors.add(config.name)

    # -- status and shutdown -----------------------------------------------------------

    def status(self, now_ms: int) -> list[dict]:
        out = []
        for name in sorted(self.runners):
            status = _guarded(name, self.runners[name].status, now_ms)
            out.append({"broker": self.broker_id, **(status or {"name": name, "state": "failed"})})
        return out

    def close(self, now_ms: int) -> None:
        """Close every bridge and mirror: they take no more input and hand over their last
        appends and commits.  Those that say when that is done (an optional ``settled()``)
        are still ticked until :meth:`finish`; :meth:`settled` says when all are done."""
        for name, runner in list(self.runners.items()):
            _guarded(name, runner.close, now_ms)
        self._closing = [r for r in self.runners.values() if hasattr(r, "settled")]
        self.runners.clear()
        self._mirrors.clear()

    def settled(self) -> bool:
        """Whether every closed bridge's last work has its answer (a runner says so with an
        optional ``settled()``; one without it has nothing to wait for)."""
        return all(_guarded(r.name, r.settled) is not False for r in self._closing)

    def finish(self, now_ms: int) -> None:
        """The broker stops now: each closed runner says what it could not finish (an optional
        ``finish(now_ms)``, e.g. records taken and not stored) and is no longer ticked."""
        for runner in self._closing:
            if hasattr(runner, "finish"):
                _guarded(runner.name, runner.finish, now_ms)
        self._closing = []
