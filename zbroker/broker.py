"""The broker's request handling: requests in, responses out, no sockets.

:class:`Broker` owns the metadata image, the partition logs and the purgatory.
The server loop (zbroker/server.py) hands it each received multipart message
with the sender's routing id and the current time, and sends whatever the
broker puts in :attr:`Broker.outbox`: ``(peer, [header, *payload_frames])``.
A response may be produced later than its request (a long-poll fetch parked in
the purgatory); it still goes through the outbox.

Theory of operation, per request:

1. :func:`zbroker.protocol.decode_header` -- garbage without a correlation id
   is dropped and logged (there is nobody to answer).
2. :func:`zbroker.protocol.decode_request` -- version, type and every field
   are checked; a problem is answered with UNSUPPORTED_VERSION or
   INVALID_REQUEST naming the field.
3. The handler for the type runs and returns a response, or parks one.
   An unexpected exception in a handler is logged with its traceback and
   answered with UNKNOWN_SERVER_ERROR; the broker keeps serving.

Record batches are validated (framing, CRC, count, size) and appended as
bytes; fetches return the stored bytes.  Records are never decoded here.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from storage import CorruptBatchError, OffsetOutOfRange, parse_header
from storage.batch import COMPRESSION_MASK, COMPRESSION_SNAPPY
from zbroker import protocol as P
from zbroker.config import TOPIC_CONFIG, ClusterConfig, ConfigError, validate_topic_config
from zbroker.errors import ErrorCode
from zbroker.logmanager import LogManager, log_config
from zbroker.metadata import LocalMetadataStore, MetadataImage, PartitionMeta, TopicMeta, topic_name_problem
from zbroker.partition import Partition
from zbroker.purgatory import DelayedOperation, Purgatory

log = logging.getLogger(__name__)

Frames = list[bytes]
Handler = Callable[[bytes, dict, dict, Frames, int], "dict | None"]


class Broker:
    """One broker's state and request handlers (single node)."""

    def __init__(self, config: ClusterConfig, broker_id: int, now_ms: int) -> None:
        self.config = config
        self.entry = config.broker(broker_id)
        self.broker_id = broker_id
        self.logs = LogManager(self.entry.data_dir, config.setting("max_open_files"))
        self.store = LocalMetadataStore(self.entry.data_dir)
        self.image: MetadataImage = self.store.load()
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.purgatory = Purgatory()
        self.outbox: list[tuple[bytes, Frames]] = []
        self._last_checkpoint_ms = now_ms
        self._handlers: dict[str, Handler] = {
            P.METADATA: self._metadata,
            P.CREATE_TOPIC: self._create_topic,
            P.DELETE_TOPIC: self._delete_topic,
            P.DESCRIBE_TOPIC: self._describe_topic,
            P.ALTER_TOPIC_CONFIG: self._alter_topic_config,
            P.PRODUCE: self._produce,
            P.FETCH: self._fetch,
            P.LIST_OFFSETS: self._list_offsets,
        }
        for topic in self.image.topics.values():
            self._open_topic(topic, now_ms)
        known = set(self.partitions)
        for stray in self.logs.stray_dirs(known):
            log.warning("data dir holds %s, which belongs to no known topic; leaving it alone", stray)
        log.info("broker %s loaded topics=%d partitions=%d", broker_id, len(self.image.topics), len(self.partitions))

    # -- lifecycle ---------------------------------------------------------------

    def _open_topic(self, topic: TopicMeta, now_ms: int) -> None:
        cfg = log_config(self.config.topic_settings(topic.overrides))
        for pm in topic.partitions:
            tp = (topic.name, pm.partition)
            lg = self.logs.open(tp, cfg, now_ms)
            part = Partition(topic.name, pm.partition, lg, self.broker_id, pm.leader_epoch, list(pm.isr))
            # Single node: every acknowledged append is on the only replica.
            part.high_watermark = lg.log_start_offset
            part.update_high_watermark()
            self.partitions[tp] = part
            self.logs.high_watermarks[tp] = part.high_watermark

    def tick(self, now_ms: int) -> None:
        """Timers: expire parked requests, apply the time-based flush policy, checkpoint."""
        self.purgatory.expire(now_ms)
        if now_ms - self._last_checkpoint_ms >= self.config.setting("flush_check_ms"):
            self._last_checkpoint_ms = now_ms
            self.logs.maybe_flush(now_ms)
            self.logs.checkpoint()

    def next_timer_ms(self, now_ms: int) -> int:
        """Milliseconds until :meth:`tick` has work."""
        due = self._last_checkpoint_ms + self.config.setting("flush_check_ms")
        deadline = self.purgatory.next_deadline()
        if deadline is not None:
            due = min(due, deadline)
        return max(0, due - now_ms)

    def close(self) -> None:
        """Answer parked requests, flush every log and write checkpoints."""
        self.purgatory.cancel_all()
        self.logs.close()
        log.info("broker %s closed cleanly", self.broker_id)

    # -- dispatch ----------------------------------------------------------------

    def handle(self, peer: bytes, frames: Frames, now_ms: int) -> None:
        """Handle one received message; responses land in :attr:`outbox`."""
        try:
            header = P.decode_header(frames[0], self.config.setting("max_request_bytes"))
        except P.UndecodableFrame as exc:
            log.warning("dropped a message from peer=%s: %s", peer.hex(), exc)
            return
        cid = header["cid"]
        kind = header.get("type")
        reply_type = kind if isinstance(kind, str) else "error"
        try:
            kind, fields = P.decode_request(header)
            body = self._handlers[kind](peer, header, fields, frames, now_ms)
        except P.RequestError as exc:
            log.warning("bad request from peer=%s type=%r cid=%s: %s", peer.hex(), kind, cid, exc.message)
            body = P.response(reply_type, cid, exc.code, exc.message)
        except Exception as exc:  # a bug must not stop the broker
            log.exception("error handling type=%r cid=%s", kind, cid)
            body = P.response(reply_type, cid, ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}")
        if body is not None:
            self.outbox.append((peer, [P.encode(body)]))

    def _reply(self, peer: bytes, body: dict, payloads: Frames) -> None:
        self.outbox.append((peer, [P.encode(body), *payloads]))

    # -- metadata and admin ------------------------------------------------------

    def _partition_meta(self, topic: TopicMeta) -> list[dict[str, Any]]:
        return [
            {
                "partition": pm.partition,
                "error": 0,
                "leader": pm.leader,
                "replicas": pm.replicas,
                "isr": pm.isr,
                "leader_epoch": pm.leader_epoch,
            }
            for pm in topic.partitions
        ]

    def _metadata(self, peer, header, fields, frames, now_ms):
        names = fields["topics"]
        if names is None:
            names = list(self.image.topics)
        topics = []
        for name in names:
            topic = self.image.get(name)
            if topic is None and fields["allow_auto_create"] and self.config.setting("auto_create_topics"):
                if topic_name_problem(name) is None:
                    topic = self._do_create(name, None, None, {}, now_ms)
                    log.info("auto-created topic=%s partitions=%d", name, topic.partition_count)
            if topic is None:
                error = ErrorCode.INVALID_TOPIC_EXCEPTION if topic_name_problem(name, True) else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                topics.append({"topic": name, "error": int(error), "internal": False, "partitions": []})
            else:
                topics.append({"topic": name, "error": 0, "internal": topic.internal, "partitions": self._partition_meta(topic)})
        e = self.entry
        return P.response(
            P.METADATA,
            header["cid"],
            cluster_name=self.config.name,
            controller=self.broker_id,
            controller_epoch=0,
            brokers=[{"id": e.id, "host": e.host, "port": e.port, "alive": True}],
            topics=topics,
        )

    def _do_create(self, name: str, partitions: int | None, rf: int | None, overrides: dict, now_ms: int) -> TopicMeta:
        count = partitions if partitions is not None else self.config.default_partitions()
        parts = [PartitionMeta(i, [self.broker_id], self.broker_id, 0, [self.broker_id]) for i in range(count)]
        topic = TopicMeta(name, parts, overrides)
        self.image.add(topic)
        self._open_topic(topic, now_ms)
        self.store.save(self.image)
        return topic

    def _create_topic(self, peer, header, fields, frames, now_ms):
        name = fields["topic"]
        problem = topic_name_problem(name)
        if problem:
            raise P.RequestError(ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
        if self.image.get(name) is not None:
            raise P.RequestError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        partitions = fields["partitions"]
        if partitions is not None and not 1 <= partitions <= 100_000:
            raise P.RequestError(ErrorCode.INVALID_PARTITIONS, f"partitions must be from 1 to 100000, got {partitions}")
        rf = fields["replication_factor"]
        live = len(self.config.brokers)
        if rf is not None and not 1 <= rf <= live:
            raise P.RequestError(
                ErrorCode.INVALID_REPLICATION_FACTOR, f"replication factor {rf} must be from 1 to the {live} broker(s) available"
            )
        overrides = self._checked_overrides(fields["config"])
        if not fields["validate_only"]:
            topic = self._do_create(name, partitions, rf, overrides, now_ms)
            log.info("created topic=%s partitions=%d overrides=%s", name, topic.partition_count, overrides)
        return P.response(P.CREATE_TOPIC, header["cid"])

    @staticmethod
    def _checked_overrides(config: dict) -> dict:
        try:
            return validate_topic_config(config)
        except ConfigError as exc:
            raise P.RequestError(ErrorCode.INVALID_CONFIG, str(exc)) from None

    def _known_topic(self, name: str) -> TopicMeta:
        topic = self.image.get(name)
        if topic is None:
            raise P.RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        return topic

    def _delete_topic(self, peer, header, fields, frames, now_ms):
        topic = self._known_topic(fields["topic"])
        for pm in topic.partitions:
            tp = (topic.name, pm.partition)
            self.partitions.pop(tp, None)
            self.logs.delete(tp)
        self.image.remove(topic.name)
        self.store.save(self.image)
        log.info("deleted topic=%s", topic.name)
        return P.response(P.DELETE_TOPIC, header["cid"])

    def _describe_topic(self, peer, header, fields, frames, now_ms):
        topic = self._known_topic(fields["topic"])
        parts = self._partition_meta(topic)
        for entry in parts:
            part = self.partitions[(topic.name, entry["partition"])]
            entry["log_start_offset"] = part.log.log_start_offset
            entry["high_watermark"] = part.high_watermark
            entry["log_end_offset"] = part.log.log_end_offset
        return P.response(
            P.DESCRIBE_TOPIC,
            header["cid"],
            topic=topic.name,
            internal=topic.internal,
            config=self.config.topic_settings(topic.overrides),
            overrides=sorted(topic.overrides),
            partitions=parts,
        )

    def _alter_topic_config(self, peer, header, fields, frames, now_ms):
        topic = self._known_topic(fields["topic"])
        removals = [k for k, v in fields["config"].items() if v is None]
        changes = self._checked_overrides({k: v for k, v in fields["config"].items() if v is not None})
        for key in removals:
            if key not in TOPIC_CONFIG:
                raise P.RequestError(ErrorCode.INVALID_CONFIG, f"{key}: unknown topic setting")
            topic.overrides.pop(key, None)
        topic.overrides.update(changes)
        self.store.save(self.image)
        cfg = log_config(self.config.topic_settings(topic.overrides))
        for pm in topic.partitions:
            self.partitions[(topic.name, pm.partition)].log.config = cfg
        log.info("altered topic=%s set=%s removed=%s", topic.name, changes, removals)
        return P.response(P.ALTER_TOPIC_CONFIG, header["cid"])

    # -- data path ---------------------------------------------------------------

    def _leader_partition(self, topic: str, index: int) -> Partition:
        part = self.partitions.get((topic, index))
        if part is None:
            raise P.RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic or partition {topic}-{index}")
        return part

    def _produce(self, peer, header, fields, frames, now_ms):
        acks = fields["acks"]
        if acks not in (0, 1, P.ACKS_ALL):
            raise P.RequestError(ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, got {acks}")
        batches = fields["batches"]
        if len(batches) != len(frames) - 1:
            raise P.RequestError(
                ErrorCode.INVALID_REQUEST, f"'batches' lists {len(batches)} batches but {len(frames) - 1} payload frames came"
            )
        results = []
        for spec, frame in zip(batches, frames[1:]):
            results.append(self._append_one(spec["topic"], spec["partition"], frame, acks, now_ms))
        if acks == 0:
            return None
        return P.response(P.PRODUCE, header["cid"], results=results)

    def _append_one(self, topic: str, index: int, batch: bytes, acks: int, now_ms: int) -> dict:
        result = {"topic": topic, "partition": index, "error": 0, "base_offset": -1, "log_append_time": -1, "log_start_offset": -1}
        try:
            part = self._leader_partition(topic, index)
            max_bytes = part.log.config.max_message_bytes
            if len(batch) > max_bytes:
                raise P.RequestError(
                    ErrorCode.MESSAGE_TOO_LARGE, f"batch of {len(batch)} bytes exceeds max_message_bytes={max_bytes} of {topic}"
                )
            if len(batch) >= 23 and parse_header(batch).attributes & COMPRESSION_MASK == COMPRESSION_SNAPPY:
                raise P.RequestError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, "snappy compression is not supported")
            if acks == P.ACKS_ALL:
                min_isr = self.config.topic_settings(self.image.get(topic).overrides)["min_insync_replicas"]
                if len(part.isr) < min_isr:
                    raise P.RequestError(
                        ErrorCode.NOT_ENOUGH_REPLICAS, f"{topic}-{index} has {len(part.isr)} in-sync replicas, min_insync_replicas={min_isr}"
                    )
            info = part.log.append(batch, now_ms, leader_epoch=part.leader_epoch)
        except P.RequestError as exc:
            result.update(error=int(exc.code), error_message=exc.message)
            return result
        except CorruptBatchError as exc:
            log.warning("rejected corrupt batch for %s-%s: %s", topic, index, exc)
            result.update(error=int(ErrorCode.CORRUPT_MESSAGE), error_message=str(exc))
            return result
        except OSError as exc:
            log.error("storage error appending to %s-%s: %s", topic, index, exc)
            result.update(error=int(ErrorCode.KAFKA_STORAGE_ERROR), error_message=str(exc))
            return result
        if part.update_high_watermark():
            self.logs.high_watermarks[part.tp] = part.high_watermark
        self.purgatory.check(part.tp)
        result.update(base_offset=info.base_offset, log_start_offset=part.log.log_start_offset)
        return result

    def _read_partitions(self, fields: dict) -> tuple[list[dict], Frames, int, bool]:
        """Read every requested partition; returns (entries, payloads, bytes, any_error)."""
        entries, payloads = [], []
        budget = fields["max_bytes"]
        total, errors = 0, False
        for spec in fields["partitions"]:
            topic, index, offset = spec["topic"], spec["partition"], spec["offset"]
            entry = {"topic": topic, "partition": index, "error": 0, "high_watermark": -1, "log_start_offset": -1}
            data = b""
            part = self.partitions.get((topic, index))
            if part is None:
                entry["error"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            else:
                lg = part.log
                entry["high_watermark"] = part.high_watermark
                entry["log_start_offset"] = lg.log_start_offset
                if offset < lg.log_start_offset or offset > lg.log_end_offset:
                    entry["error"] = int(ErrorCode.OFFSET_OUT_OF_RANGE)
                elif offset < part.high_watermark and budget > 0:
                    try:
                        res = lg.read(offset, min(spec["max_bytes"], budget), max_offset=part.high_watermark)
                        data = res.data
                    except OffsetOutOfRange:  # retention raced the check above
                        entry["error"] = int(ErrorCode.OFFSET_OUT_OF_RANGE)
            errors = errors or entry["error"] != 0
            total += len(data)
            budget -= len(data)
            entries.append(entry)
            payloads.append(data)
        return entries, payloads, total, errors

    def _fetch(self, peer, header, fields, frames, now_ms):
        cid = header["cid"]
        keys = [(s["topic"], s["partition"]) for s in fields["partitions"]]

        def respond(entries, payloads) -> None:
            self._reply(peer, P.response(P.FETCH, cid, partitions=entries), payloads)

        entries, payloads, total, errors = self._read_partitions(fields)
        if total >= fields["min_bytes"] or errors or fields["max_wait_ms"] <= 0 or not keys:
            respond(entries, payloads)
            return None

        def try_complete() -> bool:
            entries, payloads, total, errors = self._read_partitions(fields)
            if total >= fields["min_bytes"] or errors:
                respond(entries, payloads)
                return True
            return False

        def on_expire() -> None:
            respond(*self._read_partitions(fields)[:2])

        op = DelayedOperation(now_ms + fields["max_wait_ms"], keys, try_complete, on_expire)
        self.purgatory.park(op)
        return None

    def _list_offsets(self, peer, header, fields, frames, now_ms):
        results = []
        for spec in fields["partitions"]:
            topic, index, ts = spec["topic"], spec["partition"], spec["timestamp"]
            entry = {"topic": topic, "partition": index, "error": 0, "offset": -1, "timestamp": -1}
            part = self.partitions.get((topic, index))
            if part is None:
                entry["error"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            elif ts == P.LATEST_TIMESTAMP:
                entry["offset"] = part.high_watermark
            elif ts == P.EARLIEST_TIMESTAMP:
                entry["offset"] = part.log.log_start_offset
            else:
                found = part.log.offset_for_timestamp(ts)
                if found is not None and found[0] < part.high_watermark:
                    entry["offset"], entry["timestamp"] = found
            results.append(entry)
        return P.response(P.LIST_OFFSETS, header["cid"], partitions=results)

