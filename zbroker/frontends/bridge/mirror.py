"""A ``[[mirror]]``: the topics of another cluster, copied into this one (sans-IO).

Theory of operation::

    source thread (zbroker.net.mirror_source)             Mirror (this module, the broker's loop)
      lists the source's topics        --("topics", ...)-->  creates prefix+topic (same partition
      reads records from positions     --("records", ...)->  count, the source's topic configs),
      reports what fails               --("error", msg)--->  appends them (acks=all), commits
                                       <-- add(positions), pause/resume/remove(tps), refresh(), close() --

- **Topics.** Every ``refresh_ms`` the source lists its topics; those whose whole name
  matches the ``topics`` regex are mirrored into ``prefix + topic`` with the same partition
  count and the configs set on the source topic that zbroker has (a topic that grows on the
  source grows here; one created later is picked up at the next listing).
- **Position.** The next source offset to copy of each partition is committed to the group
  ``mirror.NAME`` of *this* cluster, on the *target* topic-partition (:func:`group_name`):
  a mirror that starts (a restart, another broker taking over) reads from there; a
  partition without a committed offset starts at the source's log start.  The committed
  values are source offsets, not offsets of the target topic.
- **At least once, in order.** Each partition has at most one append in flight; records
  keep key, value, headers and timestamp.  A position is committed only after the target
  acknowledged the append with acks=all (:mod:`~zbroker.frontends.bridge.mirror_commit`);
  a mirror that dies sends again what it appended after its last commit.  A failed append is retried
  (the same records, in order) with a growing pause; nothing is skipped.
- **Bounded memory.** Records are taken from the source only while fewer than
  :data:`MAX_PENDING_RECORDS` records and :data:`MAX_PENDING_BYTES` bytes wait to be
  appended; the source thread then blocks on its full queue.  A partition whose own
  backlog is full (:data:`~zbroker.frontends.bridge.mirror_partition.PARTITION_MAX_RECORDS`,
  ``PARTITION_MAX_BYTES``: the target refuses its records, say) is paused on the source
  and resumed once half of it is appended, so it holds back only itself.
- **Nothing skipped.** An event taken from the source counts as taken once it was handled;
  one whose handling raised stays first and is handled again a second later (records
  already offered are repeats then, and are not appended twice).
- **Topics that go.** A topic missing from the source's listings for
  :data:`FORGET_AFTER_MS` is forgotten: no longer read, gone from the status (the target
  topic and its committed positions stay).

Time is passed in; the cluster is reached through a
:class:`~zbroker.frontends.bridge.gateway.Gateway` (as ``Bridge:NAME``) and the source
through a :class:`SourceHandle`
(:class:`~zbroker.net.mirror_source.MirrorSource`; tests pass a fake).  Each partition's
appends are :class:`~zbroker.frontends.bridge.mirror_partition.MirroredPartition`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from zbroker.errors import ErrorCode
from zbroker.frontends.bridge.callbacks import guarded
from zbroker.frontends.bridge.gateway import RETRY_CODES
from zbroker.frontends.bridge.mirror_commit import PositionCommits
from zbroker.frontends.bridge.mirror_configs import target_configs
from zbroker.frontends.bridge.mirror_partition import RETRY_MAX_MS, MirroredPartition
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

MAX_PENDING_RECORDS = 50_000
MAX_PENDING_BYTES = 64 << 20
#: a source topic missing from every listing for this long is forgotten
FORGET_AFTER_MS = 60_000
#: after handling an event from the source raised, when it is handled again
EVENT_RETRY_MS = 1_000
#: while a topic is being set up (created, positions looked up): the first pause after a failure
#: (doubled after each, up to RETRY_MAX_MS), and how often a creation's outcome is looked for
SETUP_RETRY_MS = 200


def group_name(mirror: str) -> str:
    """The group of the target cluster that holds a mirror's positions."""
    return f"mirror.{mirror}"


class SourceHandle(Protocol):
    """The source side, as the mirror sees it (the net adapter, or a fake in tests).

    ``pause(tps)`` stops reading partitions (none of their records is queued from then on),
    ``resume(tps)`` reads them again from just after the last record queued, ``remove(tps)``
    stops reading them for good.  ``take`` returns queued events, each a tuple:

    - ``("topics", {topic: (partitions, configs, {partition: (log_start, log_end)})})``: a
      listing of the matching source topics (``configs``: zbroker keys for a zbroker source,
      Kafka names and strings for a Kafka one; only values set on the topic);
    - ``("records", topic, partition, [(offset, timestamp, key, value, headers), ...], log_end)``
      (``headers``: a dict, or a list of ``(name, value)`` pairs; ``log_end`` -1 if unknown);
    - ``("error", message)``: the source could not be listed or read (it keeps trying).
    """

    def add(self, positions: dict[tuple[str, int], int]) -> None: ...

    def refresh(self) -> None: ...

    def pause(self, tps: list[tuple[str, int]]) -> None: ...

    def resume(self, tps: list[tuple[str, int]]) -> None: ...

    def remove(self, tps: list[tuple[str, int]]) -> None: ...

    def take(self, limit: int) -> list[tuple]: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class _Topic:
    name: str  # on the source
    target: str
    partitions: int  # on the source, as last listed
    configs: dict[str, Any]
    ready: int = 0  # partitions set up (positions restored, reading)
    busy: bool = False  # a create or a position look-up in flight
    retry_at: int = 0
    backoff: int = 0
    missing_since: int | None = None  # when a listing first lacked it (None: in the last one)


class Mirror:
    """One ``[[mirror]]`` while it runs on this broker (see the module docstring)."""

    kind = "mirror"

    def __init__(self, config, gateway, source: SourceHandle, now_ms: int) -> None:
        self.config = config
        self.name = config.name
        self.group = group_name(config.name)
        self.gateway = gateway
        self.source = source
        self._now = now_ms
        self._topics: dict[str, _Topic] = {}
        self._parts: dict[tuple[str, int], MirroredPartition] = {}  # by source topic-partition
        self._pending = 0  # records read and not yet acknowledged, all partitions
        self._pending_bytes = 0  # their size (mirror_partition.record_size)
        self._taken: deque = deque()  # events taken from the source, not yet handled (the first failed)
        self._event_retry_at: int | None = None
        self._traced = False  # a failed event's traceback was logged once
        self._listed = False
        self._closed = False
        self._failing: dict[str, str] = {}  # what fails now ("source", "append", "commit", "topics") -> message
        self._waiting: set[str] = set()  # those of them that wait out a passing state (retriable)
        self.records = 0
        self.errors = 0
        self.last_error: str | None = None
        self._commits = PositionCommits(gateway, self.group, self._parts.values, self._committed, now_ms)
        self._pumping = False
        self._next_refresh = now_ms + config.refresh_ms
        source.refresh()

    # -- the loop's calls ------------------------------------------------------------------

    def pump(self, now_ms: int) -> None:
        """Take what the source has queued (while there is room) and act on it.  An event is
        dropped only once handled: one whose handling raised is handled again after
        :data:`EVENT_RETRY_MS` (a bug must not skip records)."""
        self._now = now_ms
        if self._pumping:  # an append settled inside this pump: its loop takes more
            return
        if self._event_retry_at is not None and now_ms < self._event_retry_at:
            return
        self._pumping = True
        try:
            while not self._closed and self._has_room():
                if not self._taken:
                    self._taken.extend(self.source.take(1))  # one batch at a time: the bound is kept to a batch
                    if not self._taken:
                        break
                self._on_event(self._taken[0])
                self._taken.popleft()
                if self._event_retry_at is not None:
                    self._event_retry_at = None
                    self._ok("event")
        except Exception as exc:
            self._event_failed(exc)
        finally:
            self._pumping = False

    def _has_room(self) -> bool:
        return self._pending < MAX_PENDING_RECORDS and self._pending_bytes < MAX_PENDING_BYTES

    def _event_failed(self, exc: Exception) -> None:
        self._event_retry_at = self._now + EVENT_RETRY_MS
        message = f"handling a {self._taken[0][0]!r} event from the source failed: {type(exc).__name__}: {exc}"
        if not self._traced:
            self._traced = True
            log.exception("mirror %s: %s; it is handled again in %d ms", self.name, message, EVENT_RETRY_MS)
        self._fail("event", message)

    def tick(self, now_ms: int) -> None:
        self._now = now_ms
        if self._closed:
            return
        if now_ms >= self._next_refresh:
            self._next_refresh = now_ms + self.config.refresh_ms
            self.source.refresh()
        for topic in self._topics.values():
            if topic.ready < topic.partitions and now_ms >= topic.retry_at:
                self._setup(topic)
        for part in self._parts.values():
            part.step(now_ms)
        if not self._closed:
            self._commits.maybe(now_ms)
        self.pump(now_ms)

    def next_deadline(self, now_ms: int) -> int | None:
        if self._closed:
            return None
        due = self._next_refresh
        if self._event_retry_at is not None:
            due = min(due, self._event_retry_at)
        commit = self._commits.deadline()
        if commit is not None:
            due = min(due, commit)
        for topic in self._topics.values():
            if topic.ready < topic.partitions and not topic.busy:  # busy: its answer drives it
                due = min(due, topic.retry_at)
        for part in self._parts.values():
            deadline = part.next_deadline(now_ms)
            if deadline is not None:
                due = min(due, deadline)
        return due

    def close(self, now_ms: int) -> None:
        """Stop: the source thread is told to end; what was acknowledged is committed (best
        effort; after the commit in flight, if there is one, has settled)."""
        if self._closed:
            return
        self._now = now_ms
        self._closed = True
        for part in self._parts.values():
            part.stop()
        self.source.close()
        self._commits.final(now_ms)

    def settled(self) -> bool:
        """After :meth:`close`: the final commit has its answer (a stopping broker waits for it)."""
        return self._commits.settled()

    def status(self, now_ms: int) -> dict:
        ordered = sorted(self._parts.values(), key=lambda p: (p.target, p.partition))
        parts = [part.status() for part in ordered]
        lags = [p["lag"] for p in parts]
        failing = dict(self._failing)
        failing.update({f"append {p.target}-{p.partition}": p.failing for p in ordered if p.failing})
        errors = set(self._failing) - self._waiting or any(p.failing and p.failing_code not in RETRY_CODES for p in ordered)
        state = ("stopped" if self._closed else "error" if errors else "starting" if not self._listed else
                 "waiting" if failing else "running")
        return {"name": self.name, "kind": self.kind, "source": self.config.source, "state": state,
                "topics": len(self._topics), "partitions": parts, "paused": sum(p.paused for p in ordered),
                "pending": self._pending, "pending_bytes": self._pending_bytes, "lag": -1 if -1 in lags else sum(lags),
                "mirrored": self.records, "errors": self.errors, "last_error": self.last_error, "failing": failing}

    # -- events from the source --------------------------------------------------------------

    def _on_event(self, event: tuple) -> None:
        kind = event[0]
        if kind == "records":
            _, topic, partition, records, log_end = event
            self._on_records(topic, partition, records, log_end)
        elif kind == "topics":
            self._on_topics(event[1])
        elif kind == "error":
            self._fail("source", event[1])
        else:
            log.error("mirror %s: unknown event %r from its source", self.name, kind)

    def _on_topics(self, listing: dict) -> None:
        self._listed = True
        self._ok("source")
        for name, topic in list(self._topics.items()):
            if name in listing:
                topic.missing_since = None
            elif topic.missing_since is None:
                topic.missing_since = self._now
            elif self._now - topic.missing_since >= FORGET_AFTER_MS:
                self._forget(topic)
        for name, (partitions, configs, offsets) in sorted(listing.items()):
            if not self.config.matches(name):
                continue
            topic = self._topics.get(name)
            if topic is None:
                configs, skipped = target_configs(self.config.scheme, configs)
                if skipped:
                    log.info("mirror %s: topic %s: source configs zbroker has no setting for are not copied: %s",
                             self.name, name, ", ".join(sorted(skipped)))
                topic = self._topics[name] = _Topic(name, self.config.target(name), partitions, configs)
                log.info("mirror %s: mirroring %s (%d partitions) into %s", self.name, name, partitions, topic.target)
            elif partitions > topic.partitions:
                log.info("mirror %s: %s grew to %d partitions", self.name, name, partitions)
                topic.partitions = partitions
            for p, (start, end) in offsets.items():
                part = self._parts.get((name, p))
                if part is not None:
                    part.log_start, part.source_end = start, max(part.source_end, end)
            if topic.ready < topic.partitions:
                self._setup(topic)

    def _on_records(self, topic: str, partition: int, records: list, log_end: int) -> None:
        part = self._parts.get((topic, partition))
        if part is None:
            return  # not (or no longer) assigned: nothing asked for it
        self._ok("source")
        size = part.backlog_bytes
        self._pending += part.offer(records, log_end)
        self._pending_bytes += part.backlog_bytes - size
        if part.full() and not part.paused:
            self.source.pause([(topic, partition)])
            part.paused = True
            log.info("mirror %s: %s-%d paused on the source: %d records (%d bytes) wait to be appended to %s",
                     self.name, topic, partition, part.backlog, part.backlog_bytes, part.target)
        part.send(self._now)

    def _forget(self, topic: _Topic) -> None:
        """``topic`` is gone from the source: stop reading it, forget its partitions."""
        tps = [tp for tp in self._parts if tp[0] == topic.name]
        for tp in tps:
            part = self._parts.pop(tp)
            self._pending -= part.backlog
            self._pending_bytes -= part.backlog_bytes
            part.stop()
        del self._topics[topic.name]
        if tps:
            self.source.remove(tps)
        log.info("mirror %s: %s is gone from the source (not listed for %d s): no longer mirrored (%s stays)",
                 self.name, topic.name, FORGET_AFTER_MS // 1000, topic.target)

    # -- topics: create, grow, restore positions -------------------------------------------

    def _setup(self, topic: _Topic) -> None:
        """Bring the target topic to the source's partition count, then start reading the
        partitions not yet read from their committed positions."""
        if topic.busy or self._closed:
            return
        have = self.gateway.partition_count(topic.target)
        if have is None:
            self._call(topic, "create", self.gateway.create_topic(topic.target, topic.partitions, topic.configs, self._now))
        elif have < topic.partitions:
            self._call(topic, "grow", self.gateway.create_partitions(topic.target, topic.partitions, self._now))
        elif topic.ready < topic.partitions:
            new = [(topic.target, p) for p in range(topic.ready, topic.partitions)]
            self._call(topic, "restore", self.gateway.committed(self.group, new, self._now))

    def _call(self, topic: _Topic, what: str, completion) -> None:
        topic.busy = True
        completion.on_done(guarded(lambda c: self._setup_done(topic, what, c), f"a mirror's {what} answer"))

    def _setup_done(self, topic: _Topic, what: str, completion) -> None:
        topic.busy = False
        if self._closed or self._topics.get(topic.name) is not topic:  # stopped, or the topic was forgotten
            return
        error = completion.error
        if error is not None and not (what == "create" and error.code == ErrorCode.TOPIC_ALREADY_EXISTS):
            if what == "create" and error.code == ErrorCode.INVALID_CONFIG and topic.configs:
                log.warning("mirror %s: %s cannot be created with the source's configs %s (%s); creating it without them",
                            self.name, topic.target, topic.configs, error.message)
                topic.configs = {}
            topic.backoff = min(RETRY_MAX_MS, max(SETUP_RETRY_MS, topic.backoff * 2))
            topic.retry_at = self._now + topic.backoff
            self._fail("topics", f"{what} {topic.target}: {error.message}", error.code)
            return
        self._ok("topics")
        topic.backoff = 0
        if what == "restore":
            self._start_reading(topic, completion.value or {})
        elif topic.ready < topic.partitions:
            self._setup(topic)

    def _start_reading(self, topic: _Topic, committed: dict) -> None:
        positions = {}
        for p in range(topic.ready, topic.partitions):
            offset = committed.get((topic.target, p))
            part = MirroredPartition(topic.name, p, topic.target, -1 if offset is None else offset, self.gateway,
                                     self.config.scheme == "kafka", self._stored, self._append_failed)
            self._parts[(topic.name, p)] = part
            positions[(topic.name, p)] = part.start
        topic.ready = topic.partitions
        self.source.add(positions)

    # -- appending and committing --------------------------------------------------------------

    def _stored(self, part: MirroredPartition, count: int, size: int) -> None:
        self._pending -= count
        self._pending_bytes -= size
        self.records += count
        if part.paused and part.drained():
            self.source.resume([(part.source_topic, part.partition)])
            part.paused = False
            log.info("mirror %s: %s-%d resumed on the source", self.name, part.source_topic, part.partition)
        self.pump(self._now)

    def _append_failed(self, part: MirroredPartition, code: int, message: str) -> None:
        self._count_failure("append", message, code)

    def _committed(self, error) -> None:
        if error is not None:
            self._fail("commit", f"commit to group {self.group}: {error.message}", error.code)
        else:
            self._ok("commit")

    def _fail(self, what: str, message: str, code: int | None = None) -> None:
        """``what`` ("source", "topics", "commit") failed; it is tried again."""
        self._failing[what] = message
        if self._count_failure(what, message, code):
            self._waiting.add(what)
        else:
            self._waiting.discard(what)

    def _count_failure(self, what: str, message: str, code: int | None) -> bool:
        """What waits out a passing state of the cluster (a leader or coordinator moving, a topic
        just created: the retriable codes) is logged at INFO (returns True: the state is
        ``waiting``); anything else is an error: counted, ``last_error``, a WARNING."""
        if code is not None and code in RETRY_CODES:
            _limited.log(self._now / 1000.0, f"mirror-{what}-wait", logging.INFO, "mirror %s: %s", self.name, message)
            return True
        self.errors += 1
        self.last_error = message
        _limited.log(self._now / 1000.0, f"mirror-{what}", logging.WARNING, "mirror %s: %s", self.name, message)
        return False

    def _ok(self, what: str) -> None:
        self._failing.pop(what, None)
        self._waiting.discard(what)
