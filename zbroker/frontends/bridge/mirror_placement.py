"""Where a cluster's ``[[mirror]]``\\ s run: on the active controller's broker.

Every broker has the same ``[[mirror]]`` tables; each one's :class:`MirrorPlacement` (a
loop timer) starts them when its broker becomes the controller (with its metadata caught
up) and stops them when it no longer is.  A broker that dies loses the controllership, so
its mirrors start on the next controller, from the positions committed in this cluster
(:mod:`zbroker.frontends.bridge.mirror`).  While two brokers disagree on who the
controller is, both may run a mirror for a moment: what both append is appended twice, which
at-least-once allows; nothing is skipped, since each commits only what it appended.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

#: how often the controllership is looked at (ms)
CHECK_MS = 100
#: after a mirror failed to start (its source's key file cannot be read, say)
START_RETRY_MS = 5_000


class MirrorPlacement:
    """Starts and stops this broker's mirrors as its controllership comes and goes.

    Args:
        configs: the cluster's :class:`~zbroker.bridge_config.MirrorConfig`\\ s.
        active: whether this broker should run them now (the controller, caught up).
        start: ``start(config, now_ms)`` -> a running mirror (with ``tick``, ``next_deadline``,
            ``close``, ``status``); may raise (logged, tried again after :data:`START_RETRY_MS`).
        registry: the list of running bridges and mirrors (``app.bridges``): a mirror is in it
            while it runs.
    """

    def __init__(self, configs, active: Callable[[], bool], start: Callable, registry: list) -> None:
        self.configs = tuple(configs)
        self.active = active
        self.start = start
        self.registry = registry
        self.running: dict[str, object] = {}
        self._retry_at: dict[str, int] = {}

    def next_timer_ms(self, now_ms: int) -> int:
        due = now_ms + CHECK_MS
        for mirror in self.running.values():
            deadline = mirror.next_deadline(now_ms)
            if deadline is not None:
                due = min(due, deadline)
        return max(0, due - now_ms)

    def tick(self, now_ms: int) -> None:
        if self.active():
            for config in self.configs:
                if config.name not in self.running and now_ms >= self._retry_at.get(config.name, 0):
                    self._start(config, now_ms)
        elif self.running:
            log.info("this broker is no longer the controller: stopping its mirrors (%s)", ", ".join(sorted(self.running)))
            self.close(now_ms)
        for mirror in list(self.running.values()):
            try:
                mirror.tick(now_ms)
            except Exception:
                log.exception("mirror %s failed a step; it goes on", mirror.name)

    def _start(self, config, now_ms: int) -> None:
        try:
            mirror = self.start(config, now_ms)
        except Exception as exc:
            self._retry_at[config.name] = now_ms + START_RETRY_MS
            log.error("mirror %s cannot start (trying again in %d s): %s", config.name, START_RETRY_MS // 1000, exc)
            return
        log.info("mirror %s started on this broker (the controller): %s -> %s", config.name, config.source,
                 f"{config.prefix}<topic>" if config.prefix else "the same topic names")
        self.running[config.name] = mirror
        self.registry.append(mirror)

    def close(self, now_ms: int) -> None:
        """Stop every running mirror (controllership lost, or the broker stops)."""
        for name, mirror in list(self.running.items()):
            try:
                mirror.close(now_ms)
            except Exception:
                log.exception("mirror %s failed to stop cleanly", name)
            del self.running[name]
            if mirror in self.registry:
                self.registry.remove(mirror)
