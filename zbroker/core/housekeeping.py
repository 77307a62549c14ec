"""Retention and compaction, run off the request path in bounded slices.

Every ``retention_check_ms`` a pass
starts over every partition this broker holds (leaders and followers alike: each
replica cleans its own copy).  Each turn of the event loop handles at most
``PARTITIONS_PER_TURN`` partitions of the pass, and a compaction pass
(:class:`storage.cleaner.Cleaner`) reads and writes about ``CLEAN_BYTES_PER_TURN``
bytes per turn before yielding, so the loop never stalls on it:

- ``cleanup_policy`` with ``delete``: whole closed segments past ``retention_ms``
  or beyond ``retention_bytes`` go (:func:`zbroker.core.retention.retention_cutoff`),
  never the active one, never above the high watermark; the log start advances.
- ``cleanup_policy`` with ``compact``: when the share of never-cleaned bytes in the
  closed segments reaches ``min_cleanable_dirty_ratio``, the cleaner
  (:mod:`storage.cleaner`) keeps the latest record per key and drops tombstones
  older than ``delete_retention_ms``; an unfinished pass continues next turn.
"""

from __future__ import annotations

import logging
from collections import deque

from storage.cleaner import Cleaner, dirty_ratio
from zbroker.config import ClusterConfig
from zbroker.core.partitions import PartitionManager
from zbroker.core.retention import retention_cutoff

log = logging.getLogger(__name__)

PARTITIONS_PER_TURN = 32
CLEAN_BYTES_PER_TURN = 1 << 20  # 5-15 ms of reading and decoding on the reference machine


class Housekeeping:
    """The retention and compaction pass over this broker's partitions."""

    def __init__(self, config: ClusterConfig, partitions: PartitionManager, now_ms: int) -> None:
        self.config = config
        self.partitions = partitions
        self.logs = partitions.logs
        self.image = partitions.image
        self.next_pass_ms = now_ms + config.setting("retention_check_ms")
        self._pass: deque = deque()
        self.cleaners: dict[tuple[str, int], Cleaner] = {}
        partitions.on_removed.append(self.forget)

    def next_deadline(self, now_ms: int) -> int:
        return self.next_pass_ms if not self._pass else now_ms + 10

    def step(self, now_ms: int) -> None:
        if now_ms >= self.next_pass_ms:
            self.next_pass_ms = now_ms + self.config.setting("retention_check_ms")
            if not self._pass:
                self._pass.extend(self.partitions.online)
        for _ in range(min(PARTITIONS_PER_TURN, len(self._pass))):
            tp = self._pass.popleft()
            part = self.partitions.get(tp)
            topic = self.image.get(tp[0])
            if part is None or topic is None:
                continue
            settings = self.config.topic_settings(topic.overrides)
            policy = settings["cleanup_policy"]
            try:
                if "delete" in policy:
                    self._apply_retention(part, settings, now_ms)
                if "compact" in policy:
                    stepped, finished = self._compact(part, settings, now_ms)
                    if not finished:
                        self._pass.append(tp)  # unfinished: more next turn
                    if stepped:
                        break  # one cleaning step per turn: that is the turn's budget
                elif tp in self.cleaners:  # the topic stopped being compacted mid-pass
                    self.forget(tp)
            except Exception:  # never let housekeeping take the event loop down
                log.exception("housekeeping of %s-%s failed", tp[0], tp[1])

    def _apply_retention(self, part, settings: dict, now_ms: int) -> None:
        lg = part.log
        hw = part.high_watermark if part.is_leader else min(part.high_watermark, lg.log_end_offset)
        cutoff = retention_cutoff(lg.segments_info(), hw, now_ms, settings["retention_ms"], settings["retention_bytes"])
        if cutoff is None or cutoff <= lg.log_start_offset:
            return
        before = lg.log_start_offset
        deleted = lg.delete_segments_before(cutoff)
        if deleted:
            # producer state stays in memory as it is: rebuilding it from what is left would
            # forget producers whose last batch was deleted, and cost a scan in the loop
            log.info("retention: %s-%s deleted %d segment(s), log start %d -> %d", part.topic, part.index, deleted, before,
                     lg.log_start_offset)

    def _compact(self, part, settings: dict, now_ms: int) -> tuple[bool, bool]:
        """One slice of a cleaning pass (started if the partition is dirty enough).

        Returns:
            (whether a cleaning step ran, whether this partition needs no more turns).
        """
        lg = part.log
        cleaner = self.cleaners.get(part.tp)
        if cleaner is None:
            cleaned_to = self.logs.cleaned_to.get(part.tp, lg.log_start_offset)
            if cleaned_to > lg.log_end_offset:  # the log was truncated since: start over
                cleaned_to = lg.log_start_offset
            if len(lg.segments_info()) < 2 or dirty_ratio(lg, cleaned_to) < settings["min_cleanable_dirty_ratio"]:
                return False, True
            # only below the high watermark: what is above may still be truncated away, and the
            # older copy of its key with it
            hw = min(part.high_watermark, lg.log_end_offset)
            cleaner = self.cleaners[part.tp] = Cleaner(lg, settings["delete_retention_ms"], max_offset=hw)
        if not cleaner.step(now_ms, CLEAN_BYTES_PER_TURN):
            return True, False
        del self.cleaners[part.tp]
        result = cleaner.result()
        if result.segments_cleaned:  # each producer's last batch is kept whole: its state stays valid
            log.info("compaction: %s-%s cleaned %d segment(s), %d -> %d bytes, %d records removed%s", part.topic,
                     part.index, result.segments_cleaned, result.bytes_before, result.bytes_after,
                     result.records_removed, " (pass aborted: log truncated)" if result.aborted else "")
        if not result.aborted:
            self.logs.cleaned_to[part.tp] = result.cleaned_up_to
        return True, True

    def forget(self, tp: tuple[str, int]) -> None:
        """The partition left this broker, or stopped being compacted: drop its cleaning pass
        (LogManager.delete forgets where its last pass ended)."""
        cleaner = self.cleaners.pop(tp, None)
        if cleaner is not None:
            cleaner.abort()
