"""The consumer's public API: assignment, positions and ``poll()``.

Fetching happens ahead of ``poll()`` in the network thread (see
:mod:`clients.consumer.fetcher`); ``poll()`` decodes buffered batches and returns at
once when data is buffered.

With a ``group``, subscribed consumers share their topics' partitions: the
group's coordinator assigns each partition to exactly one member and moves
partitions incrementally when members come and go (:mod:`clients.consumer.group`);
positions are committed to the coordinator (``commit()``, auto-commit) and a
newly assigned partition starts at its committed offset.  Offset look-ups and
commits are :mod:`clients.consumer.offsets`; the methods here delegate.
"""

from __future__ import annotations

import logging
import time

from clients.connection import NetworkClient
from clients.consumer.group import GroupMembership
from clients.consumer.offsets import ConsumerOffsets
from clients.consumer.fetcher import Fetcher
from clients.metadata import MetadataManager
from clients.serde import DESERIALIZERS, resolve
from clients.structs import OffsetAndTimestamp, Record, TopicPartition
from clients.throttle import ThrottleStats
from zbroker.errors import ClientClosedError, ZBrokerError

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
        curve_secret_key_file: this client's CurveZMQ key pair (``NAME.key_secret``), for
            brokers with ``[security] curve = true``; None reads ``ZBROKER_CURVE_SECRET_KEY_FILE``.
        curve_server_key: the bootstrap broker's public key (Z85, or a ``.key`` file); the
            other brokers' come with the metadata.  None reads ``ZBROKER_CURVE_SERVER_KEY``.
        request_timeout_ms: deadline of each request (default 30000).
        key_deserializer, value_deserializer: callable or ``"bytes"``/``"str"``/``"json"``.
        fetch_max_bytes: cap of one fetch response (default 50 MiB); also the most one
            batch may decompress to, and about the most record bytes one decode step
            holds (at least ``max_partition_fetch_bytes``). A batch over it raises
            :class:`~zbroker.errors.DecompressionLimitExceededError`.
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
        curve_secret_key_file: str | None = None,
        curve_server_key: str | bytes | None = None,
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
        self._net = NetworkClient(bootstrap, client_id, request_timeout_ms, name="zbroker-consumer",
                                  curve_secret_key_file=curve_secret_key_file, curve_server_key=curve_server_key)
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
        self._offsets = ConsumerOffsets(
            self._net, self._meta, self._fetcher, group=group, request_timeout_ms=request_timeout_ms,
            enable_auto_commit=enable_auto_commit, auto_commit_interval_ms=auto_commit_interval_ms,
            check_open=self._check_open,
        )
        if group is not None:
            if not isinstance(group, str) or not group:
                raise ValueError("group must be a non-empty string")
            self._group = GroupMembership(self._net, self._meta, self._fetcher, self._offsets, self._callback, group,
                                          group_instance_id, assignor, session_timeout_ms, max_poll_interval_ms, client_id)
            self._offsets.membership = self._group
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
            CorruptRecordError: a fetched batch cannot be read (CRC, magic, codec, records;
                :class:`~zbroker.errors.DecompressionLimitExceededError` past
                ``fetch_max_bytes``). Every record before it has been returned; the
                partition's position stays at the batch and every poll raises this again
                until :meth:`seek` moves it, e.g. to ``exc.next_offset`` to skip the batch.
        """
        fetcher = self._fetcher
        deadline = time.monotonic() + timeout_ms / 1000.0
        group = self._group
        while True:
            if group is not None and not self._closed:
                group.last_poll = time.monotonic()
                if group.pending():
                    group.apply()  # callbacks and commits run here, in the caller's thread
                self._offsets.maybe_auto_commit()
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

    @property
    def throttle(self) -> ThrottleStats:
        """Fetch answers brokers held back by a quota (``count``, ``total_ms``, ``last_ms``)."""
        return self._fetcher.throttle

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Make ``offset`` the next offset :meth:`poll` returns for the partition.

        Also how to go past a batch :meth:`poll` cannot read: ``seek(exc.topic,
        exc.partition, exc.next_offset)`` with the :class:`~zbroker.errors.CorruptRecordError`.
        """
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
        self._offsets.reset(self._tps(tps), "earliest")

    def seek_to_end(self, *tps) -> None:
        """Move the partitions (default: all assigned) to their high watermark."""
        self._offsets.reset(self._tps(tps), "latest")

    def position(self, topic: str, partition: int, timeout_ms: int | None = None) -> int:
        """The next offset :meth:`poll` returns for the partition (resolving a pending reset).

        Raises:
            OffsetOutOfRangeError: no position and ``auto_offset_reset='none'``.
            RequestTimeoutError: the reset did not resolve in time.
        """
        return self._offsets.position((topic, partition), timeout_ms)

    def highwater(self, topic: str, partition: int) -> int:
        """The high watermark seen in the last fetch of the partition (-1 if none yet)."""
        st = self._fetcher.states.get((topic, partition))
        return -1 if st is None else st.high_watermark

    def beginning_offsets(self, tps) -> dict[TopicPartition, int]:
        """Log start offset of each partition."""
        return self._offsets.beginning_offsets(tps)

    def end_offsets(self, tps) -> dict[TopicPartition, int]:
        """High watermark (next offset to be written and readable) of each partition."""
        return self._offsets.end_offsets(tps)

    def offsets_for_times(self, timestamps: dict) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """First offset whose timestamp is >= the given ms timestamp, per partition (None if none).

        The broker answers at batch granularity (docs/protocol.md §4.8).
        """
        return self._offsets.offsets_for_times(timestamps)

    # -- groups ----------------------------------------------------------------------

    def _callback(self, name: str, tps) -> None:
        fn = self._callbacks.get(name)
        if fn is None:
            return
        try:
            fn([TopicPartition(*tp) for tp in tps])
        except Exception:  # a listener's bug must not break the group protocol
            log.exception("%s callback failed", name)

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
        self._offsets.commit(offsets, metadata, asynchronous, callback)

    def commit_async(self, offsets=None, callback=None) -> None:
        """Same as ``commit(offsets, asynchronous=True, callback=callback)``."""
        self.commit(offsets, asynchronous=True, callback=callback)

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a partition (the next offset to read), or None."""
        return self._offsets.committed(topic, partition)

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
                self._offsets.commit_positions(sorted(self._group.owned), quiet=True)
            elif self.enable_auto_commit and self._group.topics is None:
                self._offsets.commit_positions(list(self._fetcher.states), quiet=True)
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
