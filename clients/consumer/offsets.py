"""The consumer's offsets: look-ups by time (``list_offsets``) and the group's commits.

- Look-ups (user thread, blocking): beginning/end offsets and ``offsets_for_times``
  ask each partition's leader with ``list_offsets``, refreshing metadata and retrying
  retriable errors until ``request_timeout_ms``; position resets
  (``seek_to_beginning``/``seek_to_end``) mark partitions for the fetcher, which
  resolves them in the network thread, and :meth:`ConsumerOffsets.position` waits
  for that.
- Commits go to the group's coordinator (``offset_commit``): synchronous through
  :meth:`GroupMembership.call <clients.consumer.group.GroupMembership.call>`, or
  asynchronous with a callback run in the network thread; auto-commit sends the
  positions ``poll()`` has reached every ``auto_commit_interval_ms``.  Committed
  offsets are read back with ``offset_fetch``.
"""

from __future__ import annotations

import logging
import time

from clients.structs import OffsetAndTimestamp, TopicPartition
from zbroker.errors import ErrorCode, InvalidGroupIdError, RequestTimeoutError, ZBrokerError, error_from
from zbroker.protocol import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

log = logging.getLogger(__name__)


class ConsumerOffsets:
    """Offset look-ups and commits of one consumer.

    Args:
        net, meta, fetcher: the consumer's transport, metadata manager and fetcher.
        group: the group name, or None (commits then raise InvalidGroupIdError).
        The other arguments are the consumer's settings of the same names.
    """

    def __init__(self, net, meta, fetcher, *, group: str | None, request_timeout_ms: int, enable_auto_commit: bool,
                 auto_commit_interval_ms: int, check_open=lambda: None, clock=time.monotonic) -> None:
        self.net = net
        self.meta = meta
        self.fetcher = fetcher
        self.group = group
        self.membership = None  # the GroupMembership, set by the consumer when it has a group
        self.request_timeout_ms = request_timeout_ms
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval = auto_commit_interval_ms / 1000.0
        self.check_open = check_open  # raises ClientClosedError once the consumer is closed
        self.clock = clock
        self.next_auto_commit = clock() + self.auto_commit_interval

    # -- look-ups --------------------------------------------------------------------

    def reset(self, tps, where: str) -> None:
        """Mark ``tps`` for a reset to ``"earliest"`` or ``"latest"`` (the fetcher resolves it)."""
        for tp in tps:
            self.fetcher.seek(tp, None, where)

    def position(self, tp: tuple[str, int], timeout_ms: int | None = None) -> int:
        """The next offset poll() returns for ``tp``, waiting for a pending reset to resolve."""
        timeout = (timeout_ms if timeout_ms is not None else self.request_timeout_ms) / 1000.0
        deadline = time.monotonic() + timeout
        fetcher = self.fetcher
        self.net.wakeup()
        with fetcher.cond:
            while True:
                pos = fetcher.position(tp)
                if pos is not None:
                    return pos
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeoutError(f"position of {tp[0]}-{tp[1]} not known within {timeout}s")
                fetcher.cond.wait(min(left, 0.1))

    def beginning_offsets(self, tps) -> dict[TopicPartition, int]:
        """Log start offset of each partition."""
        return {tp: r[0] for tp, r in self.list_offsets({tuple(tp): EARLIEST_TIMESTAMP for tp in tps}).items()}

    def end_offsets(self, tps) -> dict[TopicPartition, int]:
        """High watermark of each partition."""
        return {tp: r[0] for tp, r in self.list_offsets({tuple(tp): LATEST_TIMESTAMP for tp in tps}).items()}

    def offsets_for_times(self, timestamps: dict) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """First offset whose timestamp is >= the given ms timestamp, per partition (None if none)."""
        for ts in timestamps.values():
            if ts < 0:
                raise ValueError(f"timestamps must be >= 0, got {ts}")
        res = self.list_offsets({tuple(tp): ts for tp, ts in timestamps.items()})
        return {tp: (OffsetAndTimestamp(off, ts) if off >= 0 else None) for tp, (off, ts) in res.items()}

    def list_offsets(self, wanted: dict) -> dict[TopicPartition, tuple[int, int]]:
        """``{tp: timestamp}`` -> ``{tp: (offset, timestamp)}`` from the partitions' leaders."""
        self.check_open()
        deadline = time.monotonic() + self.request_timeout_ms / 1000.0
        todo = {TopicPartition(*tp): ts for tp, ts in wanted.items()}
        out: dict[TopicPartition, tuple[int, int]] = {}
        last: ZBrokerError | None = None
        while todo:
            if time.monotonic() >= deadline:
                raise last or RequestTimeoutError("list_offsets did not complete in time")
            cache = self.meta.cache
            by_leader: dict[str, list] = {}
            missing = []
            for tp in todo:
                addr = cache.leader(*tp)
                (by_leader.setdefault(addr, []) if addr else missing).append(tp)
            if missing:
                try:
                    self.meta.refresh(sorted({t for t, _ in missing}), timeout_ms=5000)
                except ZBrokerError as exc:
                    last = exc
                for tp in missing:
                    if cache.topic_errors.get(tp[0]) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION or (
                        tp[0] in self.meta.cache.partition_counts and tp[1] >= self.meta.cache.partition_counts[tp[0]]
                    ):
                        raise error_from(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown partition {tp[0]}-{tp[1]}")
            for addr, tps in by_leader.items():
                parts = [{"topic": t, "partition": p, "timestamp": todo[(t, p)]} for t, p in tps]
                try:
                    header, _ = self.net.request(addr, "list_offsets", {"partitions": parts})
                except ZBrokerError as exc:
                    if not exc.retriable:
                        raise
                    last = exc
                    continue
                for tp, r in zip(tps, header.get("partitions") or ()):
                    err = r.get("error", 0)
                    if err:
                        e = error_from(err, r.get("error_message"))
                        if not e.retriable:
                            raise e
                        last = e
                        continue
                    out[tp] = (r.get("offset", -1), r.get("timestamp", -1))
                    del todo[tp]
            if todo:
                time.sleep(0.1)
                self.meta.request_update()
        return out

    # -- commits ---------------------------------------------------------------------

    def _need_group(self, what: str):
        if self.membership is None:
            raise InvalidGroupIdError(f"{what} needs a group: Consumer(..., group='name')")
        return self.membership

    def positions(self, tps) -> dict:
        """``{tp: position}`` of the partitions of ``tps`` that have one."""
        fetcher = self.fetcher
        with fetcher.lock:
            out = {}
            for tp in tps:
                st = fetcher.states.get(tuple(tp))
                if st is not None and st.position is not None:
                    out[tuple(tp)] = st.position
            return out

    def _commit_fields(self, offsets: dict, metadata: str) -> dict:
        member_id, epoch = self.membership.commit_fields()
        return {"group": self.group, "member_id": member_id, "member_epoch": epoch,
                "offsets": [{"topic": t, "partition": p, "offset": int(o), "metadata": metadata} for (t, p), o in sorted(offsets.items())]}

    def commit(self, offsets=None, metadata: str = "", asynchronous: bool = False, callback=None) -> None:
        """See :meth:`Consumer.commit <clients.consumer.consumer.Consumer.commit>`."""
        membership = self._need_group("commit()")
        if offsets is None:
            offsets = self.positions(self.fetcher.states)
        offsets = {tuple(tp): o for tp, o in offsets.items()}
        if not offsets:
            if callback:
                callback(None)
            return
        fields = self._commit_fields(offsets, metadata)
        if asynchronous and membership.coordinator is not None:
            def done(header, _frames, exc):
                err = exc or (error_from(header["error"], header.get("error_message")) if header.get("error") else None)
                if err is not None:
                    log.info("async commit failed: %s", err)
                if callback:
                    callback(err)
            self.net.send(membership.coordinator, "offset_commit", fields, (), done, timeout_ms=self.request_timeout_ms)
            return
        try:
            membership.call("offset_commit", fields, self.request_timeout_ms / 1000.0)
        except ZBrokerError as exc:
            if callback:
                callback(exc)
                return
            raise
        if callback:
            callback(None)

    def commit_positions(self, tps, quiet: bool = False) -> None:
        """Commit the positions of ``tps``; ``quiet`` logs a failure instead of raising it."""
        offsets = self.positions(tps)
        if not offsets:
            return
        try:
            self.commit(offsets)
        except ZBrokerError as exc:
            if not quiet:
                raise
            log.warning("group %s: commit of %d positions failed: %s", self.group, len(offsets), exc)

    def maybe_auto_commit(self) -> None:
        """Commit every position asynchronously if ``auto_commit_interval_ms`` has passed."""
        if not self.enable_auto_commit or self.membership is None:
            return
        now = self.clock()
        if now < self.next_auto_commit:
            return
        self.next_auto_commit = now + self.auto_commit_interval
        offsets = self.positions(self.fetcher.states)
        if offsets:
            self.commit(offsets, asynchronous=True)

    def fetch_committed(self, tps) -> dict:
        """``{tp: committed offset}`` from the coordinator (-1: none)."""
        header = self.membership.call("offset_fetch", {"group": self.group, "partitions": [list(tp) for tp in tps]},
                                      self.request_timeout_ms / 1000.0)
        return {(o["topic"], o["partition"]): o["offset"] for o in header.get("offsets") or ()}

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a partition (the next offset to read), or None."""
        self._need_group("committed()")
        offset = self.fetch_committed([(topic, partition)]).get((topic, partition), -1)
        return offset if offset >= 0 else None
