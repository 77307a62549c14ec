"""The data path: produce, fetch (consumers and followers), list offsets, acks=all.

A mixin of :class:`zbroker.broker.Broker`; no sockets.

- **Produce** goes to the partition's leader.  Each batch is validated and
  appended with the leader's epoch.  ``acks=1`` is answered at once; ``acks=all``
  is refused with NOT_ENOUGH_REPLICAS when the ISR is smaller than
  ``min_insync_replicas``, otherwise parked in the purgatory (keyed by its
  partitions) until the high watermark passes every batch of the request --
  that is, until every in-sync replica has it.  If the ISR shrinks below the
  minimum meanwhile the answer is NOT_ENOUGH_REPLICAS_AFTER_APPEND; if this
  broker stops leading, NOT_LEADER_OR_FOLLOWER; at ``timeout_ms``,
  REQUEST_TIMED_OUT.
- **Consumer fetches** read below the high watermark; **follower fetches**
  (``replica_id`` >= 0) read up to the log end, move the follower's position
  (which may move the high watermark and so complete acks=all produces and wake
  consumer fetches), and are checked by leader epoch: a follower whose tail is
  not in the leader's log is told where to truncate (``diverging``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage import CorruptBatchError, OffsetOutOfRange
from zbroker import protocol as P
from zbroker.errors import ErrorCode
from zbroker.partition import Partition
from zbroker.purgatory import DelayedOperation

if TYPE_CHECKING:
    from zbroker.broker import Broker

log = logging.getLogger(__name__)

Frames = list[bytes]


class DataPath:
    """Mixin: the data-path request handlers."""

    def _leader_partition(self: Broker, topic: str, index: int) -> Partition:
        part = self.partitions.get((topic, index))
        if part is not None and part.is_leader:
            if not self.control.ready:
                raise P.RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {self.broker_id} is still catching up on cluster metadata")
            return part
        pm = self.image.partition(topic, index)
        if pm is None:
            raise P.RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic or partition {topic}-{index}")
        if pm.leader < 0:
            raise P.RequestError(ErrorCode.LEADER_NOT_AVAILABLE, f"{topic}-{index} has no leader right now")
        if pm.leader == self.broker_id and (topic, index) in self._opening:
            raise P.RequestError(ErrorCode.LEADER_NOT_AVAILABLE, f"{topic}-{index} is still being opened on broker {self.broker_id}")
        if pm.leader == self.broker_id and (topic, index) in self._open_failed:
            raise P.RequestError(ErrorCode.KAFKA_STORAGE_ERROR,
                                 f"broker {self.broker_id} cannot open the files of {topic}-{index} (see its log)")
        raise P.RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {self.broker_id} does not lead {topic}-{index} (broker {pm.leader} does)")

    def _min_isr(self: Broker, topic: str) -> int:
        meta = self.image.get(topic)
        return self.config.topic_settings(meta.overrides if meta else None)["min_insync_replicas"]

    def _hw_moved(self: Broker, part: Partition) -> None:
        self.logs.high_watermarks[part.tp] = part.high_watermark
        self.purgatory.check(part.tp)

    # -- produce -------------------------------------------------------------------

    def _produce(self: Broker, peer, header, fields, frames, now_ms):
        acks = fields["acks"]
        if acks not in (0, 1, P.ACKS_ALL):
            raise P.RequestError(ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, got {acks}")
        batches = fields["batches"]
        if len(batches) != len(frames) - 1:
            raise P.RequestError(
                ErrorCode.INVALID_REQUEST, f"'batches' lists {len(batches)} batches but {len(frames) - 1} payload frames came"
            )
        results, waits = [], []
        for spec, frame in zip(batches, frames[1:]):
            result, part, end = self._append_one(spec["topic"], spec["partition"], frame, acks, now_ms)
            results.append(result)
            if part is not None:
                if part.update_high_watermark():
                    self._hw_moved(part)
                else:
                    self.purgatory.check(part.tp)  # follower fetches wait for appends
                if acks == P.ACKS_ALL:
                    waits.append((result, part, end))
        if acks == 0:
            return None
        cid = header["cid"]
        if not waits:
            return P.response(P.PRODUCE, cid, results=results)

        def settle(final: bool) -> bool:
            pending = False
            for result, part, end in waits:
                if result["error"] or result.get("_done"):
                    continue
                if not part.is_leader or self.partitions.get(part.tp) is not part:
                    result.update(error=int(ErrorCode.NOT_LEADER_OR_FOLLOWER), error_message="leadership moved before replication")
                elif len(part.isr) < self._min_isr(part.topic):  # checked first: a lone leader's HW is its LEO
                    result.update(error=int(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND),
                                  error_message=f"ISR of {part.topic}-{part.index} fell below min_insync_replicas")
                elif part.high_watermark >= end:
                    result["_done"] = True
                elif final:
                    result.update(error=int(ErrorCode.REQUEST_TIMED_OUT), error_message="not replicated to every in-sync replica in time")
                else:
                    pending = True
            if pending:
                return False
            for result in results:
                result.pop("_done", None)
                if result["error"]:
                    result["base_offset"] = -1
            self._reply(peer, P.response(P.PRODUCE, cid, results=results), [])
            return True

        keys = {part.tp for _, part, _ in waits}
        self.purgatory.park(DelayedOperation(now_ms + fields["timeout_ms"], keys, lambda: settle(False), lambda: settle(True)))
        return None

    def _append_one(self: Broker, topic: str, index: int, batch: bytes, acks: int, now_ms: int):
        """Append one batch; returns (result entry, partition or None, end offset)."""
        result = {"topic": topic, "partition": index, "error": 0, "base_offset": -1, "log_append_time": -1, "log_start_offset": -1}
        try:
            part = self._leader_partition(topic, index)
            max_bytes = part.log.config.max_message_bytes
            if len(batch) > max_bytes:
                raise P.RequestError(
                    ErrorCode.MESSAGE_TOO_LARGE, f"batch of {len(batch)} bytes exceeds max_message_bytes={max_bytes} of {topic}"
                )
            if acks == P.ACKS_ALL and len(part.isr) < self._min_isr(topic):
                raise P.RequestError(
                    ErrorCode.NOT_ENOUGH_REPLICAS,
                    f"{topic}-{index} has {len(part.isr)} in-sync replicas, min_insync_replicas={self._min_isr(topic)}",
                )
            dup = self._producer_check(part, batch)
            if dup is not None:
                result.update(base_offset=dup, log_start_offset=part.log.log_start_offset)
                return result, part, dup + 1
            info = part.log.append(batch, now_ms, leader_epoch=part.leader_epoch)
            self._producer_appended(part, batch, info.base_offset)
        except P.RequestError as exc:
            result.update(error=int(exc.code), error_message=exc.message)
            return result, None, 0
        except CorruptBatchError as exc:
            log.warning("rejected corrupt batch for %s-%s: %s", topic, index, exc)
            result.update(error=int(ErrorCode.CORRUPT_MESSAGE), error_message=str(exc))
            return result, None, 0
        except OSError as exc:
            log.error("storage error appending to %s-%s: %s", topic, index, exc)
            result.update(error=int(ErrorCode.KAFKA_STORAGE_ERROR), error_message=str(exc))
            return result, None, 0
        result.update(base_offset=info.base_offset, log_start_offset=part.log.log_start_offset)
        return result, part, info.last_offset + 1

    # -- fetch ---------------------------------------------------------------------

    def _read_partitions(self: Broker, fields: dict, now_ms: int) -> tuple[list[dict], Frames, int, bool]:
        """Read every requested partition; returns (entries, payloads, bytes, any_error)."""
        entries, payloads = [], []
        budget = fields["max_bytes"]
        replica = fields["replica_id"]
        total, errors = 0, False
        for spec in fields["partitions"]:
            topic, index, offset = spec["topic"], spec["partition"], spec["offset"]
            entry = {"topic": topic, "partition": index, "error": 0, "high_watermark": -1, "log_start_offset": -1}
            data = b""
            try:
                part = self._leader_partition(topic, index)
                if replica >= 0:
                    self._check_replica_fetch(part, spec, entry, now_ms, replica)
            except P.RequestError as exc:
                entry["error"] = int(exc.code)
                part = None
            if part is not None and not entry.get("diverging"):
                lg = part.log
                entry["high_watermark"] = part.high_watermark
                entry["log_start_offset"] = lg.log_start_offset
                limit = None if replica >= 0 else part.high_watermark
                if offset < lg.log_start_offset or offset > lg.log_end_offset:
                    entry["error"] = int(ErrorCode.OFFSET_OUT_OF_RANGE)
                elif offset < (lg.log_end_offset if limit is None else limit) and budget > 0:
                    try:
                        data = lg.read(offset, min(spec["max_bytes"], budget), max_offset=limit).data
                    except OffsetOutOfRange:  # retention raced the check above
                        entry["error"] = int(ErrorCode.OFFSET_OUT_OF_RANGE)
            # a partition still being opened here is no reason to end a long poll early: the
            # fetch waits (and says LEADER_NOT_AVAILABLE for it when it is answered)
            opening = entry["error"] == ErrorCode.LEADER_NOT_AVAILABLE and (topic, index) in self._opening
            errors = errors or (entry["error"] != 0 and not opening) or bool(entry.get("diverging"))
            total += len(data)
            budget -= len(data)
            entries.append(entry)
            payloads.append(data)
        return entries, payloads, total, errors

    def _check_replica_fetch(self: Broker, part: Partition, spec: dict, entry: dict, now_ms: int, replica: int) -> None:
        """Leader epoch and divergence checks of a follower's fetch; records its position."""
        if replica not in part.replicas:
            raise P.RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {replica} holds no replica of {part.topic}-{part.index}")
        epoch = spec.get("leader_epoch", -1)
        if 0 <= epoch < part.leader_epoch:
            raise P.RequestError(ErrorCode.FENCED_LEADER_EPOCH, f"leader epoch {epoch} is older than {part.leader_epoch}")
        if epoch > part.leader_epoch:
            raise P.RequestError(ErrorCode.UNKNOWN_LEADER_EPOCH, f"leader epoch {epoch} is newer than {part.leader_epoch}")
        offset, last_epoch = spec["offset"], spec.get("last_fetched_epoch", -1)
        if offset > part.log.log_end_offset:
            # a follower can never be ahead of its leader's log end in the same epoch: refuse,
            # before its offset could move the high watermark
            if last_epoch < 0:
                raise P.RequestError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {offset} is past the log end {part.log.log_end_offset}")
        if last_epoch >= 0 and offset > part.log.log_start_offset:
            cache = part.log.leader_epoch_cache
            end_epoch, end_offset = cache.end_offset_for(last_epoch, part.log.log_end_offset)
            if end_epoch < 0 and cache.latest_epoch is not None and last_epoch > cache.latest_epoch:
                end_epoch, end_offset = cache.latest_epoch, part.log.log_end_offset  # never "truncate everything"
            if end_epoch != last_epoch or offset > end_offset:
                entry["diverging"] = [end_epoch, max(end_offset, part.log.log_start_offset)]
                entry["high_watermark"] = part.high_watermark
                return
        if part.on_follower_fetch(replica, offset, now_ms):
            self._hw_moved(part)

    def _fetch(self: Broker, peer, header, fields, frames, now_ms):
        cid = header["cid"]
        keys = [(s["topic"], s["partition"]) for s in fields["partitions"]]

        def respond(entries, payloads) -> None:
            self._reply(peer, P.response(P.FETCH, cid, partitions=entries), payloads)

        if fields["max_bytes"] < 0 or any(spec["max_bytes"] < 0 for spec in fields["partitions"]):
            raise P.RequestError(ErrorCode.INVALID_REQUEST, "max_bytes must be >= 0")
        if fields["max_wait_ms"] > 300_000:
            raise P.RequestError(ErrorCode.INVALID_REQUEST, "max_wait_ms must be <= 300000")
        entries, payloads, total, errors = self._read_partitions(fields, now_ms)
        if total >= fields["min_bytes"] or errors or fields["max_wait_ms"] <= 0 or not keys:
            respond(entries, payloads)
            return None

        def try_complete() -> bool:
            entries, payloads, total, errors = self._read_partitions(fields, self._now())
            if total >= fields["min_bytes"] or errors:
                respond(entries, payloads)
                return True
            return False

        def on_expire() -> None:
            respond(*self._read_partitions(fields, self._now())[:2])

        self.purgatory.park(DelayedOperation(now_ms + fields["max_wait_ms"], keys, try_complete, on_expire))
        return None

    def _list_offsets(self: Broker, peer, header, fields, frames, now_ms):
        results = []
        for spec in fields["partitions"]:
            topic, index, ts = spec["topic"], spec["partition"], spec["timestamp"]
            entry = {"topic": topic, "partition": index, "error": 0, "offset": -1, "timestamp": -1}
            try:
                part = self._leader_partition(topic, index)
            except P.RequestError as exc:
                entry["error"] = int(exc.code)
                results.append(entry)
                continue
            if ts == P.LATEST_TIMESTAMP:
                entry["offset"] = part.high_watermark
            elif ts == P.EARLIEST_TIMESTAMP:
                entry["offset"] = part.log.log_start_offset
            else:
                found = part.log.offset_for_timestamp(ts)
                if found is not None and found[0] < part.high_watermark:
                    entry["offset"], entry["timestamp"] = found
            results.append(entry)
        return P.response(P.LIST_OFFSETS, header["cid"], partitions=results)
