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

Cluster state comes from the control plane (:mod:`zbroker.controlplane`): every
committed metadata record is applied to the image, then :meth:`Broker._reconcile`
opens the logs of partitions this broker holds a replica of, records their
leader epochs, and removes those of deleted topics.  Produce and fetch go to the
partition's leader only (NOT_LEADER_OR_FOLLOWER elsewhere, LEADER_NOT_AVAILABLE
while it has none).  Raft messages from peers are handed to the control plane;
messages for peers land in :attr:`Broker.peer_outbox` as ``(broker_id, header, payloads)``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import msgpack

from storage import CorruptBatchError, OffsetOutOfRange, parse_header
from storage.batch import COMPRESSION_MASK, COMPRESSION_SNAPPY
from zbroker import protocol as P
from zbroker.config import ClusterConfig
from zbroker.controlplane import ControlPlane
from zbroker.errors import ErrorCode
from zbroker.logmanager import LogManager, log_config
from zbroker.metadata import TopicMeta, topic_name_problem
from zbroker.partition import Partition
from zbroker.purgatory import DelayedOperation, Purgatory
from zbroker.topicadmin import META_KEY, TopicAdmin

log = logging.getLogger(__name__)

Frames = list[bytes]
Handler = Callable[[bytes, dict, dict, Frames, int], "dict | None"]


class Broker(TopicAdmin):
    """One broker's state and request handlers."""

    def __init__(self, config: ClusterConfig, broker_id: int, now_ms: int, clock=None) -> None:
        self.config = config
        self.entry = config.broker(broker_id)
        self.broker_id = broker_id
        self.logs = LogManager(self.entry.data_dir, config.setting("max_open_files"))
        self.control = ControlPlane(config, broker_id, self.logs.handles, now_ms, clock or (lambda: now_ms))
        self.image = self.control.image
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.purgatory = Purgatory()
        self.outbox: list[tuple[bytes, Frames]] = []
        self.peer_outbox: list[tuple[int, dict, Frames]] = []
        self._pending_topics: dict[str, int] = {}  # topic -> metadata offset its create/delete commits at
        self._forwards: dict[int, tuple[bytes, int, str, int]] = {}
        self._forward_seq = 0
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
            P.CREATE_PARTITIONS: self._create_partitions,
        }
        for kind in P.RAFT_SCHEMAS:
            self._handlers[kind] = self._raft_message
        self._reconcile(now_ms)
        for stray in self.logs.stray_dirs(set(self.partitions)):
            log.warning("data dir holds %s, which belongs to no known partition of this broker; leaving it alone", stray)
        log.info("broker %s loaded topics=%d partitions=%d", broker_id, len(self.image.topics), len(self.partitions))

    # -- lifecycle ---------------------------------------------------------------

    def _reconcile(self, now_ms: int) -> None:
        """Make local partitions match the image: open, update, remove."""
        wanted = set()
        for topic in self.image.topics.values():
            cfg = None
            for pm in topic.partitions:
                if self.broker_id not in pm.replicas:
                    continue
                tp = (topic.name, pm.partition)
                wanted.add(tp)
                part = self.partitions.get(tp)
                if part is None:
                    cfg = cfg or log_config(self.config.topic_settings(topic.overrides))
                    lg = self.logs.open(tp, cfg, now_ms)
                    part = Partition(topic.name, pm.partition, lg, self.broker_id)
                    part.high_watermark = lg.log_start_offset
                    self.partitions[tp] = part
                    if pm.leader == self.broker_id:
                        part.high_watermark = self.logs.high_watermarks.get(tp, lg.log_start_offset)
                elif cfg is None and part.log.config != log_config(self.config.topic_settings(topic.overrides)):
                    cfg = log_config(self.config.topic_settings(topic.overrides))
                if cfg is not None:
                    part.log.config = cfg
                if (part.leader, part.leader_epoch) != (pm.leader, pm.leader_epoch):
                    log.info("partition %s-%s leader=%s epoch=%s%s", tp[0], tp[1], pm.leader, pm.leader_epoch,
                             " (this broker)" if pm.leader == self.broker_id else "")
                part.leader, part.leader_epoch, part.isr = pm.leader, pm.leader_epoch, list(pm.isr)
                if part.leader == self.broker_id and part.update_high_watermark():
                    self.logs.high_watermarks[tp] = part.high_watermark
        for tp in [tp for tp in self.partitions if tp not in wanted]:
            del self.partitions[tp]
            log.info("removing partition %s-%s from this broker", *tp)
            self.logs.delete(tp)
        applied = self.control.applied
        for name, end in list(self._pending_topics.items()):
            if end <= applied or not self.control.is_controller:
                del self._pending_topics[name]

    def _raft_message(self, peer, header, fields, frames, now_ms):
        self.control.on_raft_message({**fields, "type": header["type"]}, frames[1] if len(frames) > 1 else None, now_ms)
        self._drain_control(now_ms)
        return None  # one-way: never answered

    def on_heartbeat(self, frame: bytes, now_ms: int) -> None:
        """A gossip heartbeat from the SUB socket (garbage is ignored: beats may be lost anyway)."""
        try:
            hb = msgpack.unpackb(frame, raw=False)
        except Exception:
            return
        if isinstance(hb, dict):
            self.control.on_heartbeat(hb, now_ms)
            self._drain_control(now_ms)

    def heartbeat(self) -> bytes:
        return msgpack.packb(self.control.heartbeat(), use_bin_type=True)

    def _drain_control(self, now_ms: int) -> None:
        for dst, fields, payload in self.control.peer_outbox:
            self.peer_outbox.append((dst, {"v": P.PROTOCOL_VERSION, "cid": 0, **fields}, [payload] if payload else []))
        self.control.peer_outbox.clear()
        applied = self.control.apply_committed()
        if applied:
            self._reconcile(now_ms)
            self.purgatory.check(META_KEY)

    def tick(self, now_ms: int) -> None:
        """Timers: Raft and controller duties, parked requests, flush policy, checkpoints."""
        applied = self.control.step(now_ms)
        self._drain_control(now_ms)
        if applied:
            self._reconcile(now_ms)
            self.purgatory.check(META_KEY)
        self.purgatory.check(META_KEY)  # controller changes fail pending admin requests
        self.purgatory.expire(now_ms)
        self._expire_forwards(now_ms)
        if now_ms - self._last_checkpoint_ms >= self.config.setting("flush_check_ms"):
            self._last_checkpoint_ms = now_ms
            self.logs.maybe_flush(now_ms)
            self.logs.checkpoint()

    def next_timer_ms(self, now_ms: int) -> int:
        """Milliseconds until :meth:`tick` has work."""
        due = min(self._last_checkpoint_ms + self.config.setting("flush_check_ms"), self.control.next_deadline())
        deadline = self.purgatory.next_deadline()
        if deadline is not None:
            due = min(due, deadline)
        if self._forwards:
            due = min(due, min(f[3] for f in self._forwards.values()))
        return max(0, due - now_ms)

    def close(self) -> None:
        """Answer parked requests, flush every log and write checkpoints."""
        self.purgatory.cancel_all()
        self.logs.close()
        self.control.close()
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
                self._auto_create(name, now_ms)
                topic = self.image.get(name)
                if topic is None and topic_name_problem(name) is None:
                    topics.append({"topic": name, "error": int(ErrorCode.LEADER_NOT_AVAILABLE), "internal": False, "partitions": []})
                    continue
            if topic is None:
                error = ErrorCode.INVALID_TOPIC_EXCEPTION if topic_name_problem(name, True) else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                topics.append({"topic": name, "error": int(error), "internal": False, "partitions": []})
            else:
                topics.append({"topic": name, "error": 0, "internal": topic.internal, "partitions": self._partition_meta(topic)})
        live = self.control.live_brokers(now_ms)
        brokers = [{"id": b.id, "host": b.host, "port": b.port, "alive": b.id in live} for b in self.config.brokers]
        return P.response(
            P.METADATA,
            header["cid"],
            cluster_name=self.config.name,
            controller=self.control.controller,
            controller_epoch=self.control.epoch,
            brokers=brokers,
            topics=topics,
        )

    def _partition_meta(self, topic: TopicMeta) -> list[dict[str, Any]]:
        return [
            {
                "partition": pm.partition,
                "error": int(ErrorCode.LEADER_NOT_AVAILABLE) if pm.leader < 0 else 0,
                "leader": pm.leader,
                "replicas": pm.replicas,
                "isr": pm.isr,
                "leader_epoch": pm.leader_epoch,
            }
            for pm in topic.partitions
        ]

    def _describe_topic(self, peer, header, fields, frames, now_ms):
        topic = self._known_topic(fields["topic"])
        parts = self._partition_meta(topic)
        for entry in parts:
            part = self.partitions.get((topic.name, entry["partition"]))
            known = part is not None and part.leader == self.broker_id
            entry["log_start_offset"] = part.log.log_start_offset if known else -1
            entry["high_watermark"] = part.high_watermark if known else -1
            entry["log_end_offset"] = part.log.log_end_offset if known else -1
        return P.response(
            P.DESCRIBE_TOPIC,
            header["cid"],
            topic=topic.name,
            internal=topic.internal,
            config=self.config.topic_settings(topic.overrides),
            overrides=sorted(topic.overrides),
            partitions=parts,
        )

    def _create_partitions(self, peer, header, fields, frames, now_ms):
        raise P.RequestError(ErrorCode.INVALID_REQUEST, "adding partitions to a topic is not supported yet")

    # -- data path ---------------------------------------------------------------

    def _leader_partition(self, topic: str, index: int) -> Partition:
        part = self.partitions.get((topic, index))
        if part is not None and part.leader == self.broker_id:
            return part
        pm = self.image.partition(topic, index)
        if pm is None:
            raise P.RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic or partition {topic}-{index}")
        if pm.leader < 0:
            raise P.RequestError(ErrorCode.LEADER_NOT_AVAILABLE, f"{topic}-{index} has no leader right now")
        raise P.RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {self.broker_id} does not lead {topic}-{index} (broker {pm.leader} does)")

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
            try:
                part = self._leader_partition(topic, index)
            except P.RequestError as exc:
                entry["error"] = int(exc.code)
                part = None
            if part is not None:
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
            try:
                part = self._leader_partition(topic, index)
            except P.RequestError as exc:
                entry["error"] = int(exc.code)
                part = None
            if part is None:
                pass
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

