"""The partitions this broker holds: opening, closing and keeping them in line with the image.

:class:`PartitionManager` owns the open partitions (:class:`zbroker.core.partition.Partition`,
one per replica this broker holds), the queue of partitions still to be opened, and the
partition logs under the data dir (:class:`zbroker.core.logmanager.LogManager`).

- :meth:`PartitionManager.reconcile` makes local partitions match the metadata image:
  it updates roles, queues new partitions for opening and removes the ones this broker
  no longer holds (their directories are renamed at once and purged in the background).
- Opening costs file creations and fsyncs (about 1.5 ms a partition on the reference
  machine), so new partitions are opened ``OPENS_PER_TURN`` per loop turn; a queued
  partition answers LEADER_NOT_AVAILABLE (retriable) on its leader until it is open, and
  one whose files cannot be opened answers KAFKA_STORAGE_ERROR and is tried again every
  ``OPEN_RETRY_MS``.
- :meth:`PartitionManager.leader` is how every request finds the partition it acts on.

Other services learn of changes through two hooks: ``on_removed(tp)`` (a partition left
this broker) and :meth:`PartitionManager.changed` (something parked on it may proceed).
"""

from __future__ import annotations

import logging
from typing import Callable

from zbroker.config import ClusterConfig
from zbroker.control.controlplane import ControlPlane
from zbroker.core.logmanager import LogManager, log_config
from zbroker.core.partition import Partition
from zbroker.errors import ErrorCode, RequestError
from zbroker.purgatory import Purgatory

log = logging.getLogger(__name__)

TP = tuple[str, int]
OPENS_PER_TURN = 16  # partitions opened per loop turn (about 25 ms)
OPEN_RETRY_MS = 5000  # a partition whose files could not be opened is tried again this much later
PURGES_PER_TURN = 16  # directories of deleted partitions removed per loop turn (about 6 ms)


class PartitionManager:
    """The open partitions of one broker and their logs."""

    def __init__(self, config: ClusterConfig, broker_id: int, logs: LogManager, control: ControlPlane,
                 purgatory: Purgatory) -> None:
        self.config = config
        self.broker_id = broker_id
        self.logs = logs
        self.control = control
        self.image = control.image
        self.purgatory = purgatory
        self.online: dict[TP, Partition] = {}
        self.opening: dict[TP, None] = {}  # in the image, to be opened (an ordered set)
        self.open_failed: dict[TP, int] = {}  # could not be opened -> when to try again
        self._opens_left = OPENS_PER_TURN  # of this loop turn (reset by new_turn)
        self.on_removed: list[Callable[[TP], None]] = []

    # -- queries -----------------------------------------------------------------

    def get(self, tp: TP) -> Partition | None:
        return self.online.get(tp)

    def leader(self, topic: str, index: int) -> Partition:
        """The partition if this broker leads it and may serve it.

        Raises:
            RequestError: UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE (no leader, or
                still being opened here), KAFKA_STORAGE_ERROR (its files cannot be opened),
                NOT_LEADER_OR_FOLLOWER.
        """
        part = self.online.get((topic, index))
        if part is not None and part.is_leader:
            if not self.control.ready:
                raise RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {self.broker_id} is still catching up on cluster metadata")
            return part
        pm = self.image.partition(topic, index)
        if pm is None:
            raise RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic or partition {topic}-{index}")
        if pm.leader < 0:
            raise RequestError(ErrorCode.LEADER_NOT_AVAILABLE, f"{topic}-{index} has no leader right now")
        if pm.leader == self.broker_id and (topic, index) in self.opening:
            raise RequestError(ErrorCode.LEADER_NOT_AVAILABLE, f"{topic}-{index} is still being opened on broker {self.broker_id}")
        if pm.leader == self.broker_id and (topic, index) in self.open_failed:
            raise RequestError(ErrorCode.KAFKA_STORAGE_ERROR,
                               f"broker {self.broker_id} cannot open the files of {topic}-{index} (see its log)")
        raise RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {self.broker_id} does not lead {topic}-{index} (broker {pm.leader} does)")

    def leader_for_write(self, topic: str, index: int, action: str) -> Partition:
        """:meth:`leader`, for a client changing the partition's records: an internal topic
        (``__consumer_offsets``) is the broker's and refuses with INVALID_TOPIC_EXCEPTION
        ("cannot ``action`` internal topic ..."), before any other check."""
        meta = self.image.get(topic)
        if meta is not None and meta.internal:
            raise RequestError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"cannot {action} internal topic {topic}")
        return self.leader(topic, index)

    def is_opening(self, tp: TP) -> bool:
        return tp in self.opening

    def min_isr(self, topic: str) -> int:
        meta = self.image.get(topic)
        return self.config.topic_settings(meta.overrides if meta else None)["min_insync_replicas"]

    # -- changes -----------------------------------------------------------------

    def changed(self, part: Partition, now_ms: int) -> None:
        """After an append or a follower's progress: move the high watermark if it can
        move, and retry what is parked on the partition."""
        if part.update_high_watermark():
            self.hw_moved(part, now_ms)
        else:
            self.purgatory.check(part.tp, now_ms)  # follower fetches wait for appends

    def hw_moved(self, part: Partition, now_ms: int) -> None:
        """A leader's high watermark moved: checkpoint it, retry what is parked on it."""
        self.logs.high_watermarks[part.tp] = part.high_watermark
        self.purgatory.check(part.tp, now_ms)

    def record_high_watermark(self, tp: TP) -> None:
        """A follower learned a new high watermark from its leader: checkpoint it."""
        self.logs.high_watermarks[tp] = self.online[tp].high_watermark

    # -- lifecycle ---------------------------------------------------------------

    def new_turn(self) -> None:
        self._opens_left = OPENS_PER_TURN

    def reconcile(self, now_ms: int) -> None:
        """Make local partitions match the image: update roles, queue new ones for opening
        (:meth:`open_pending`), remove the ones this broker no longer holds."""
        wanted = set()
        for topic in self.image.topics.values():
            cfg = None
            for pm in topic.partitions:
                if self.broker_id not in pm.replicas:
                    continue
                tp = (topic.name, pm.partition)
                wanted.add(tp)
                part = self.online.get(tp)
                if part is not None and part.topic_id != topic.topic_id:
                    # deleted and created again within one metadata step: another topic
                    self._drop(tp, now_ms)
                    part = None
                if part is None:
                    if tp not in self.open_failed:
                        self.opening.setdefault(tp, None)
                    continue
                cfg = cfg or log_config(self.config.topic_settings(topic.overrides))
                self._sync(part, pm, cfg, now_ms)
        for tp in [tp for tp in (*self.opening, *self.open_failed) if tp not in wanted]:
            self.opening.pop(tp, None)
            self.open_failed.pop(tp, None)
            self.purgatory.check(tp, now_ms)  # fetches parked on it learn it is gone
        for tp in [tp for tp in self.online if tp not in wanted]:
            log.info("removing partition %s-%s from this broker", *tp)
            self._drop(tp, now_ms)
        self.open_pending(now_ms)

    def _drop(self, tp: TP, now_ms: int) -> None:
        """Close and delete a local partition (its files go in the background)."""
        del self.online[tp]
        for hook in self.on_removed:
            hook(tp)
        self.logs.delete(tp)
        self.purgatory.check(tp, now_ms)

    def open_pending(self, now_ms: int, everything: bool = False) -> None:
        """Open (create or recover) queued partitions: what is left of this turn's
        ``OPENS_PER_TURN``, or all of them."""
        for tp, retry_at in list(self.open_failed.items()):
            if retry_at <= now_ms:
                del self.open_failed[tp]
                self.opening.setdefault(tp, None)
        while self.opening and (everything or self._opens_left > 0):
            tp = next(iter(self.opening))
            del self.opening[tp]
            topic = self.image.get(tp[0])
            pm = self.image.partition(*tp)
            if topic is None or pm is None or self.broker_id not in pm.replicas or tp in self.online:
                self.purgatory.check(tp, now_ms)
                continue
            cfg = log_config(self.config.topic_settings(topic.overrides))
            self._opens_left -= 1
            try:
                lg = self.logs.open(tp, cfg, now_ms, topic.topic_id)
            except Exception:  # a disk problem: serve the rest, try this one again later
                log.exception("cannot open partition %s-%s; trying again in %d ms", *tp, OPEN_RETRY_MS)
                self.open_failed[tp] = now_ms + OPEN_RETRY_MS
                self.purgatory.check(tp, now_ms)
                continue
            part = Partition(topic.name, pm.partition, lg, self.broker_id, topic_id=topic.topic_id)
            part.high_watermark = min(max(self.logs.high_watermarks.get(tp, 0), lg.log_start_offset), lg.log_end_offset)
            self.online[tp] = part
            self._sync(part, pm, cfg, now_ms)

    def _sync(self, part: Partition, pm, cfg, now_ms: int) -> None:
        """Bring one open partition in line with its metadata: settings, leader, ISR."""
        if part.log.config != cfg:
            part.log.config = cfg
        before = (part.leader, part.leader_epoch)
        part.apply_metadata(pm.leader, pm.leader_epoch, pm.replicas, pm.isr, now_ms)
        if before != (pm.leader, pm.leader_epoch):
            log.info("partition %s-%s leader=%s epoch=%s isr=%s%s", part.topic, part.index, pm.leader, pm.leader_epoch, pm.isr,
                     " (this broker)" if pm.leader == self.broker_id else "")
            self.purgatory.check(part.tp, now_ms)  # parked requests of a partition that changed hands
        if part.is_leader and part.update_high_watermark():
            self.hw_moved(part, now_ms)

    def next_open_ms(self, now_ms: int) -> int | None:
        """When :meth:`open_pending` next has work (None: nothing queued)."""
        if self.opening:
            return now_ms
        return min(self.open_failed.values()) if self.open_failed else None

    def purge_deleted(self) -> None:
        self.logs.purge_deleted(PURGES_PER_TURN)
