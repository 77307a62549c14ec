"""Replay for late joiners of a PUB egress bridge: the last N records of each topic.

ZeroMQ's last-value-cache pattern: the bridge's XPUB reports every new subscription (with
XPUB_VERBOSE even to a prefix someone already has), and the bridge answers it by publishing
the last ``replay`` records of each of its topics whose name starts with the prefix, before
live data goes on.  The replay goes out on the one PUB socket, so every subscriber of a
matching prefix receives it, not only the one that joined.

Which records: the replay of a topic ends where its live data goes on (each partition's
position when the subscription was read, the next record the bridge will send), so a
subscriber that joins sees no gap between replay and live data.  It may see a few records
twice: libzmq adds the subscription to the XPUB's filter in its I/O thread before the bridge
reads it, so live records sent in between reach it live and again in the replay.  The bridge
cannot know that moment; ending the replay earlier could leave a gap, so it errs on duplicates.
Of each partition the last ``replay`` records before that position are read; of those, the ``replay`` newest by timestamp across the
partitions are taken (:func:`newest`), each partition's share being its newest records, and
they are published in timestamp order, each partition's records still in offset order.
A topic of one partition replays exactly its last N records.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from typing import Callable

from storage.batch import walk
from storage.decode import decode_some_batches
from zbroker.core.fetch import EARLIEST_TIMESTAMP
from zbroker.errors import ErrorCode, RequestError

from .callbacks import guarded
from .egress_feed import DECODE_BUDGET, HOLD_MS, MAX_HOLD_MS, Feed

log = logging.getLogger(__name__)

START_WAIT_MS = 5000  # the longest a replay waits for the positions of its topics' partitions
#: a topic is replayed at most once per this long: a subscription flood (XPUB_VERBOSE reports
#: every subscribe, also a repeated one) cannot keep live data paused
MIN_INTERVAL_MS = 1000

#: (timestamp, offset, frames) of one record read for a replay
Entry = tuple[int, int, list]


def newest(per_partition: list[list[Entry]], n: int) -> list[list]:
    """The frames of the ``n`` newest records (by timestamp) of one topic, in publishing order.

    ``per_partition``: each partition's records in offset order.  Each partition's share is a
    suffix of its list (taken from the tails, newest tail first), so its records keep their
    offset order; the shares are merged by timestamp.  Runtime: O(n log p) for p partitions.
    """
    taken = [0] * len(per_partition)
    heap = [(-recs[-1][0], i) for i, recs in enumerate(per_partition) if recs]
    heapq.heapify(heap)
    for _ in range(n):
        if not heap:
            break
        _, i = heapq.heappop(heap)
        taken[i] += 1
        recs = per_partition[i]
        if taken[i] < len(recs):
            heapq.heappush(heap, (-recs[-1 - taken[i]][0], i))
    shares = [recs[len(recs) - k:] for recs, k in zip(per_partition, taken) if k]
    return [entry[2] for entry in heapq.merge(*shares, key=lambda entry: entry[0])]


class Replays:
    """A PUB bridge's replays: the topics wanted, the round being read, the records to publish.

    A round starts once every partition of the topics wanted has its position (after a
    broker's start, subscribers reconnect before the bridge knows where it is), or after
    :data:`START_WAIT_MS`, with the partitions known by then.  While :attr:`active` (from
    the subscription until the replay is published) the bridge's live sending waits: a
    replay goes first.

    Coalescing (subscription floods): a subscription to a topic already wanted, or in the
    round being read (nothing of it published yet, so the new subscriber gets all of it),
    needs no replay of its own.  A topic whose last round started less than
    :data:`MIN_INTERVAL_MS` ago is *deferred* to then: one round serves every subscription
    in between, and live data is not paused while a topic waits (the new subscriber may then
    get some live records before its replay, and again in it).  ``send`` is
    the socket's (None: would block; the record is offered again, backing off 2 to 50 ms);
    ``report(text, retriable, kind)`` counts and logs a failed read."""

    def __init__(self, n: int, topic_frames: dict[str, bytes], fetch_bytes: int, send: Callable[[list], object],
                 report: Callable[[str, bool, str], None], max_bytes: int = 64 << 20) -> None:
        self.n, self.topic_frames, self.fetch_bytes, self.max_bytes = n, topic_frames, fetch_bytes, max_bytes
        self.out_bytes = 0  # payload bytes in ``out``
        self._send, self._report = send, report
        self.wanted: set[str] = set()
        self.wanted_since = 0
        self.deferred: dict[str, int] = {}  # topic -> when it may be replayed again
        self.last: dict[str, int] = {}  # topic -> when its last round started
        self.coalesced = 0  # subscriptions served by a replay already wanted, read, or deferred
        self.round: ReplayRound | None = None
        self.out: deque[list] = deque()
        self.held_until = 0
        self.held_since: int | None = None  # when the socket first refused the next record
        self._hold_ms = HOLD_MS
        self.count = self.records = 0

    @property
    def bytes(self) -> int:
        """Payload bytes held: the round being read and what waits to be published."""
        return self.out_bytes + (self.round.bytes if self.round is not None else 0)

    @property
    def active(self) -> bool:
        return self.round is not None or bool(self.out) or bool(self.wanted)

    def want(self, prefix: bytes, now_ms: int) -> list[str]:
        """A subscription to ``prefix``: the topics it matches that get a replay of their own
        (returned; the others are coalesced, see the class docstring)."""
        if self.n <= 0:
            return []
        reading = self.round.reads if self.round is not None else {}
        fresh = []
        for t, frame in self.topic_frames.items():
            if not frame.startswith(prefix):
                continue
            if t in self.wanted or t in self.deferred or t in reading:
                self.coalesced += 1
            elif now_ms < self.last.get(t, now_ms - MIN_INTERVAL_MS) + MIN_INTERVAL_MS:
                self.deferred[t] = self.last[t] + MIN_INTERVAL_MS
                self.coalesced += 1
            else:
                fresh.append(t)
        self._add(fresh, now_ms)
        return fresh

    def _add(self, topics: list[str], now_ms: int) -> None:
        if topics and not self.wanted:
            self.wanted_since = now_ms
        self.wanted.update(topics)

    def next_deferred(self) -> int | None:
        """When a deferred topic may be replayed (live data goes on meanwhile), None: none."""
        return min(self.deferred.values()) if self.deferred else None

    def _undefer(self, now_ms: int) -> None:
        due = [t for t, at in self.deferred.items() if now_ms >= at]
        for t in due:
            del self.deferred[t]
        self._add(due, now_ms)

    def _may_start(self, feeds: list[Feed], looked: bool, now_ms: int) -> bool:
        return (self.round is None and not self.out and bool(self.wanted)
                and (looked and all(f.started for f in feeds if f.topic in self.wanted)
                     or now_ms >= self.wanted_since + START_WAIT_MS))

    def deadline(self, now_ms: int, due: int, feeds: list[Feed], looked: bool) -> int | None:
        """When there is replay work (``due``: the bridge's other timers), None: none."""
        if self.out:
            return min(due, self.held_until)
        if self.round is not None:  # its fetches answer through callbacks; then there is a next step
            return now_ms if self.round.ready else due
        if self.wanted:  # waiting for the partitions' positions: they come through callbacks
            return now_ms if self._may_start(feeds, looked, now_ms) else min(due, self.wanted_since + START_WAIT_MS)
        return None

    def step(self, gateway, feeds: list[Feed], looked: bool, now_ms: int) -> None:
        """Start a round for the topics wanted (each ends at its partitions' positions), go on
        reading it, and publish it once read."""
        if self.deferred:
            self._undefer(now_ms)
        if self._may_start(feeds, looked, now_ms):
            ends: dict[str, dict[int, int]] = {}
            for f in feeds:
                if f.topic in self.wanted and f.started:
                    ends.setdefault(f.topic, {})[f.partition] = f.sent_to
            self.wanted = set()
            self.last.update((t, now_ms) for t in ends)
            self.round = ReplayRound(ends, self.n, self.topic_frames, self.fetch_bytes, self._failed, self.max_bytes)
        if self.round is not None:
            self.round.step(gateway, now_ms)
            if self.round.done:
                frames = self.round.frames()
                self.out.extend(frames)
                self.out_bytes += sum(len(f[1]) + len(f[2]) for f in frames)
                self.round = None
                self.count += 1
        self.flush(now_ms)

    def flush(self, now_ms: int) -> None:
        if now_ms < self.held_until:
            return
        out = self.out
        while out:
            if self._send(out[0]) is None:
                if self.held_since is None:
                    self.held_since = now_ms
                self.held_until = now_ms + self._hold_ms
                self._hold_ms = min(MAX_HOLD_MS, self._hold_ms * 2)
                return
            self.records += 1
            self.held_since = None
            frames = out.popleft()
            self.out_bytes -= len(frames[1]) + len(frames[2])
        self._hold_ms = HOLD_MS

    def unhold(self, now_ms: int) -> None:
        """Offer the held record again at once (the socket stopped refusing)."""
        self.held_since = None
        self.held_until = now_ms

    def abandon(self) -> None:
        if self.round is not None:
            self.round.abandoned = True

    def _failed(self, topic: str, partition: int, exc: RequestError) -> None:
        self._report(f"{topic}-{partition}: reading the replay (cut short): {exc.code.name}: {exc.message}", False, "replay")


class _Read:
    """The records of one partition in [at, stop), at most the last ``keep`` of them."""

    def __init__(self, topic: str, partition: int, at: int, stop: int, keep: int) -> None:
        self.topic, self.partition, self.at, self.stop = topic, partition, at, stop
        self.records: deque[Entry] = deque()
        self.keep = keep
        self.busy = False
        self.done = at >= stop
        self.reset = False  # moved to the log start once already (retention took the records before)


class ReplayRound:
    """Reads the replay of some topics through the gateway; :attr:`done` once every read ended.

    ``ends``: topic -> {partition: the position where its live data goes on}; ``on_error``
    is told of each failed read (that partition's share is then what was read before).
    It holds at most ``max_bytes`` of payload (plus one decoded fetch): past that, the
    oldest records of the partition being read are let go, so fewer than N may be replayed."""

    def __init__(self, ends: dict[str, dict[int, int]], n: int, topic_frames: dict[str, bytes], fetch_bytes: int,
                 on_error: Callable[[str, int, RequestError], None], max_bytes: int = 64 << 20) -> None:
        self.n = n
        self.max_bytes = max_bytes
        self.bytes = 0
        self.topic_frames = topic_frames
        self.fetch_bytes = fetch_bytes
        self.on_error = on_error
        self.reads = {topic: [_Read(topic, p, max(0, end - n), end, n) for p, end in sorted(parts.items())]
                      for topic, parts in ends.items()}
        self.abandoned = False

    @property
    def done(self) -> bool:
        return all(r.done for reads in self.reads.values() for r in reads)

    @property
    def ready(self) -> bool:
        """:meth:`step` has something to do (a read to ask for), or the round is done."""
        reads = [r for rs in self.reads.values() for r in rs if not r.done]
        return not reads or any(not r.busy for r in reads)

    def step(self, gateway, now_ms: int) -> None:
        """Ask for what is not read yet (one fetch per partition in flight)."""
        for reads in self.reads.values():
            for r in reads:
                if not r.done and not r.busy:
                    self._fetch(gateway, r, now_ms)

    def frames(self) -> list[list]:
        """What to publish: each topic's newest ``n`` records (topics in the config's order)."""
        out: list[list] = []
        for reads in self.reads.values():
            out.extend(newest([list(r.records) for r in reads], self.n))
        return out

    def _fetch(self, gateway, r: _Read, now_ms: int) -> None:
        r.busy = True
        try:
            answer = gateway.fetch(r.topic, r.partition, r.at, self.fetch_bytes, now_ms, max_wait_ms=0)
        except RequestError as exc:
            self._failed(r, exc)
            return
        answer.on_done(guarded(lambda c: self._fetched(gateway, r, c, now_ms), "a replay fetch answer"))

    def _failed(self, r: _Read, exc: RequestError) -> None:
        r.busy, r.done = False, True
        self.on_error(r.topic, r.partition, exc)

    def _fetched(self, gateway, r: _Read, c, now_ms: int) -> None:
        if self.abandoned:
            return
        if c.error is not None:
            if c.error.code == ErrorCode.OFFSET_OUT_OF_RANGE and not r.reset:
                r.reset = True  # the oldest of the N were deleted: read from the log start
                self._from_log_start(gateway, r, now_ms)
            else:
                self._failed(r, c.error)
            return
        fetched = c.value
        data = fetched.data
        decoded = decode_some_batches(data, r.topic, r.partition, r.at, True, tuple, DECODE_BUDGET)
        frame = self.topic_frames[r.topic]
        records = r.records
        for rec in decoded.records:
            if rec[2] >= r.stop:
                break
            key, value = rec[4] or b"", rec[5] or b""
            records.append((rec[3], rec[2], [frame, key, value]))
            self.bytes += len(key) + len(value)
            while records and (len(records) > r.keep or self.bytes > self.max_bytes):  # the oldest go
                old = records.popleft()[2]
                self.bytes -= len(old[1]) + len(old[2])
        next_offset, _ = walk(memoryview(data)[:decoded.end])
        r.busy = False
        if decoded.error is not None or next_offset <= r.at or next_offset >= r.stop:
            r.done = True  # an unreadable batch ends the read (live sending skips it with an error)
        else:
            r.at = next_offset

    def _from_log_start(self, gateway, r: _Read, now_ms: int) -> None:
        def answered(c) -> None:
            if self.abandoned:
                return
            if c.error is not None:
                self._failed(r, c.error)
                return
            r.busy = False
            r.at = max(r.at, c.value)
            r.done = r.at >= r.stop
        try:
            gateway.list_offset(r.topic, r.partition, EARLIEST_TIMESTAMP, now_ms).on_done(guarded(answered, "a replay offset answer"))
        except RequestError as exc:
            self._failed(r, exc)
