"""Where an egress bridge's partitions start, and where they go when their offset is out of
range (a mixin of :class:`~zbroker.frontends.bridge.egress.EgressBridge`; sans-IO).

    start    --  latest | earliest (list_offset), or committed (the bridge's group; latest when
                 it has committed nothing for the partition).  Partitions and topics that
                 appear after the bridge's first look start at the earliest offset.
    reset    --  a fetch offset out of range moves to the log start if below it, else to the
                 log end; the offsets passed over are counted (``skipped``) and logged.
"""

from __future__ import annotations

import logging

from zbroker.core.fetch import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

from .egress_feed import Feed

log = logging.getLogger("zbroker.frontends.bridge.egress")

LOOK_MS = 1000  # how often the topics' partition counts are looked at again


class Starts:
    """The start and reset half of an egress bridge (uses its gateway, feeds, ``_call``,
    ``_failed`` and rate-limited log)."""

    def _look(self, now_ms: int) -> None:
        self._next_look = now_ms + LOOK_MS
        for topic in self.config.topics:
            count = self.gateway.partition_count(topic)
            if count is None:
                if topic not in self.missing:
                    log.warning("bridge %s: topic %r does not exist (yet); it is sent from its first record once created",
                                self.name, topic)
                self.missing.add(topic)
                continue
            self.missing.discard(topic)
            for p in range(count):
                if (topic, p) not in self.feeds:
                    feed = Feed(topic, p, late=self._looked)
                    self.feeds[feed.tp] = feed
                    self._order.append(feed)
        self._looked = True

    def _resolve_starts(self, now_ms: int) -> None:
        todo = [f for f in self._order if not f.started and not f.resolving and now_ms >= f.not_before]
        if not todo:
            return
        if self.config.start != "committed":
            for f in todo:
                self._list_offset(f, EARLIEST_TIMESTAMP if f.late or self.config.start == "earliest" else LATEST_TIMESTAMP,
                                  now_ms)
            return
        for f in todo:
            f.resolving = True

        def answered(c) -> None:
            if c.error is not None:
                for f in todo:
                    self._failed(f, c.error, "reading the committed position")
                return
            for f in todo:
                offset = c.value.get(f.tp, -1)
                if offset >= 0:
                    f.resolving = False
                    f.committed = offset
                    f.start_at(offset)
                else:  # nothing committed yet: latest (a late partition: earliest)
                    self._list_offset(f, EARLIEST_TIMESTAMP if f.late else LATEST_TIMESTAMP, self._now)
        self._call(todo, lambda: self.gateway.committed(self.group, [f.tp for f in todo], now_ms), answered,
                   "reading the committed position")

    def _list_offset(self, f: Feed, timestamp: int, now_ms: int) -> None:
        f.resolving = True

        def answered(c) -> None:
            if c.error is not None:
                self._failed(f, c.error, "looking up the start offset")
                return
            f.resolving = False
            f.failures = 0
            f.start_at(c.value)
        self._call([f], lambda: self.gateway.list_offset(f.topic, f.partition, timestamp, now_ms), answered,
                   "looking up the start offset")

    def _skip(self, f: Feed, to: int, why: str) -> None:
        f.skipped += to - f.fetch_at
        self._log.log(self._now / 1000, "skip", logging.WARNING, "bridge %s: %s-%d: offsets %d to %d %s were not sent",
                      self.name, f.topic, f.partition, f.fetch_at, to - 1, why)
        f.start_at(to)

    def _reset(self, f: Feed) -> None:
        """The fetch offset is out of range: move to the log start if below it, else to the end."""
        f.resolving = True

        def earliest(c) -> None:
            if c.error is not None:
                self._failed(f, c.error, "looking up the log start after OFFSET_OUT_OF_RANGE")
            elif f.fetch_at < c.value:
                f.resolving = False
                self._skip(f, c.value, "(deleted before the bridge sent them)")
            else:
                self._call([f], lambda: self.gateway.list_offset(f.topic, f.partition, LATEST_TIMESTAMP, self._now), latest,
                           "looking up the log end after OFFSET_OUT_OF_RANGE")

        def latest(c) -> None:
            if c.error is not None:
                self._failed(f, c.error, "looking up the log end after OFFSET_OUT_OF_RANGE")
                return
            f.resolving = False
            if f.fetch_at > c.value:
                log.warning("bridge %s: %s-%d: position %d is past the log end %d (the topic was recreated or the log "
                            "truncated): going on from the end", self.name, f.topic, f.partition, f.fetch_at, c.value)
                f.start_at(c.value)
        self._call([f], lambda: self.gateway.list_offset(f.topic, f.partition, EARLIEST_TIMESTAMP, self._now), earliest,
                   "looking up the log start after OFFSET_OUT_OF_RANGE")
