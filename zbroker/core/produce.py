"""Produce: appending record batches on a partition's leader, with acks 0, 1 or all.

- Each batch goes to its partition's leader (:meth:`PartitionManager.leader_for_write`); an internal
  topic (``__consumer_offsets``) is the broker's and refuses it (INVALID_TOPIC_EXCEPTION).
  It is checked against ``max_message_bytes``, the ISR size (acks=all), the rules of a
  produced batch (:func:`storage.batch.validate_produced_batch`: framing and CRC give
  CORRUPT_MESSAGE, an undefined codec UNSUPPORTED_COMPRESSION_TYPE, a record count that
  disagrees with the offset delta, no records, a control batch or magic-2 records that do
  not parse INVALID_RECORD; native payloads are never decoded) and the producer's sequence
  (:mod:`zbroker.core.producer_state`: a duplicate is acknowledged with its first offset,
  not written twice), and appended with the leader's epoch.
- ``acks=1`` is answered at once; ``acks=all`` is refused with NOT_ENOUGH_REPLICAS when
  the ISR is smaller than ``min_insync_replicas``, otherwise parked in the purgatory
  (keyed by its partitions) until the high watermark passes every batch of the request
  -- until every in-sync replica has it.  If the ISR shrinks below the minimum meanwhile
  the answer is NOT_ENOUGH_REPLICAS_AFTER_APPEND; if this broker stops leading,
  NOT_LEADER_OR_FOLLOWER; at ``timeout_ms``, REQUEST_TIMED_OUT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from storage import CorruptBatchError, InvalidRecordError, UnsupportedCodecError, validate_produced_batch
from zbroker.context import Completion, RequestContext
from zbroker.core.partition import Partition
from zbroker.core.partitions import PartitionManager
from zbroker.core.producer_state import check_batch, note_appended
from zbroker.errors import ErrorCode, RequestError
from zbroker.purgatory import DelayedOperation, Purgatory
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

ACKS_ALL = -1


@dataclass(slots=True)
class ProduceRequest:
    """A produce handed to another broker (the partitions' leader) by one that runs a bridge."""

    acks: int
    timeout_ms: int
    batches: list[tuple[str, int, bytes]]  # (topic, partition, batch bytes)


@dataclass(slots=True)
class ProduceResult:
    """One batch's outcome (Kafka's per-partition produce response)."""

    topic: str
    partition: int
    error: int = 0
    error_message: str | None = None
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1

    def fail(self, code: ErrorCode, message: str) -> None:
        self.error, self.error_message, self.base_offset = int(code), message, -1


def check_acks(acks: int) -> None:
    """Raises INVALID_REQUIRED_ACKS unless ``acks`` is 0, 1 or -1 (all)."""
    if acks not in (0, 1, ACKS_ALL):
        raise RequestError(ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, got {acks}")


def _code_of(exc: CorruptBatchError) -> ErrorCode:
    """The produce error of a refused batch, as Kafka answers it."""
    if isinstance(exc, InvalidRecordError):
        return ErrorCode.INVALID_RECORD
    if isinstance(exc, UnsupportedCodecError):
        return ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    return ErrorCode.CORRUPT_MESSAGE


class ProduceService:
    def __init__(self, partitions: PartitionManager, purgatory: Purgatory) -> None:
        self.partitions = partitions
        self.purgatory = purgatory
        self._refusals = RateLimitedLog(log, burst=10, window_s=10.0)  # a hostile producer's batches, logged bounded

    def produce(self, ctx: RequestContext, acks: int, timeout_ms: int, batches: list[tuple[str, int, bytes]],
                now_ms: int) -> list[ProduceResult] | Completion[list[ProduceResult]] | None:
        """Append ``batches`` (topic, partition, batch bytes).

        Returns:
            the results at once (acks=1, or every batch failed), a Completion (acks=all),
            or None for acks=0 (nobody is answered).
        """
        check_acks(acks)
        results: list[ProduceResult] = []
        waits: list[tuple[ProduceResult, Partition, int]] = []
        explained: set[tuple[str, int]] = set()
        for topic, index, batch in batches:
            result, part, end = self._append_one(topic, index, batch, acks, now_ms)
            if result.error and result.error_message:
                # the first refusal of a partition says why; later ones of the same request carry
                # the code alone, so an answer never grows past its request
                if (topic, index) in explained:
                    result.error_message = None
                explained.add((topic, index))
            results.append(result)
            if part is not None:
                self.partitions.changed(part, now_ms)
                if acks == ACKS_ALL:
                    waits.append((result, part, end))
        if acks == 0:
            return None
        if not waits:
            return results
        done = Completion()
        pending = list(waits)

        def settle(final: bool) -> bool:
            for item in list(pending):
                result, part, end = item
                if not part.is_leader or self.partitions.get(part.tp) is not part:
                    result.fail(ErrorCode.NOT_LEADER_OR_FOLLOWER, "leadership moved before replication")
                elif len(part.isr) < self.partitions.min_isr(part.topic):  # checked first: a lone leader's HW is its LEO
                    result.fail(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                                f"ISR of {part.topic}-{part.index} fell below min_insync_replicas")
                elif part.high_watermark >= end:
                    pass
                elif final:
                    result.fail(ErrorCode.REQUEST_TIMED_OUT, "not replicated to every in-sync replica in time")
                else:
                    continue
                pending.remove(item)
            if pending:
                return False
            done.complete(results)
            return True

        keys = {part.tp for _, part, _ in waits}
        self.purgatory.park(DelayedOperation(now_ms + timeout_ms, keys, lambda now: settle(False), lambda now: settle(True)), now_ms)
        return done

    def _append_one(self, topic: str, index: int, batch: bytes, acks: int, now_ms: int):
        """Append one batch; returns (result, partition or None, end offset)."""
        result = ProduceResult(topic, index)
        try:
            part = self.partitions.leader_for_write(topic, index, "append to")
            max_bytes = part.log.config.max_message_bytes
            if len(batch) > max_bytes:
                raise RequestError(
                    ErrorCode.MESSAGE_TOO_LARGE, f"batch of {len(batch)} bytes exceeds max_message_bytes={max_bytes} of {topic}"
                )
            if acks == ACKS_ALL and len(part.isr) < self.partitions.min_isr(topic):
                raise RequestError(
                    ErrorCode.NOT_ENOUGH_REPLICAS,
                    f"{topic}-{index} has {len(part.isr)} in-sync replicas, min_insync_replicas={self.partitions.min_isr(topic)}",
                )
            header = validate_produced_batch(batch, max_bytes)
            dup = check_batch(part, batch)
            if dup is not None:  # acks=all waits for the whole original batch, as for a first try
                result.base_offset, result.log_start_offset = dup, part.log.log_start_offset
                return result, part, dup + header.record_count
            info = part.log.append(batch, now_ms, leader_epoch=part.leader_epoch, header=header)
            note_appended(part, batch, info.base_offset)
        except RequestError as exc:
            result.fail(exc.code, exc.message)
            return result, None, 0
        except CorruptBatchError as exc:
            self._refusals.log(now_ms / 1000, "rejected_batch", logging.WARNING, "rejected batch for %s-%s: %s",
                               topic, index, str(exc)[:200])
            result.fail(_code_of(exc), str(exc))
            return result, None, 0
        except OSError as exc:
            log.error("storage error appending to %s-%s: %s", topic, index, exc)
            result.fail(ErrorCode.KAFKA_STORAGE_ERROR, str(exc))
            return result, None, 0
        result.base_offset, result.log_start_offset = info.base_offset, part.log.log_start_offset
        return result, part, info.last_offset + 1
