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

from zbroker import protocol as P
from zbroker.config import ClusterConfig
from zbroker.controlplane import ControlPlane
from zbroker.errors import ErrorCode
from zbroker.logmanager import LogManager, log_config
from zbroker.metadata import PARTITION_CHANGE_RECORD, TopicMeta, topic_name_problem
from zbroker.partition import Partition
from zbroker.purgatory import Purgatory
from zbroker.coordinator import GroupCoordinator
from zbroker.datapath import DataPath
from zbroker.housekeeping import Housekeeping
from zbroker.producer_state import ProducerStateMixin
from zbroker.replication import ReplicaFetcher
from zbroker.topicadmin import META_KEY, TopicAdmin

log = logging.getLogger(__name__)

Frames = list[bytes]
REPLICATION_CHECK_MS = 50  # how often the timer looks for fetches to send and ISR changes to propose
OPENS_PER_TURN = 16  # partitions opened per loop turn (about 25 ms): see Broker._open_pending
OPEN_RETRY_MS = 5000  # a partition whose files could not be opened is tried again this much later
PURGES_PER_TURN = 16  # directories of deleted partitions removed per loop turn (about 6 ms)
MAX_AUTO_CREATES_PER_REQUEST = 10  # creating topics costs the loop time; a producer asks for a few
Handler = Callable[[bytes, dict, dict, Frames, int], "dict | None"]


class Broker(TopicAdmin, DataPath, ProducerStateMixin, GroupCoordinator, Housekeeping):
    """One broker's state and request handlers."""

    def __init__(self, config: ClusterConfig, broker_id: int, now_ms: int, clock=None) -> None:
        self.config = config
        self.entry = config.broker(broker_id)
        self.broker_id = broker_id
        self.logs = LogManager(self.entry.data_dir, config.setting("max_open_files"))
        self.control = ControlPlane(config, broker_id, self.logs.handles, now_ms, clock or (lambda: now_ms))
        self.image = self.control.image
        self.partitions: dict[tuple[str, int], Partition] = {}
        self._opening: dict[tuple[str, int], None] = {}  # in the image, to be opened (ordered set)
        self._open_failed: dict[tuple[str, int], int] = {}  # could not be opened -> when to try again
        self._opens_left = OPENS_PER_TURN  # of this loop turn (reset by tick)
        self.purgatory = Purgatory()
        self.outbox: list[tuple[bytes, Frames]] = []
        self.peer_outbox: list[tuple[int, dict, Frames]] = []
        self._pending_topics: dict[str, int] = {}  # topic -> metadata offset its create/delete commits at
        self._forwards: dict[int, tuple[bytes, int, str, int]] = {}
        self._forward_seq = 0
        self._clock = clock or (lambda: now_ms)
        self.fetcher = ReplicaFetcher(broker_id)
        self._pid_reserved = 0  # producer ids handed out by this controller, committed or not
        self.groups: dict = {}  # group -> zbroker.groups.Group, for the groups this broker coordinates
        self.group_offsets: dict = {}  # group -> {(topic, partition): (offset, metadata)}
        self._group_index: dict[str, int] = {}  # group -> its __consumer_offsets partition
        self._loaded_offsets: set[int] = set()  # __consumer_offsets partitions whose groups are loaded
        self._last_checkpoint_ms = now_ms
        self._next_replication_ms = now_ms
        self._init_housekeeping(now_ms)
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
            P.ALTER_ISR: self._alter_isr,
            P.INIT_PRODUCER_ID: self._init_producer_id,
            P.FIND_COORDINATOR: self._find_coordinator,
            P.GROUP_HEARTBEAT: self._group_heartbeat,
            P.OFFSET_COMMIT: self._offset_commit,
            P.OFFSET_FETCH: self._offset_fetch,
            P.LIST_GROUPS: self._list_groups,
            P.DESCRIBE_GROUP: self._describe_group,
            P.DELETE_GROUP: self._delete_group,
            P.CREATE_INTERNAL_TOPIC: self._create_internal_topic,
        }
        for kind in P.RAFT_SCHEMAS:
            self._handlers[kind] = self._raft_message
        self._reconcile(now_ms)
        self._open_pending(now_ms, everything=True)  # at start, everything before serving
        for stray in self.logs.stray_dirs(set(self.partitions)):
            log.warning("data dir holds %s, which belongs to no known partition of this broker; leaving it alone", stray)
        log.info("broker %s loaded topics=%d partitions=%d", broker_id, len(self.image.topics), len(self.partitions))

    # -- lifecycle ---------------------------------------------------------------

    def _reconcile(self, now_ms: int) -> None:
        """Make local partitions match the image: update roles, queue new ones for opening
        (:meth:`_open_pending`), remove the ones this broker no longer holds."""
        wanted = set()
        for topic in self.image.topics.values():
            cfg = None
            for pm in topic.partitions:
                if self.broker_id not in pm.replicas:
                    continue
                tp = (topic.name, pm.partition)
                wanted.add(tp)
                part = self.partitions.get(tp)
                if part is not None and part.topic_id != topic.topic_id:
                    # deleted and created again within one metadata step: another topic
                    self._drop_partition(tp)
                    part = None
                if part is None:
                    if tp not in self._open_failed:
                        self._opening.setdefault(tp, None)
                    continue
                cfg = cfg or log_config(self.config.topic_settings(topic.overrides))
                self._sync_partition(part, pm, cfg, now_ms)
        for tp in [tp for tp in (*self._opening, *self._open_failed) if tp not in wanted]:
            self._opening.pop(tp, None)
            self._open_failed.pop(tp, None)
            self.purgatory.check(tp)  # fetches parked on it learn it is gone
        for tp in [tp for tp in self.partitions if tp not in wanted]:
            log.info("removing partition %s-%s from this broker", *tp)
            self._drop_partition(tp)
        self._open_pending(now_ms)
        applied = self.control.applied
        for name, end in list(self._pending_topics.items()):
            if end <= applied or not self.control.is_controller:
                del self._pending_topics[name]
        if self.control.ready:
            self._sync_coordination(now_ms)

    def _drop_partition(self, tp: tuple[str, int]) -> None:
        """Close and delete a local partition (its files go in the background)."""
        del self.partitions[tp]
        self._forget_housekeeping(tp)
        self.logs.delete(tp)
        self.purgatory.check(tp)
        self.fetcher.forget(tp)

    def _open_pending(self, now_ms: int, everything: bool = False) -> None:
        """Open (create or recover) queued partitions: what is left of this turn's
        ``OPENS_PER_TURN``, or all of them.

        Opening costs file creations and fsyncs (about 1.5 ms a partition on the reference
        machine), so a topic of thousands of partitions is opened over many loop turns:
        heartbeats, Raft and requests go on meanwhile, and a queued partition answers
        LEADER_NOT_AVAILABLE (retriable) until it is open.
        """
        for tp, retry_at in list(self._open_failed.items()):
            if retry_at <= now_ms:
                del self._open_failed[tp]
                self._opening.setdefault(tp, None)
        while self._opening and (everything or self._opens_left > 0):
            tp = next(iter(self._opening))
            del self._opening[tp]
            topic = self.image.get(tp[0])
            pm = self.image.partition(*tp)
            if topic is None or pm is None or self.broker_id not in pm.replicas or tp in self.partitions:
                self.purgatory.check(tp)
                continue
            cfg = log_config(self.config.topic_settings(topic.overrides))
            self._opens_left -= 1
            try:
                lg = self.logs.open(tp, cfg, now_ms, topic.topic_id)
            except Exception:  # a disk problem: serve the rest, try this one again later
                log.exception("cannot open partition %s-%s; trying again in %d ms", *tp, OPEN_RETRY_MS)
                self._open_failed[tp] = now_ms + OPEN_RETRY_MS
                self.purgatory.check(tp)
                continue
            part = Partition(topic.name, pm.partition, lg, self.broker_id, topic_id=topic.topic_id)
            part.high_watermark = min(max(self.logs.high_watermarks.get(tp, 0), lg.log_start_offset), lg.log_end_offset)
            self.partitions[tp] = part
            self._sync_partition(part, pm, cfg, now_ms)

    def _sync_partition(self, part: Partition, pm, cfg, now_ms: int) -> None:
        """Bring one open partition in line with its metadata: settings, leader, ISR."""
        if part.log.config != cfg:
            part.log.config = cfg
        before = (part.leader, part.leader_epoch)
        part.apply_metadata(pm.leader, pm.leader_epoch, pm.replicas, pm.isr, now_ms)
        if before != (pm.leader, pm.leader_epoch):
            log.info("partition %s-%s leader=%s epoch=%s isr=%s%s", part.topic, part.index, pm.leader, pm.leader_epoch, pm.isr,
                     " (this broker)" if pm.leader == self.broker_id else "")
            self.purgatory.check(part.tp)  # parked requests of a partition that changed hands
        if part.is_leader and part.update_high_watermark():
            self._hw_moved(part)

    def _now(self) -> int:
        return self._clock()

    # -- replication -------------------------------------------------------------

    def _replication_step(self, now_ms: int) -> None:
        """From the timer: follower fetches and ISR changes, each at most every
        ``REPLICATION_CHECK_MS`` (both walk every partition: not on every loop turn)."""
        if now_ms < self._next_replication_ms:
            return
        self._next_replication_ms = now_ms + REPLICATION_CHECK_MS
        self._send_replica_fetches(now_ms)
        self._check_isr(now_ms)

    def _send_replica_fetches(self, now_ms: int) -> None:
        """Follower fetches to every leader that has none in flight (or a partition not covered)."""
        if not self.control.ready:
            return  # see ControlPlane.ready
        live = self.control.live_brokers(now_ms)
        for leader, header in self.fetcher.requests(self.partitions, live, now_ms):
            self.peer_outbox.append((leader, header, []))

    def _check_isr(self, now_ms: int) -> None:
        """As a leader: propose ISR changes (followers lagging, or caught up again)."""
        if not self.control.ready:
            return
        live = self.control.live_brokers(now_ms)
        lag = self.config.setting("replica_lag_ms")
        for part in self.partitions.values():
            if not part.is_leader:
                continue
            if part.pending_isr is not None and now_ms - part.pending_since_ms > 5_000:
                part.pending_isr = None  # lost or refused: think again
            proposal = part.isr_proposal(now_ms, lag, live)
            if proposal is None:
                continue
            log.info("partition %s-%s proposes isr %s (was %s)", part.topic, part.index, proposal, part.isr)
            part.pending_isr, part.pending_since_ms = proposal, now_ms
            if part.update_high_watermark():
                self._hw_moved(part)
            fields = {"topic": part.topic, "partition": part.index, "leader": self.broker_id,
                      "leader_epoch": part.leader_epoch, "isr": proposal}
            if self.control.is_controller:
                self._commit_isr(fields)
            elif self.control.controller >= 0:
                self._forward_seq += 1
                self.peer_outbox.append((self.control.controller, P.request(P.ALTER_ISR, -self._forward_seq, **fields), []))

    def _commit_isr(self, fields: dict) -> None:
        """As the controller: commit a leader's ISR change if it still leads in that epoch."""
        pm = self.image.partition(fields["topic"], fields["partition"])
        if pm is None or (pm.leader, pm.leader_epoch) != (fields["leader"], fields["leader_epoch"]):
            raise P.RequestError(ErrorCode.FENCED_LEADER_EPOCH, "not the leader of that partition in that epoch")
        isr = [r for r in pm.replicas if r in fields["isr"]]
        if pm.leader not in isr:
            raise P.RequestError(ErrorCode.INVALID_REQUEST, "the ISR must hold the leader")
        if isr != pm.isr:
            self.control.propose([{"type": PARTITION_CHANGE_RECORD, "topic": fields["topic"], "partition": fields["partition"],
                                   "leader": pm.leader, "leader_epoch": pm.leader_epoch, "isr": isr}])

    def _alter_isr(self, peer, header, fields, frames, now_ms):
        if not self.control.is_controller:
            raise P.RequestError(ErrorCode.NOT_CONTROLLER, "not the controller")
        self._commit_isr(fields)
        self._drain_control(now_ms)
        return P.response(P.ALTER_ISR, header["cid"])

    def on_peer_reply(self, frames: list[bytes], now_ms: int) -> None:
        """A response on one of our DEALERs: a follower fetch, an ISR change, or a forwarded request."""
        try:
            header = P.decode_header(frames[0])
        except P.UndecodableFrame as exc:
            log.warning("dropped an undecodable reply from a peer: %s", exc)
            return
        cid = header["cid"]
        if header.get("type") == P.FETCH and self.fetcher.owns(cid):
            for tp in self.fetcher.on_response(header, frames[1:], self.partitions, now_ms, self._producer_appended):
                self.logs.high_watermarks[tp] = self.partitions[tp].high_watermark
            self._send_replica_fetches(now_ms)  # fetch again at once: the leader long-polls
        elif cid < 0:
            if header.get("error"):
                log.info("ISR change refused: %s", header.get("error_message"))
        else:
            self._forward_reply(header, frames)

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
        """Timers: Raft and controller duties, replication, parked requests, flush policy, checkpoints."""
        self._opens_left = OPENS_PER_TURN
        applied = self.control.step(now_ms)
        self._drain_control(now_ms)
        if applied:
            self._reconcile(now_ms)
        elif self._opening or self._open_failed:
            self._open_pending(now_ms)
        self.purgatory.check(META_KEY)  # also: controller changes fail pending admin requests
        self._replication_step(now_ms)
        if self.control.ready:
            self._sync_coordination(now_ms)
            self._expire_members(now_ms)
            self._housekeeping(now_ms)
        self.logs.purge_deleted(PURGES_PER_TURN)
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
        if self.partitions:
            due = min(due, self._next_replication_ms)
        due = min(due, self._next_pass_ms if not self._pass else now_ms + 10)
        if self._opening:
            due = now_ms
        if self._open_failed:
            due = min(due, min(self._open_failed.values()))
        if self.logs.trash:
            due = min(due, now_ms + 10)
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
            self._check_sender(peer, kind, fields)
            body = self._handlers[kind](peer, header, fields, frames, now_ms)
        except P.RequestError as exc:
            log.warning("bad request from peer=%s type=%r cid=%s: %s", peer.hex(), kind, cid, exc.message)
            body = P.response(reply_type, cid, exc.code, exc.message)
        except Exception as exc:  # a bug must not stop the broker
            log.exception("error handling type=%r cid=%s", kind, cid)
            body = P.response(reply_type, cid, ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}")
        if body is not None:
            self.outbox.append((peer, [P.encode(body)]))

    def _check_sender(self, peer: bytes, kind: str, fields: dict) -> None:
        """Broker-to-broker requests must come from the broker they claim to be (its DEALER's
        routing id): a client cannot pose as a follower and move a high watermark.  (On an
        untrusted network this needs CURVE, planned; this stops mistakes and confused clients.)"""
        if kind in P.BROKER_ONLY:
            claimed = fields.get("from", fields.get("leader"))
            ok = peer == P.broker_identity(claimed) if isinstance(claimed, int) else peer.startswith(b"zb-broker-")
        elif kind == P.FETCH and fields["replica_id"] >= 0:
            ok = peer == P.broker_identity(fields["replica_id"])
        else:
            return
        if not ok:
            raise P.RequestError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, f"{kind} is only accepted from the broker it names")

    def _reply(self, peer: bytes, body: dict, payloads: Frames) -> None:
        self.outbox.append((peer, [P.encode(body), *payloads]))

    # -- metadata and admin ------------------------------------------------------

    def _metadata(self, peer, header, fields, frames, now_ms):
        names = fields["topics"]
        if names is None:
            names = list(self.image.topics)
        topics = []
        auto_creates = 0
        for name in names:
            topic = self.image.get(name)
            if (topic is None and fields["allow_auto_create"] and self.config.setting("auto_create_topics")
                    and auto_creates < MAX_AUTO_CREATES_PER_REQUEST):
                auto_creates += 1
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
