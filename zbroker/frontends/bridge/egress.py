"""An egress bridge: records of some topics out to a plain ZeroMQ PUB or PUSH socket (sans-IO).

Theory of operation.  :class:`EgressBridge` reads the partitions of its topics through the
bridge gateway (which routes to each partition's leader and authorizes as ``Bridge:NAME``)
and hands each record to ``send(frames)``, a callback into the bridge's socket
(:mod:`zbroker.net.bridge_out`).  Every message is three frames, on PUB and PUSH alike::

    [topic, key (b"" when none), value (b"" when none)]

``send`` answers a handle whose ``done`` says when ZeroMQ released the message (written out
to a peer's connection), or None when the socket would block: a PUSH with no PULL peer or
every peer's queue at the high-water mark, an XPUB (XPUB_NODROP) with a matching subscriber
at its high-water mark.  The record is then held and offered again a few ms later (backing
off to 50 ms): nothing is dropped, and the partition goes no further meanwhile.

Per partition (:class:`~zbroker.frontends.bridge.egress_feed.Feed`):

    start    --  latest | earliest (list_offset), or committed (the group ``bridge.NAME``,
                 :func:`group_name`; latest when it has committed nothing for the partition).
                 Partitions and topics that appear after the bridge's first look start at
                 the earliest offset: all their records are newer than the bridge
                 (:mod:`~zbroker.frontends.bridge.egress_starts`).
    fetch    --  one long-poll fetch (``max_wait_ms``) in flight per partition, at most
                 ``max_in_flight`` per bridge; the next one only once the last answer's
                 records were all handed over, and none while the bridge holds its byte
                 budget (:data:`~zbroker.frontends.bridge.egress_feed.BRIDGE_BYTES`) decoded:
                 an answer that comes then waits undecoded.
    commit   --  every ``commit_ms`` and at close: per partition the position before which
                 ZeroMQ has released every record (never past what was handed over; PUSH:
                 as of one interval before, :mod:`~zbroker.frontends.bridge.egress_commit`).
                 A PULL peer that disconnects sends every partition back to its last commit
                 (:meth:`EgressBridge.on_peer_gone`): ZeroMQ dropped what it queued for it.
                 At most one such rewind per ``commit_ms``: disconnects in between are
                 coalesced into the next one, and commits wait for it.

A fetch that finds its offset out of range (retention deleted the records, the topic was
recreated) moves to the log start if the position is below it, else to the log end; the
offsets passed over are counted (``skipped``) and logged.  Errors back off (retriable ones
100 ms doubling to 2 s, others 5 s), are counted and the last one is shown in ``status``.

Replay (PUB only, ``replay = N``): :meth:`on_subscribe` takes each new subscription's prefix;
the topics it matches are replayed (:mod:`~zbroker.frontends.bridge.egress_replay`) before
live data goes on -- live sending pauses while a replay is read and sent.
"""

from __future__ import annotations

import logging
from typing import Callable

from zbroker.errors import ErrorCode, RequestError
from zbroker.ratelimit import RateLimitedLog

from .egress_commit import Commits
from .callbacks import guarded
from .egress_feed import BRIDGE_BYTES, HOLD_MS, MAX_HOLD_MS, Feed
from .egress_replay import Replays
from .egress_slow import SlowSubscribers
from .egress_starts import Starts
from .gateway import retriable

log = logging.getLogger(__name__)

COMMIT_MS = 1000
MAX_WAIT_MS = 500  # a fetch waits this long for data (long poll)
FETCH_BYTES = 256 << 10
MAX_IN_FLIGHT = 32
EMPTY_BACKOFF_MS = 50  # after an answer without data (a gateway that does not long-poll must not spin)
BURST = 4096  # records handed over per tick before other work gets a turn
LONG_HOLD_MS = 10_000  # a partition held this long is logged as a WARNING (a peer that does not read)


def group_name(bridge: str) -> str:
    """The consumer group that holds an egress bridge's positions (apart from applications'
    groups and from mirrors' ``mirror.NAME``)."""
    return f"bridge.{bridge}"


def _backoff(failures: int, retriable: bool) -> int:
    return min(100 << min(failures, 5), 2000) if retriable else 5000


class EgressBridge(Starts):
    """One ``[[bridge]]`` of socket pub or push (see the module docstring)."""

    kind = "egress"

    def __init__(self, config, gateway, send: Callable[[list], object], now_ms: int, *, commit_ms: int = COMMIT_MS,
                 max_wait_ms: int = MAX_WAIT_MS, fetch_bytes: int = FETCH_BYTES, max_in_flight: int = MAX_IN_FLIGHT,
                 nodrop: Callable[[bool], None] | None = None) -> None:
        self.config = config
        self.name = config.name
        self.gateway = gateway
        self._send = send
        self.commit_ms, self.max_wait_ms, self.fetch_bytes, self.max_in_flight = commit_ms, max_wait_ms, fetch_bytes, max_in_flight
        self.topic_frames = {t: t.encode() for t in config.topics}
        self.feeds: dict[tuple[str, int], Feed] = {}
        self._order: list[Feed] = []  # round-robin order of sending and fetching
        self._turn = 0
        self._looked = False
        self._next_look = now_ms
        self.group = group_name(config.name)
        self._commits = Commits(gateway, self.group, config.start == "committed", commit_ms, now_ms, self._report,
                                lag=config.socket == "push")
        self._now = now_ms
        self.max_bytes = BRIDGE_BYTES
        self._replays = Replays(config.replay, self.topic_frames, fetch_bytes, send, self._report, self.max_bytes)
        self._hold_ms = HOLD_MS
        self._slow = SlowSubscribers(nodrop, LONG_HOLD_MS, self._give_up_log)  # PUB: NODROP given up for a while
        self.closed = False
        self.missing: set[str] = set()  # configured topics that do not exist (yet)
        self.sent = self.bytes = self.subscriptions = self.errors = 0
        self.retries = self.rewinds = self.peer_disconnects = 0
        self._rewind_due: int | None = None  # a rewind is pending (disconnects coalesced): when it runs
        self._coalesced = 0  # disconnects the pending rewind stands for
        self._last_rewind: int | None = None
        self.last_error: str | None = None
        self._log = RateLimitedLog(log, burst=5, window_s=60.0)

    # -- the host's interface ------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        if self.closed:
            return
        self._now = now_ms
        if now_ms >= self._next_look:
            self._look(now_ms)
        if self._rewind_due is not None and now_ms >= self._rewind_due:
            self._rewind(now_ms)
        self._resolve_starts(now_ms)
        self._replays.step(self.gateway, self._order, self._looked, now_ms)
        self._fetch(now_ms)
        self._flush(now_ms)
        self._slow.check(now_ms, self._order, self._replays)
        if self._rewind_due is None and self._commits.due(now_ms, self._order):
            self._commits.commit(now_ms, self._order)

    def next_deadline(self, now_ms: int) -> int | None:
        """When :meth:`tick` has work next (absolute ms; ``now_ms`` or earlier: at once)."""
        if self.closed:
            return None
        if self._rewind_due is not None:  # commits wait for the rewind
            due = min(self._next_look, self._rewind_due)
        else:
            due = min(self._next_look, self._commits.next_at)
            if self._commits.anchor_due(self._order):
                return now_ms
        for f in self._order:
            if not f.started and not f.resolving:
                due = min(due, f.not_before)
        if self._slow.until is not None:
            due = min(due, self._slow.until)
        deferred = self._replays.next_deferred()
        if deferred is not None:
            due = min(due, deferred)
        replay_due = self._replays.deadline(now_ms, due, self._order, self._looked)
        if replay_due is not None:  # live data waits for the replay
            return min(due, replay_due)
        in_flight = sum(1 for f in self._order if f.fetching is not None)
        room = self._room()
        for f in self._order:
            if f.pending:
                due = min(due, f.not_before)
            elif f.raw is not None and room:
                return now_ms
            elif in_flight < self.max_in_flight and room and f.wants_fetch(f.not_before) and self._commits.anchored(f):
                due = min(due, f.not_before)
        return due

    def close(self, now_ms: int) -> None:
        """Commit what ZeroMQ released and stop (fetches in flight are abandoned)."""
        if self.closed:
            return
        self._now = now_ms
        if self._rewind_due is not None:  # a peer's dropped records must not be committed as sent
            self._rewind(now_ms)
        self._commits.commit(now_ms, self._order, force=True)
        self.closed = True
        for f in self._order:
            if f.fetching is not None:
                f.fetching.abandon()
                f.fetching = None
        self._replays.abandon()

    def settled(self) -> bool:
        """After :meth:`close`: whether its last commit has its answer (the host waits for it)."""
        return not self._commits.in_flight

    def status(self, now_ms: int) -> dict:
        feeds = self._order
        lags = [f.lag for f in feeds if f.lag is not None]
        held = sum(len(f.pending) for f in feeds if f.not_before > now_ms and f.pending)
        since = [f.held_since for f in feeds if f.held_since is not None]
        return {
            "name": self.name, "kind": self.kind, "socket": self.config.socket, "endpoint": self.config.endpoint,
            "state": self._state(now_ms), "topics": list(self.config.topics), "missing_topics": sorted(self.missing),
            "start": self.config.start, "sent": self.sent, "bytes": self.bytes, "lag": sum(lags) if lags else None,
            "held": held + len(self._replays.out), "held_bytes": self.held_bytes(), "subscriptions": self.subscriptions,
            "replays": self._replays.count, "replays_coalesced": self._replays.coalesced,
            "replayed": self._replays.records, "skipped": sum(f.skipped for f in feeds), "commits": self._commits.count,
            "rewinds": self.rewinds, "peer_disconnects": self.peer_disconnects,
            "dropped_slow_subscriber": self._slow.count, "sent_while_dropping": self._slow.sent,
            "blocked_ms": now_ms - min(since) if since else 0,
            "retries": self.retries, "errors": self.errors, "last_error": self.last_error, "partitions": [f.status() for f in feeds],
        }

    def _state(self, now_ms: int) -> str:
        if self.closed:
            return "closed"
        if self._replays.active:
            return "replaying"
        if any(f.pending and f.not_before > now_ms for f in self._order):
            return "blocked"
        if not self._order or not all(f.started for f in self._order):
            return "starting"
        return "running"

    # -- subscriptions (PUB: the XPUB reports each one) -------------------------------------

    def on_subscribe(self, prefix: bytes, now_ms: int) -> None:
        """A subscriber subscribed to ``prefix``: replay the topics it matches (``replay`` > 0)."""
        self.subscriptions += 1
        matched = [] if self.closed else self._replays.want(prefix, now_ms)
        if matched:  # (a flood of subscriptions is coalesced, and its log lines rate-limited)
            self._log.log(now_ms / 1000, "subscription", logging.INFO,
                          "bridge %s: a subscription to %r: replaying the last %d records of %s (%d subscriptions so far, "
                          "%d served by a replay already due)", self.name, prefix[:64], self.config.replay,
                          ", ".join(matched), self.subscriptions, self._replays.coalesced)

    # -- PULL peers (PUSH: the socket reports disconnections) ------------------------------

    def on_peer_gone(self, now_ms: int) -> None:
        """A PULL peer disconnected: ZeroMQ dropped what it had queued for it.  Every partition
        goes back to its last committed position (trailing what was released, see
        :mod:`~zbroker.frontends.bridge.egress_commit`) and sends from there again: the peers
        get some records twice, none is lost.

        A peer reconnecting in a loop must not make the bridge send the same records again and
        again: at most one rewind runs per ``commit_ms``; a disconnect within that time of the
        last rewind is coalesced into one rewind at its end.  Until it runs nothing is committed
        (what ZeroMQ released since may include what it dropped), so the rewind goes back to a
        commit made before the disconnects.  The commit advances again once about two commit
        intervals pass without a disconnect (one to take a snapshot, one to commit it): a peer
        reconnecting faster than that keeps the commit where it is (sound, but each interval
        sends again from it), which the WARNING (rate-limited) names."""
        if self.closed:
            return
        self._now = now_ms
        self.peer_disconnects += 1
        self._coalesced += 1
        if self._rewind_due is None:
            self._rewind_due = now_ms if self._last_rewind is None else max(now_ms, self._last_rewind + self.commit_ms)
        if now_ms >= self._rewind_due:
            self._rewind(now_ms)

    def _rewind(self, now_ms: int) -> None:
        coalesced, self._coalesced = self._coalesced, 0
        frequent = coalesced > 1 or (self._last_rewind is not None and now_ms - self._last_rewind < 3 * self.commit_ms)
        self._rewind_due = None
        self._last_rewind = now_ms
        rewound = [(f, at) for f in self._order if not f.resolving for at in [f.rewind()] if at is not None]
        self._commits.forget(self._order)
        if rewound:
            self.rewinds += 1
            self._log.log(now_ms / 1000, "rewind", logging.WARNING if frequent else logging.INFO,
                          "bridge %s: %d PULL peer disconnection(s) (what ZeroMQ had queued for them is lost; %d rewinds "
                          "in all, at most one per %d ms): sending again from %s", self.name, coalesced, self.rewinds,
                          self.commit_ms, ", ".join(f"{f.topic}-{f.partition}@{at}" for f, at in rewound))

    def _call(self, feeds: list[Feed], ask: Callable, answered: Callable, what: str) -> None:
        try:
            answer = ask()
        except RequestError as exc:
            for f in feeds:
                self._failed(f, exc, what)
            return
        answer.on_done(guarded(answered, what))

    def _failed(self, f: Feed, exc: RequestError, what: str) -> None:
        """An error about ``f``: count it, log it (rate-limited), and back off."""
        f.resolving = False
        again = retriable(exc)
        f.not_before = self._now + _backoff(f.failures, again)
        f.failures += 1
        self._report(f"{f.topic}-{f.partition}: {what}: {exc.code.name}: {exc.message}", again, "partition")

    def _report(self, text: str, again: bool, kind: str, level: int = logging.WARNING) -> None:
        """Count and log (rate-limited) a failure: one that trying again may cure as a retry
        (INFO), any other as an error (``level``; shown in ``status`` as ``last_error``)."""
        if again:
            self.retries += 1
        else:
            self.errors += 1
            self.last_error = text
        self._log.log(self._now / 1000, kind, logging.INFO if again else level, "bridge %s: %s", self.name, text)

    # -- fetching -------------------------------------------------------------------------

    def _rotated(self) -> list[Feed]:
        n = len(self._order)
        if not n:
            return []
        self._turn = (self._turn + 1) % n
        return self._order[self._turn:] + self._order[:self._turn]

    def _fetch(self, now_ms: int) -> None:
        if self._replays.active:
            return  # a replay goes first
        held = self.held_bytes()
        for f in self._rotated():  # answers that waited for room in the byte budget
            if f.raw is not None and held < self.max_bytes:
                data, f.raw = f.raw, None
                held -= f.pending_bytes
                self._decode(f, data)
                held += f.pending_bytes
        if held >= self.max_bytes:
            return
        in_flight = sum(1 for f in self._order if f.fetching is not None)
        for f in self._rotated():
            if in_flight >= self.max_in_flight:
                return
            if not f.wants_fetch(now_ms) or not self._commits.anchored(f):
                continue
            in_flight += 1
            try:
                answer = self.gateway.fetch(f.topic, f.partition, f.fetch_at, self.fetch_bytes, now_ms,
                                            max_wait_ms=self.max_wait_ms)
            except RequestError as exc:
                self._failed(f, exc, "fetching")
                continue
            f.fetching = answer
            answer.on_done(guarded(lambda c, f=f: self._fetched(f, c), "a fetch answer"))

    def _fetched(self, f: Feed, c) -> None:
        if self.closed or f.fetching is not c:
            return
        f.fetching = None
        if c.error is not None:
            if c.error.code == ErrorCode.OFFSET_OUT_OF_RANGE:
                self._reset(f)
            else:
                self._failed(f, c.error, "fetching")
            return
        fetched = c.value
        f.failures = 0
        f.end, f.log_start = fetched.high_watermark, fetched.log_start_offset
        damaged = getattr(fetched, "damaged", None)
        if damaged and not fetched.data and damaged[1] > f.fetch_at:
            self._skip(f, damaged[1], "damaged on disk")
            return
        if self._room():
            self._decode(f, fetched.data)
        else:  # decoded once the bridge has sent some of what it holds
            f.raw = fetched.data

    def held_bytes(self) -> int:
        """Payload bytes held decoded: every partition's pending records and the replay's."""
        return sum(f.pending_bytes for f in self._order) + self._replays.bytes

    def _room(self) -> bool:
        return self.held_bytes() < self.max_bytes

    def _decode(self, f: Feed, data: bytes) -> None:
        before = f.fetch_at
        error = f.take(data, self.topic_frames[f.topic])
        if error is not None:
            self._report(f"{f.topic}-{f.partition}: skipped a batch that cannot be read: {error}", False, "corrupt",
                         logging.ERROR)
        if f.fetch_at == before:
            f.not_before = self._now + EMPTY_BACKOFF_MS

    # -- sending --------------------------------------------------------------------------

    def _flush(self, now_ms: int) -> None:
        """Hand pending records to the socket; a send that would block holds its partition."""
        self._replays.flush(now_ms)
        if self._replays.active:
            return
        budget = BURST
        held = False
        for f in self._rotated():
            pending = f.pending
            if not pending or f.not_before > now_ms:
                continue
            while pending and budget:
                frames, after = pending[0]
                handle = self._send(frames)
                if handle is None:
                    self._held(f, now_ms)
                    held = True
                    break
                pending.popleft()
                f.pending_bytes -= len(frames[1]) + len(frames[2])
                f.handed(after, handle)
                f.held_since = None
                self.sent += 1
                if self._slow.until is not None:
                    self._slow.sent += 1
                self.bytes += len(frames[1]) + len(frames[2])
                budget -= 1
            if not budget:
                break
        self._hold_ms = min(MAX_HOLD_MS, self._hold_ms * 2) if held else HOLD_MS

    def _held(self, f: Feed, now_ms: int) -> None:
        f.not_before = now_ms + self._hold_ms
        if f.held_since is None:
            f.held_since = now_ms
        long = now_ms - f.held_since >= LONG_HOLD_MS
        self._log.log(now_ms / 1000, "held_long" if long else "held", logging.WARNING if long else logging.INFO,
                      "bridge %s: the %s socket would block (%s): holding %s-%d at offset %d for %d ms", self.name,
                      self.config.socket, "no PULL peer, or every peer's queue at hwm" if self.config.socket == "push"
                      else "a subscriber of the topic does not read: hwm messages unread", f.topic, f.partition,
                      f.sent_to, now_ms - f.held_since)

    def _give_up_log(self, now_ms: int, held_ms: int, drop_ms: int, count: int) -> None:
        self._log.log(now_ms / 1000, "slow_subscriber", logging.WARNING,
                      "bridge %s: a subscriber has not read for %d ms (its queue is at hwm): NODROP given up for %d ms, "
                      "ZeroMQ drops what that subscriber cannot take (%d times so far); the others get live data",
                      self.name, held_ms, drop_ms, count)
