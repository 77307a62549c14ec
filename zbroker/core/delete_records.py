"""DeleteRecords: moving partitions' log starts up, on their leaders (Kafka's DeleteRecords).

For each ``(topic, partition, offset)`` the leader makes ``offset`` its log start
(:meth:`storage.log.Log.delete_records_before`): records below it are no longer served
(fetches there answer OFFSET_OUT_OF_RANGE, list offsets "earliest" answers the new start)
and segments wholly below it are deleted. Checks, in Kafka's order:

- an internal topic (``__consumer_offsets``) is the broker's: INVALID_TOPIC_EXCEPTION;
- only the leader answers (:meth:`PartitionManager.leader`: UNKNOWN_TOPIC_OR_PARTITION,
  NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, KAFKA_STORAGE_ERROR);
- a topic whose ``cleanup_policy`` lacks ``delete`` refuses: POLICY_VIOLATION;
- ``offset`` -1 means the high watermark; any other offset below 0, or above the high
  watermark, is OFFSET_OUT_OF_RANGE; one at or below the log start changes nothing.

**When it answers.** Kafka parks the request until the partition's *low watermark* -- the
smallest log start over its live replicas, which followers report in their fetches -- reaches
the offset, or ``timeout_ms`` passes. zbroker answers at once, when the leader has applied the
new start durably; ``low_watermark`` is then the leader's log start. Followers adopt it from
their next fetch answer (:mod:`zbroker.core.replication`: ``max(own, leader's)``, clipped to
their own log end), normally within one replica fetch round. The reason: follower fetches do
not carry the follower's log start, so the leader cannot see followers adopt it. The cost: a
follower elected leader before it adopted the new start serves the deleted records again,
from its own lower log start, until retention or another DeleteRecords removes them (the old
leader, following it, keeps its own higher start). ``timeout_ms`` is accepted for the Kafka
request's shape and not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from zbroker.context import RequestContext
from zbroker.core.partitions import PartitionManager
from zbroker.errors import ErrorCode, RequestError

log = logging.getLogger(__name__)

HIGH_WATERMARK = -1  # the offset that means "up to the high watermark" (Kafka's DeleteRecordsRequest.HIGH_WATERMARK)


@dataclass(slots=True)
class DeleteRecordsResult:
    """One partition's outcome (Kafka's DeleteRecordsPartitionResult)."""

    topic: str
    partition: int
    low_watermark: int = -1  # the log start now (on error: -1)
    error: int = 0
    error_message: str | None = None


class DeleteRecordsService:
    def __init__(self, partitions: PartitionManager) -> None:
        self.partitions = partitions

    def delete_records(self, ctx: RequestContext, requests: list[tuple[str, int, int]], timeout_ms: int,
                       now_ms: int) -> list[DeleteRecordsResult]:
        """Delete the records below ``offset`` of each ``(topic, partition, offset)``.

        Returns:
            One result per request, in order (a partition named twice is answered twice).
            Never waits: see the module text.
        """
        return [self._delete_one(topic, index, offset, now_ms) for topic, index, offset in requests]

    def _delete_one(self, topic: str, index: int, offset: int, now_ms: int) -> DeleteRecordsResult:
        result = DeleteRecordsResult(topic, index)
        try:
            part = self.partitions.leader_for_write(topic, index, "delete records of")
            meta = self.partitions.image.get(topic)
            policy = self.partitions.config.topic_settings(meta.overrides if meta else None)["cleanup_policy"]
            if "delete" not in policy:
                raise RequestError(ErrorCode.POLICY_VIOLATION,
                                   f"records of {topic}-{index} cannot be deleted: cleanup_policy is {policy!r}")
            hw = part.high_watermark
            target = hw if offset == HIGH_WATERMARK else offset
            if not 0 <= target <= hw:
                raise RequestError(ErrorCode.OFFSET_OUT_OF_RANGE,
                                   f"offset {offset} of {topic}-{index} is not in [0, high watermark {hw}]")
            before = part.log.log_start_offset
            result.low_watermark = part.log.delete_records_before(target)
        except RequestError as exc:
            result.error, result.error_message = int(exc.code), exc.message
            return result
        except OSError as exc:
            log.error("storage error deleting records of %s-%s: %s", topic, index, exc)
            result.error, result.error_message = int(ErrorCode.KAFKA_STORAGE_ERROR), str(exc)
            return result
        if result.low_watermark > before:
            log.info("partition %s-%s: records below %d deleted (log start was %d)", topic, index,
                     result.low_watermark, before)
            self.partitions.purgatory.check(part.tp, now_ms)  # fetches parked below the new start answer now
        return result
