"""The consumer: assignment, positions, ``poll()`` and offset look-ups.

Fetching happens ahead of ``poll()`` in the network thread (see
:mod:`clients.fetcher`); ``poll()`` decodes buffered batches and returns at
once when data is buffered.

With a ``group``, subscribed consumers share their topics' partitions: the
group's coordinator assigns each partition to exactly one member and moves
partitions incrementally when members come and go (:mod:`clients.group`);
positions are committed to the coordinator (``commit()``, auto-commit) and a
newly assigned partition starts at its committed offset.
"""

from __future__ import annotations

import logging
import time

from clients.connection import NetworkClient
from clients.fetcher import Fetcher
from clients.group import GroupMembership, coordinator_call
from clients.metadata import MetadataManager
from clients.serde import DESERIALIZERS, resolve
from clients.structs import OffsetAndTimestamp, Record, TopicPartition
from zbroker.errors import (
    ClientClosedError,
    ErrorCode,
    InvalidGroupIdError,
    RequestTimeoutError,
    ZBrokerError,
    error_from,
)
from zbroker.protocol import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

log = logging.getLogger(__name__)

_RESETS = ("earliest", "latest", "none")


class _Task:
    __slots__ = ("run",)

    def __init__(self, fn) -> None:
        self.run = fn


class Consumer:
    """Reads records from zbroker topics.

    Args:
        *topics: topics to subscribe to (all their partitions; new partitions are
            picked up on metadata refresh).  Or call :meth:`assign`.
        group: consumer group name.  Subscribed members of a group share the
            partitions (each partition has one owner); without a group the
            consumer reads every partition of its topics and cannot commit.
        bootstrap: ``"host:port[,...]"``; None reads ``ZBROKER_BOOTSTRAP``.
        auto_offset_reset: where to start without a position, or when the
            position is out of range: ``"earliest"``, ``"latest"`` or ``"none"``
            (raise :class:`~zbroker.errors.OffsetOutOfRangeError`).
        enable_auto_commit: commit the positions poll() has reached every
            ``auto_commit_interval_ms`` (default 5000), before partitions are
            revoked, and on close (default True).
        session_timeout_ms: the coordinator removes a member it has not heard from
            for this long (default 45000).
        max_poll_interval_ms: a member that does not call poll() for this long
            leaves the group so its partitions move (default 300000); also how long
            it may take to release revoked partitions.
        group_instance_id: static membership: a member restarting with the same id
            within its session keeps its partitions without a rebalance.
        assignor: ``"sticky"`` (default), ``"range"`` or ``"round_robin"``.
        on_assigned, on_revoked, on_lost: callables taking a list of
            ``TopicPartition``; called inside poll() when partitions are given,
            taken away (commit or flush state here), or lost without a chance to
            commit (membership fenced or expired).
        fetch_max_wait_ms: how long the broker may hold a fetch for data (default 500).
        fetch_min_bytes: bytes the broker waits for before answering (default 1).
        max_partition_fetch_bytes: per-partition cap of one fetch (default 1 MiB).
        client_id: sent to brokers with every request.
        request_timeout_ms: deadline of each request (default 30000).
        key_deserializer, value_deserializer: callable or ``"bytes"``/``"str"``/``"json"``.
        fetch_max_bytes: cap of one fetch response (default 50 MiB).
        buffer_bytes: fetched-but-not-polled bytes kept at most (default 64 MiB).
        metadata_max_age_ms: refresh interval of the subscribed topics' partitions.
        check_crcs: verify the CRC-32C of every fetched batch (default True).
    """

    def __init__(
        self,
        *topics: str,
        group: str | None = None,
        bootstrap=None,
        auto_offset_reset: str = "earliest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 45000,
        max_poll_interval_ms: int = 300000,
        group_instance_id: str | None = None,
        assignor: str = "sticky",
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        max_partition_fetch_bytes: int = 1048576,
        client_id: str | None = None,
        request_timeout_ms: int = 30000,
        key_deserializer=None,
        value_deserializer=None,
        fetch_max_bytes: int = 52428800,
        buffer_bytes: int = 64 << 20,
        metadata_max_age_ms: int = 30000,
        check_crcs: bool = True,
        on_assigned=None,
        on_revoked=None,
        on_lost=None,
    ) -> None:
        if auto_offset_reset not in _RESETS:
            raise ValueError(f"auto_offset_reset must be one of {_RESETS}, got {auto_offset_reset!r}")
        if len(topics) == 1 and isinstance(topics[0], (list, tuple)):
            topics = tuple(topics[0])
        self.group = group
        self._callbacks = {"on_assigned": on_assigned, "on_revoked": on_revoked, "on_lost": on_lost}
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.session_timeout_ms = session_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.group_instance_id = group_instance_id
        self.assignor = assignor
        self.request_timeout_ms = request_timeout_ms
        self._key_de = resolve(key_deserializer, DESERIALIZERS, "key_deserializer")
        self._value_de = resolve(value_deserializer, DESERIALIZERS, "value_deserializer")
        self._net = NetworkClient(bootstrap, client_id, request_timeout_ms, name="zbroker-consumer")
        self._meta = MetadataManager(self._net)
        self._fetcher = Fetcher(
            self._net, self._meta, auto_offset_reset=auto_offset_reset, fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes, max_partition_fetch_bytes=max_partition_fetch_bytes,
            fetch_max_bytes=fetch_max_bytes, buffer_bytes=buffer_bytes, request_timeout_ms=request_timeout_ms,
            check_crcs=check_crcs,
        )
        self._subscription: set[str] | None = None
        self._metadata_age = metadata_max_age_ms / 1000.0
        self._closed = False
        self._meta.listeners.append(self._on_metadata)
        self._net.add_task(self._fetcher)
        self._net.add_task(_Task(self._metadata_task))
        self._group: GroupMembership | None = None
        self._next_auto_commit = time.monotonic() + auto_commit_interval_ms / 1000.0
        if group is not None:
            if not isinstance(group, str) or not group:
                raise ValueError("group must be a non-empty string")
            self._group = GroupMembership(self, group, group_instance_id, assignor, session_timeout_ms,
                                          max_poll_interval_ms, client_id)
            self._net.add_task(_Task(self._group.run))
        if topics:
            self.subscribe(list(topics))

    # -- assignment ------------------------------------------------------------------

    def subscribe(self, topics) -> None:
        """Read every partition of ``topics`` (replaces any previous subscription/assignment)."""
        self._check_open()
        if isinstance(topics, str):
            topics = [topics]
        self._subscription = set(topics)
        try:
            self._meta.refresh(list(topics), timeout_ms=min(self.request_timeout_ms, 10000))
        except ZBrokerError as exc:
            log.warning("metadata for %s not available yet: %s", sorted(topics), exc)
        if self._group is not None:
            self._group.topics = sorted(topics)  # the coordinator assigns; the next heartbeat says so
            self._group.next_beat = 0.0
            self._net.wakeup()
        self._apply_subscription()

    def _apply_subscription(self) -> None:
        subs = self._subscription
        if subs is None or self._group is not None:
            return
        counts = self._meta.cache.partition_counts
        tps = [(t, p) for t in sorted(subs) for p in range(counts.get(t, 0))]
        if set(tps) != set(self._fetcher.states):
            self._fetcher.set_assignment(tps)

    def _on_metadata(self) -> None:  # network thread
        self._apply_subscription()

    def _metadata_task(self, now: float):
        """Network-thread task: keep the subscription's metadata fresh."""
        subs = self._subscription
        if subs is None:
            return None
        cache = self._meta.cache
        missing = any(t not in cache.partition_counts for t in subs)
        age = self._metadata_age if not missing else 0.5
        due = cache.updated_at + age
        if now >= due:
            self._meta.request_update(now)
            return now + (0.5 if missing else self._metadata_age)
        return due

    def assign(self, partitions) -> None:
        """Read exactly ``partitions`` (a list of ``(topic, partition)``); drops the subscription."""
        self._check_open()
        self._subscription = None
        if self._group is not None:
            self._group.topics = None  # manual assignment: the group is used for commits only
        tps = [TopicPartition(t, p) for t, p in partitions]
        topics = sorted({t for t, _ in tps})
        if topics and any((t, p) not in self._meta.cache.leaders for t, p in tps):
            try:
                self._meta.refresh(topics, timeout_ms=min(self.request_timeout_ms, 10000))
            except ZBrokerError as exc:
                log.warning("metadata for %s not available yet: %s", topics, exc)
        self._fetcher.set_assignment(tps)

    def assignment(self) -> set[TopicPartition]:
        """The assigned partitions."""
        return {TopicPartition(*tp) for tp in self._fetcher.states}

    def subscription(self) -> set[str] | None:
        """The subscribed topics (None after :meth:`assign`)."""
        return None if self._subscription is None else set(self._subscription)

    # -- reading ---------------------------------------------------------------------

    def poll(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        """Return buffered records (waiting up to ``timeout_ms`` for some).

        Returns:
            Up to ``max_records`` records, in offset order per partition; ``[]``
            on timeout or once the consumer is closed.

        Raises:
            OffsetOutOfRangeError: no position / out of range with ``auto_offset_reset='none'``.
            CorruptMessageError: a fetched batch failed its CRC.
        """
        fetcher = self._fetcher
        deadline = time.monotonic() + timeout_ms / 1000.0
        group = self._group
        while True:
            if group is not None and not self._closed:
                group.last_poll = time.monotonic()
                if group.pending():
                    group.apply()  # callbacks and commits run here, in the caller's thread
                self._maybe_auto_commit()
            with fetcher.cond:
                if self._closed:
                    return []
                recs = fetcher.collect(max_records, self._key_de, self._value_de)
                if recs:
                    return recs
                now = time.monotonic()
                if now >= deadline:
                    return []
                wait = deadline - now
                fetcher.cond.wait(min(wait, 0.2) if group is not None else wait)

    def __iter__(self):
        """Yield records forever (blocking); stops when the consumer is closed."""
        while not self._closed:
            yield from self.poll(timeout_ms=200)

    # -- positions -------------------------------------------------------------------

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Make ``offset`` the next offset :meth:`poll` returns for the partition."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._fetcher.seek((topic, partition), offset)

    def _tps(self, tps) -> list[tuple[str, int]]:
        if not tps:
            return list(self._fetcher.states)
        if len(tps) == 1 and isinstance(tps[0], list):
            tps = tps[0]
        return [tuple(tp) for tp in tps]

    def seek_to_beginning(self, *tps) -> None:
        """Move the partitions (default: all assigned) to their log start."""
        for tp in self._tps(tps):
            self._fetcher.seek(tp, None, "earliest")

    def seek_to_end(self, *tps) -> None:
        """Move the partitions (default: all assigned) to their high watermark."""
        for tp in self._tps(tps):
            self._fetcher.seek(tp, None, "latest")

    def position(self, topic: str, partition: int, timeout_ms: int | None = None) -> int:
        """The next offset :meth:`poll` returns for the partition (resolving a pending reset).

        Raises:
            OffsetOutOfRangeError: no position and ``auto_offset_reset='none'``.
            RequestTimeoutError: the reset did not resolve in time.
        """
        timeout = (timeout_ms if timeout_ms is not None else self.request_timeout_ms) / 1000.0
        deadline = time.monotonic() + timeout
        tp = (topic, partition)
        fetcher = self._fetcher
        self._net.wakeup()
        with fetcher.cond:
            while True:
                pos = fetcher.position(tp)
                if pos is not None:
                    return pos
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeoutError(f"position of {topic}-{partition} not known within {timeout}s")
                fetcher.cond.wait(min(left, 0.1))

    def highwater(self, topic: str, partition: int) -> int:
        """The high watermark seen in the last fetch of the partition (-1 if none yet)."""
        st = self._fetcher.states.get((topic, partition))
        return -1 if st is None else st.high_watermark

    def beginning_offsets(self, tps) -> dict[TopicPartition, int]:
        """Log start offset of each partition."""
        return {tp: r[0] for tp, r in self._list_offsets({tuple(tp): EARLIEST_TIMESTAMP for tp in tps}).items()}

    def end_offsets(self, tps) -> dict[TopicPartition, int]:
        """High watermark (next offset to be written and readable) of each partition."""
        return {tp: r[0] for tp, r in self._list_offsets({tuple(tp): LATEST_TIMESTAMP for tp in tps}).items()}

    def offsets_for_times(self, timestamps: dict) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """First offset whose timestamp is >= the given ms timestamp, per partition (None if none).

        The broker answers at batch granularity (docs/protocol.md §4.8).
        """
        for ts in timestamps.values():
            if ts < 0:
                raise ValueError(f"timestamps must be >= 0, got {ts}")
        res = self._list_offsets({tuple(tp): ts for tp, ts in timestamps.items()})
        return {tp: (OffsetAndTimestamp(off, ts) if off >= 0 else None) for tp, (off, ts) in res.items()}

    def _list_offsets(self, wanted: dict) -> dict[TopicPartition, tuple[int, int]]:
        self._check_open()
        deadline = time.monotonic() + self.request_timeout_ms / 1000.0
        todo = {TopicPartition(*tp): ts for tp, ts in wanted.items()}
        out: dict[TopicPartition, tuple[int, int]] = {}
        last: ZBrokerError | None = None
        while todo:
            if time.monotonic() >= deadline:
                raise last or RequestTimeoutError("list_offsets did not complete in time")
            cache = self._meta.cache
            by_leader: dict[str, list] = {}
            missing = []
            for tp in todo:
                addr = cache.leader(*tp)
                (by_leader.setdefault(addr, []) if addr else missing).append(tp)
            if missing:
                try:
                    self._meta.refresh(sorted({t for t, _ in missing}), timeout_ms=5000)
                except ZBrokerError as exc:
                    last = exc
                for tp in missing:
                    if cache.topic_errors.get(tp[0]) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION or (
                        tp[0] in self._meta.cache.partition_counts and tp[1] >= self._meta.cache.partition_counts[tp[0]]
                    ):
                        raise error_from(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown partition {tp[0]}-{tp[1]}")
            for addr, tps in by_leader.items():
                parts = [{"topic": t, "partition": p, "timestamp": todo[(t, p)]} for t, p in tps]
                try:
                    header, _ = self._net.request(addr, "list_offsets", {"partitions": parts})
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
                self._meta.request_update()
        return out

    # -- groups ----------------------------------------------------------------------

    def _need_group(self, what: str) -> GroupMembership:
        if self._group is None:
            raise InvalidGroupIdError(f"{what} needs a group: Consumer(..., group='name')")
        return self._group

    def _callback(self, name: str, tps) -> None:
        fn = self._callbacks.get(name)
        if fn is None:
            return
        try:
            fn([TopicPartition(*tp) for tp in tps])
        except Exception:  # a listener's bug must not break the group protocol
            log.exception("%s callback failed", name)

    def _positions(self, tps) -> dict:
        with self._fetcher.lock:
            out = {}
            for tp in tps:
                st = self._fetcher.states.get(tuple(tp))
                if st is not None and st.position is not None:
                    out[tuple(tp)] = st.position
            return out

    def _commit_fields(self, offsets: dict, metadata: str) -> dict:
        member_id, epoch = self._group.commit_fields()
        return {"group": self.group, "member_id": member_id, "member_epoch": epoch,
                "offsets": [{"topic": t, "partition": p, "offset": int(o), "metadata": metadata} for (t, p), o in sorted(offsets.items())]}

    def commit(self, offsets=None, metadata: str = "", asynchronous: bool = False, callback=None) -> None:
        """Commit positions to the group: ``offsets`` ({(topic, partition): next offset to read})
        or, by default, the positions poll() has reached on every assigned partition.

        With ``asynchronous=True`` it returns at once and ``callback(exception or None)``
        is called from the network thread.

        Raises:
            InvalidGroupIdError: no group.  StaleMemberEpochError, UnknownMemberIdError:
            the membership moved on (the partitions may have moved). NonEmptyGroupError:
            committing from outside an active group.
        """
        group = self._need_group("commit()")
        if offsets is None:
            offsets = self._positions(self._fetcher.states)
        offsets = {tuple(tp): o for tp, o in offsets.items()}
        if not offsets:
            if callback:
                callback(None)
            return
        fields = self._commit_fields(offsets, metadata)
        if asynchronous and group.coordinator is not None:
            def done(header, _frames, exc):
                err = exc or (error_from(header["error"], header.get("error_message")) if header.get("error") else None)
                if err is not None:
                    log.info("async commit failed: %s", err)
                if callback:
                    callback(err)
            self._net.send(group.coordinator, "offset_commit", fields, (), done, timeout_ms=self.request_timeout_ms)
            return
        try:
            coordinator_call(self, "offset_commit", fields, self.request_timeout_ms / 1000.0)
        except ZBrokerError as exc:
            if callback:
                callback(exc)
                return
            raise
        if callback:
            callback(None)

    def commit_async(self, offsets=None, callback=None) -> None:
        """Same as ``commit(offsets, asynchronous=True, callback=callback)``."""
        self.commit(offsets, asynchronous=True, callback=callback)

    def _commit_positions(self, tps, quiet: bool = False) -> None:
        offsets = self._positions(tps)
        if not offsets:
            return
        try:
            self.commit(offsets)
        except ZBrokerError as exc:
            if not quiet:
                raise
            log.warning("group %s: commit of %d positions failed: %s", self.group, len(offsets), exc)

    def _maybe_auto_commit(self) -> None:
        if not self.enable_auto_commit or self._group is None:
            return
        now = time.monotonic()
        if now < self._next_auto_commit:
            return
        self._next_auto_commit = now + self.auto_commit_interval_ms / 1000.0
        offsets = self._positions(self._fetcher.states)
        if offsets:
            self.commit(offsets, asynchronous=True)

    def _fetch_committed(self, tps) -> dict:
        header = coordinator_call(self, "offset_fetch", {"group": self.group, "partitions": [list(tp) for tp in tps]},
                                  self.request_timeout_ms / 1000.0)
        return {(o["topic"], o["partition"]): o["offset"] for o in header.get("offsets") or ()}

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a partition (the next offset to read), or None."""
        self._need_group("committed()")
        offset = self._fetch_committed([(topic, partition)]).get((topic, partition), -1)
        return offset if offset >= 0 else None

    # -- lifecycle -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("consumer is closed")

    def close(self) -> None:
        """Stop fetching and release the sockets; :meth:`poll` returns ``[]`` afterwards."""
        if self._closed:
            return
        if self._group is not None:
            if self.enable_auto_commit and self._group.topics is not None and self._group.owned:
                self._commit_positions(sorted(self._group.owned), quiet=True)
            elif self.enable_auto_commit and self._group.topics is None:
                self._commit_positions(list(self._fetcher.states), quiet=True)
            self._group.leave()
        self._closed = True
        self._fetcher.closed = True
        with self._fetcher.cond:
            self._fetcher.cond.notify_all()
        self._net.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
