"""The consumer's fetcher: positions per partition and fetches pipelined ahead of poll().

Theory of operation
-------------------
Per assigned partition a :class:`PartitionState` holds ``position`` (the next
offset ``poll()`` returns), ``fetch_offset`` (the next offset to fetch, ahead
of ``position`` by what is buffered), a pending offset *reset* (earliest,
latest) and an ``epoch`` bumped on every seek, so a fetch answer or buffered
data from before a seek is recognised and dropped.

:meth:`Fetcher.run` runs in the network thread: it resolves pending resets
with ``list_offsets``, then keeps **one fetch in flight per leader broker**
for its partitions that have little data buffered.  A completed fetch's bytes
are only header-walked (to advance ``fetch_offset``) and queued; the user
thread decodes them in ``poll()``, so the network thread never spends time on
records and the buffer is bounded by ``buffer_bytes`` in total and about three
``max_partition_fetch_bytes`` per partition.

Bounded, and past what it cannot read
--------------------------------------
``poll()`` decodes at most about ``fetch_max_bytes`` of record payload per step
(:func:`storage.batch.decode_some_batches`; the rest of a fetched chunk waits at the
front of the queue), and no batch may decompress to more than that: the consumer
never holds much more than it agreed to take in one fetch, whatever a few bytes
of zstd claim. A batch it cannot read (CRC, codec, records, or over that bound)
*parks* the partition: the records before the batch are returned first, the
position stays at the batch, the partition's buffers are dropped and it is not
fetched again; every later ``poll()`` raises the same :class:`CorruptRecordError`
(naming topic, partition, offset and ``next_offset``) until a seek moves the
partition (for example past the batch, to ``next_offset``) or it is unassigned.
Offsets the broker lost to damage on its disk (a fetch answered CORRUPT_MESSAGE with
``damaged = [start, end]``) park the partition the same way, with ``offset = start``
and ``next_offset = end``, once the records fetched before them are returned; without
``damaged`` the broker does not know how far the damage reaches: the partition parks
at the fetch offset with ``next_offset = None`` (as Kafka's consumer raises).

All state is guarded by one lock; ``poll()`` waits on a condition of it.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time

from clients.structs import Record
from clients.throttle import ThrottleStats
from storage.batch import parse_header, walk
from storage.decode import decode_some_batches
from storage.compression import DecompressionLimitError
from zbroker.errors import (
    CorruptRecordError,
    DecompressionLimitExceededError,
    ErrorCode,
    OffsetOutOfRangeError,
    error_from,
)
from zbroker.protocol import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

log = logging.getLogger(__name__)

RESET_TIMESTAMPS = {"earliest": EARLIEST_TIMESTAMP, "latest": LATEST_TIMESTAMP}


def _unreadable(tp, data, pos: int, err) -> CorruptRecordError:
    """The consumer's error for the batch at ``data[pos:]`` that ``err`` says it cannot read."""
    offset = err.offset
    nxt = max(parse_header(data, pos).next_offset, offset + 1)
    if isinstance(err, DecompressionLimitError):
        return DecompressionLimitExceededError(
            f"{err} (the consumer's fetch_max_bytes): raise fetch_max_bytes to read it, or "
            f"seek({tp[0]!r}, {tp[1]}, {nxt}) to skip it", tp[0], tp[1], offset, nxt)
    return CorruptRecordError(f"{err}: seek({tp[0]!r}, {tp[1]}, {nxt}) to skip the batch", tp[0], tp[1], offset, nxt)


def _lost_on_broker(tp, offset: int, r: dict) -> CorruptRecordError:
    """The consumer's error for a fetch of ``offset`` the broker answered CORRUPT_MESSAGE."""
    damaged = r.get("damaged")
    if (isinstance(damaged, (list, tuple)) and len(damaged) == 2 and all(type(x) is int for x in damaged)
            and damaged[0] < damaged[1] and damaged[1] > offset):
        start, end = damaged
        return CorruptRecordError(f"{tp[0]}-{tp[1]}: offsets [{start}, {end}) were lost to damage on the broker's "
                                  f"disk: seek({tp[0]!r}, {tp[1]}, {end}) to skip them", tp[0], tp[1], start, end)
    return CorruptRecordError(f"{tp[0]}-{tp[1]}: offset {offset} is in data damaged on the broker's disk and the "
                              f"broker did not say how far the damage reaches ({r.get('error_message')}): seek "
                              f"past it to go on", tp[0], tp[1], offset, None)


def _nbytes(data) -> int:
    """Buffered bytes of a ``completed`` entry (a lost-range marker holds none)."""
    return 0 if isinstance(data, CorruptRecordError) else len(data)


_EPOCHS = itertools.count(1)  # one counter for every PartitionState: a new state never reuses an epoch


class PartitionState:
    """Consumption state of one assigned partition.

    ``epoch`` changes on every seek, reset and new assignment (drawn from one process-wide
    counter), so an answer to a fetch sent before any of those can never be mistaken for a
    current one -- not even after a partition is revoked and assigned again."""

    __slots__ = ("position", "fetch_offset", "reset", "epoch", "inflight", "buffered", "high_watermark", "log_start_offset", "error", "backoff_until", "resetting", "lost")

    def __init__(self, reset: str | None) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.reset = reset  # "earliest" | "latest" | None
        self.epoch = next(_EPOCHS)
        self.inflight = False
        self.resetting = False
        self.buffered = 0
        self.high_watermark = -1
        self.log_start_offset = -1
        self.error: BaseException | None = None
        self.backoff_until = 0.0
        self.lost = False  # the broker answered CORRUPT_MESSAGE: no fetching until a seek


class Fetcher:
    """Network-thread task feeding a consumer; see the module docstring."""

    def __init__(self, net, meta, *, auto_offset_reset: str, fetch_max_wait_ms: int, fetch_min_bytes: int,
                 max_partition_fetch_bytes: int, fetch_max_bytes: int = 52428800, buffer_bytes: int = 64 << 20,
                 request_timeout_ms: int = 30000, retry_backoff_ms: int = 100, check_crcs: bool = True) -> None:
        self.net = net
        self.meta = meta
        self.auto_offset_reset = auto_offset_reset
        self.max_wait_ms = fetch_max_wait_ms
        self.min_bytes = fetch_min_bytes
        self.partition_bytes = max_partition_fetch_bytes
        # fetch ahead while less than two responses' worth of a partition is buffered
        self.partition_ahead = 2 * max_partition_fetch_bytes
        self.max_bytes = fetch_max_bytes
        # the most record payload one decode step holds, and the most one batch may decompress to
        self.decode_bytes = max(fetch_max_bytes, max_partition_fetch_bytes)
        self.buffer_bytes = buffer_bytes
        self.request_timeout_ms = request_timeout_ms
        self.backoff = retry_backoff_ms / 1000.0
        self.check_crcs = check_crcs
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.states: dict[tuple[str, int], PartitionState] = {}
        # (tp, epoch, data), or (tp, epoch, CorruptRecordError) for a range lost on the broker
        self.completed: collections.deque = collections.deque()
        self.buffered_total = 0
        self.partial = None  # [tp, epoch, records, index]
        self.unreadable: dict[tuple[str, int], CorruptRecordError] = {}  # parked partitions
        self._broker_inflight: set[str] = set()
        self.closed = False
        self.throttle = ThrottleStats("fetch")  # answers a broker held back by a quota

    # -- assignment and positions (user threads, under the lock) ---------------------

    def set_assignment(self, tps) -> None:
        """Make ``tps`` the assigned partitions; new ones start with the default reset."""
        tps = [tuple(tp) for tp in tps]
        with self.lock:
            new = {}
            for tp in tps:
                st = self.states.get(tp)
                new[tp] = st if st is not None else self._new_state()
            self.states = new
            self._drop_buffers(lambda tp: tp not in new)
            self.unreadable = {tp: e for tp, e in self.unreadable.items() if tp in new}
        self.net.wakeup()

    def _new_state(self) -> PartitionState:
        reset = self.auto_offset_reset if self.auto_offset_reset in RESET_TIMESTAMPS else None
        st = PartitionState(reset)
        if reset is None:
            st.error = OffsetOutOfRangeError("no position and auto_offset_reset='none': seek() first")
        return st

    def _drop_buffers(self, pred) -> None:
        keep = collections.deque()
        for item in self.completed:
            if pred(item[0]):
                self.buffered_total -= _nbytes(item[2])
            else:
                keep.append(item)
        self.completed = keep
        if self.partial is not None and pred(self.partial[0]):
            self.partial = None

    def seek(self, tp, offset: int | None, reset: str | None = None) -> None:
        """Move ``tp`` to ``offset``, or mark it for a ``reset`` ("earliest"/"latest")."""
        tp = tuple(tp)
        with self.lock:
            st = self.states.get(tp)
            if st is None:
                raise ValueError(f"partition {tp[0]}-{tp[1]} is not assigned to this consumer")
            st.epoch = next(_EPOCHS)
            st.position = st.fetch_offset = offset
            st.reset = reset
            st.error = None
            st.buffered = 0
            st.backoff_until = 0.0
            st.lost = False
            self._drop_buffers(lambda x: x == tp)
            self.unreadable.pop(tp, None)
        self.net.wakeup()

    def position(self, tp) -> int | None:
        """Current position of ``tp`` (None while a reset is pending); caller holds the lock.

        Raises:
            ValueError: not assigned.
            ZBrokerError: the partition has no position and an error (reset 'none').
        """
        st = self.states.get(tuple(tp))
        if st is None:
            raise ValueError(f"partition {tp[0]}-{tp[1]} is not assigned to this consumer")
        if st.error is not None and st.position is None:
            raise st.error
        return st.position

    # -- poll (user thread) ----------------------------------------------------------

    def collect(self, max_records: int, key_de=None, value_de=None) -> list:
        """Take up to ``max_records`` decoded records (caller holds the lock).

        Raises:
            CorruptRecordError: a parked partition's batch (see the module docstring); raised
                before anything else, on every call until a seek.
            ZBrokerError: a partition's pending error (out of range with reset 'none').
        """
        out = None
        states = self.states
        woke = False
        while True:
            need = max_records - (len(out) if out else 0)
            if need <= 0:
                break
            part = self.partial
            if part is not None:
                tp, epoch, recs, idx = part
                st = states.get(tp)
                if st is None or st.epoch != epoch:
                    self.partial = None
                    continue
                chunk = recs[idx : idx + need] if (idx or len(recs) - idx > need) else recs
                if idx + len(chunk) >= len(recs):
                    self.partial = None
                else:
                    part[3] = idx + len(chunk)
                st.position = chunk[-1].offset + 1
                if out is None:
                    out = chunk
                else:
                    out.extend(chunk)
                continue
            if self.unreadable:
                if out:
                    break  # the records before the bad batch first; the error next time
                raise next(iter(self.unreadable.values()))
            if not self.completed:
                break
            tp, epoch, data = self.completed.popleft()
            woke = True
            st = states.get(tp)
            if isinstance(data, CorruptRecordError):  # every record fetched before the range is out
                if st is not None and st.epoch == epoch:
                    self._park(tp, st, data)
                continue
            self.buffered_total -= len(data)
            if st is None or st.epoch != epoch:
                continue
            st.buffered -= len(data)
            # read by attribute: unpacking would allocate, and collect every record just decoded
            res = decode_some_batches(data, tp[0], tp[1], st.position, self.check_crcs, Record, self.decode_bytes)
            recs, end, err = res.records, res.end, res.error
            if err is not None:
                self._park(tp, st, _unreadable(tp, data, end, err))
            elif 0 < end < len(data):  # decoded enough for one step: the rest waits in front
                rest = memoryview(data)[end:]
                st.buffered += len(rest)
                self.buffered_total += len(rest)
                self.completed.appendleft((tp, epoch, rest))
            if not recs:
                continue
            if key_de is not None or value_de is not None:
                kd = key_de or (lambda x: x)
                vd = value_de or (lambda x: x)
                recs = [r._replace(key=kd(r.key), value=vd(r.value)) for r in recs]
            self.partial = [tp, epoch, recs, 0]
        if woke:
            self.net.wakeup()
        if not out:
            for st in states.values():
                if st.error is not None:
                    exc = st.error
                    if st.position is not None:
                        st.error = None  # raised once; fetching resumes (and may fail again)
                    raise exc
            return []
        return out

    def _park(self, tp, st: PartitionState, exc: CorruptRecordError) -> None:
        """Stop fetching ``tp`` at a batch it cannot read; ``collect`` raises ``exc`` until a seek."""
        log.warning("%s", exc)
        self.unreadable[tp] = exc
        st.buffered = 0
        self._drop_buffers(lambda x: x == tp)

    # -- network thread --------------------------------------------------------------

    def run(self, now: float):
        if self.closed:
            return None
        resets: dict[str, list] = {}
        fetches: dict[str, list] = {}
        leaderless = False
        deadline = None
        leaders = self.meta.cache.leaders
        with self.lock:
            total_ok = self.buffered_total < self.buffer_bytes
            for tp, st in self.states.items():
                if st.backoff_until > now:
                    deadline = st.backoff_until if deadline is None or st.backoff_until < deadline else deadline
                    continue
                if st.position is None:
                    if st.reset is None or st.resetting:
                        continue
                    address = leaders.get(tp)
                    if address is None:
                        leaderless = True
                        continue
                    st.resetting = True
                    resets.setdefault(address, []).append((tp, st.epoch, st.reset))
                    continue
                if (st.inflight or st.error is not None or not total_ok or st.buffered >= self.partition_ahead
                        or st.lost or tp in self.unreadable):
                    continue
                address = leaders.get(tp)
                if address is None:
                    leaderless = True
                    continue
                if address in self._broker_inflight:
                    continue
                fetches.setdefault(address, []).append((tp, st))
            for address, items in fetches.items():
                for tp, st in items:
                    st.inflight = True
                self._broker_inflight.add(address)
            fetch_specs = {
                address: [(tp, st.epoch, st.fetch_offset) for tp, st in items] for address, items in fetches.items()
            }
        for address, items in resets.items():
            self._send_reset(address, items)
        for address, specs in fetch_specs.items():
            self._send_fetch(address, specs)
        if leaderless:
            self.meta.request_update(now)
            d = now + self.backoff
            deadline = d if deadline is None or d < deadline else deadline
        return deadline

    def _send_reset(self, address: str, items: list) -> None:
        parts = [{"topic": tp[0], "partition": tp[1], "timestamp": RESET_TIMESTAMPS[reset]} for tp, _e, reset in items]
        self.net.send(address, "list_offsets", {"partitions": parts}, (),
                      lambda h, f, exc: self._on_reset(items, h, exc))

    def _on_reset(self, items, header, exc) -> None:
        now = time.monotonic()
        if exc is None and header.get("error"):
            exc = error_from(header["error"], header.get("error_message"))
        results = (header or {}).get("partitions") or []
        refresh = False
        with self.lock:
            for i, (tp, epoch, _reset) in enumerate(items):
                st = self.states.get(tp)
                if st is None:
                    continue
                st.resetting = False
                if st.epoch != epoch:
                    continue
                err = exc
                if err is None:
                    r = results[i] if i < len(results) else None
                    if r is None:
                        err = error_from(ErrorCode.UNKNOWN_SERVER_ERROR, "list_offsets answer is missing a partition")
                    elif r.get("error"):
                        err = error_from(r["error"], r.get("error_message"))
                    elif r.get("offset", -1) >= 0:
                        st.position = st.fetch_offset = r["offset"]
                        st.reset = None
                        st.error = None
                        continue
                    else:
                        err = error_from(ErrorCode.OFFSET_NOT_AVAILABLE, "no offset available")
                refresh = refresh or getattr(err, "invalid_metadata", False)
                st.backoff_until = now + self.backoff
                log.debug("offset reset of %s-%s failed: %s", tp[0], tp[1], err)
            self.cond.notify_all()
        if refresh:
            self.meta.request_update(now)
        self.net.wakeup()

    def _send_fetch(self, address: str, specs: list) -> None:
        parts = [{"topic": tp[0], "partition": tp[1], "offset": off, "max_bytes": self.partition_bytes} for tp, _e, off in specs]
        fields = {"max_wait_ms": self.max_wait_ms, "min_bytes": self.min_bytes, "max_bytes": self.max_bytes, "partitions": parts}
        self.net.send(address, "fetch", fields, (), lambda h, f, exc: self._on_fetch(address, specs, h, f, exc),
                      timeout_ms=self.request_timeout_ms + self.max_wait_ms)

    def _on_fetch(self, address, specs, header, frames, exc) -> None:
        now = time.monotonic()
        self.throttle.note(header, address, now)
        if exc is None and header.get("error"):
            exc = error_from(header["error"], header.get("error_message"))
        refresh = False
        with self.lock:
            self._broker_inflight.discard(address)
            results = (header or {}).get("partitions") or []
            for i, (tp, epoch, offset) in enumerate(specs):
                st = self.states.get(tp)
                if st is None:
                    continue
                st.inflight = False
                if st.epoch != epoch or tp in self.unreadable:
                    continue
                if exc is not None:
                    refresh = refresh or getattr(exc, "invalid_metadata", False)
                    st.backoff_until = now + self.backoff
                    continue
                r = results[i] if i < len(results) else None
                if r is None:
                    st.backoff_until = now + self.backoff
                    continue
                err = r.get("error", 0)
                if err == ErrorCode.CORRUPT_MESSAGE:  # lost on the broker's disk: after what came before
                    st.lost = True
                    self.completed.append((tp, epoch, _lost_on_broker(tp, offset, r)))
                    continue
                if err:
                    self._partition_error(tp, st, err, r, now)
                    refresh = refresh or error_from(err).invalid_metadata
                    continue
                st.high_watermark = r.get("high_watermark", st.high_watermark)
                st.log_start_offset = r.get("log_start_offset", st.log_start_offset)
                data = frames[i] if i < len(frames) else b""
                if not data:
                    continue
                nxt, complete = walk(data)
                if nxt <= offset:
                    continue
                if complete < len(data):
                    data = data[:complete]
                st.fetch_offset = nxt
                st.buffered += len(data)
                self.buffered_total += len(data)
                self.completed.append((tp, epoch, data))
            if exc is not None:
                log.debug("fetch from %s failed: %s", address, exc)
            self.cond.notify_all()
        if refresh:
            self.meta.request_update(now)

    def _partition_error(self, tp, st: PartitionState, err: int, r: dict, now: float) -> None:
        if err == ErrorCode.OFFSET_OUT_OF_RANGE:
            if self.auto_offset_reset in RESET_TIMESTAMPS:
                log.info("offset %s out of range for %s-%s: resetting to %s", st.fetch_offset, tp[0], tp[1], self.auto_offset_reset)
                st.epoch = next(_EPOCHS)
                st.position = st.fetch_offset = None
                st.reset = self.auto_offset_reset
                st.buffered = 0
                self._drop_buffers(lambda x: x == tp)
            else:
                st.error = OffsetOutOfRangeError(
                    f"offset {st.fetch_offset} is out of range for {tp[0]}-{tp[1]} "
                    f"(log start {r.get('log_start_offset')}, high watermark {r.get('high_watermark')}) and auto_offset_reset='none'"
                )
            return
        e = error_from(err, r.get("error_message"))
        st.backoff_until = now + self.backoff
        if not e.retriable:
            st.error = e
        log.debug("fetch error for %s-%s: %s", tp[0], tp[1], e)
