"""Topic administration through the controller: create, delete, alter, add partitions,
producer ids and ISR changes.

A broker that is not the controller forwards these requests to the controller
(through the :class:`zbroker.context.PeerChannel`) and relays the answer; with no
controller known it answers NOT_CONTROLLER (retriable).  The controller checks the request against
its committed image (and the topics already being created or deleted), turns it
into metadata records, proposes them through Raft and answers only once they are
committed and applied -- so an acknowledged topic exists on a majority, survives
any controller failover, and is in this broker's image before the answer leaves.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Callable

from zbroker.config import TOPIC_CONFIG, ClusterConfig, ConfigError, check_topic_config
from zbroker.context import INTERNAL, TIMED_OUT, Completion, PeerChannel, PeerReply, RequestContext
from zbroker.control.controller import new_topic
from zbroker.control.controlplane import ControlPlane
from zbroker.control.metadata import (
    ADD_PARTITIONS_RECORD,
    PARTITION_CHANGE_RECORD,
    PRODUCER_IDS_RECORD,
    REMOVE_TOPIC_RECORD,
    TOPIC_CONFIG_RECORD,
    TopicMeta,
    topic_name_problem,
    topic_record,
)
from zbroker.control.raft import NotLeader
from zbroker.control.security_meta import check_record
from zbroker.errors import ErrorCode, RequestError
from zbroker.purgatory import DelayedOperation, Purgatory

log = logging.getLogger(__name__)

META_KEY = "__metadata_applied__"  # purgatory key: the image moved forward
ADMIN_TIMEOUT_MS = 30_000
ISR_CALL_TIMEOUT_MS = 5_000  # = a leader's re-proposal interval (core.replication.ISR_PROPOSAL_TIMEOUT_MS)
OFFSETS_TOPIC = "__consumer_offsets"
MAX_SECURITY_RECORDS = 1000  # per AlterSecurity: one request's records are one Raft proposal


# -- the requests (typed; the same objects travel to the controller when forwarded) --------

@dataclass(slots=True)
class CreateTopic:
    topic: str
    partitions: int | None = None
    replication_factor: int | None = None
    config: dict = field(default_factory=dict)
    validate_only: bool = False


@dataclass(slots=True)
class DeleteTopic:
    topic: str


@dataclass(slots=True)
class AlterTopicConfig:
    topic: str
    config: dict  # key -> value, or None to remove an override
    validate_only: bool = False


@dataclass(slots=True)
class CreatePartitions:
    topic: str
    total: int
    validate_only: bool = False


@dataclass(slots=True)
class InitProducerId:
    pass


@dataclass(slots=True)
class ProducerId:
    producer_id: int
    producer_epoch: int = 0


@dataclass(slots=True)
class AlterIsr:
    """A leader's ISR change, for the controller to commit."""

    topic: str
    partition: int
    leader: int
    leader_epoch: int
    isr: list[int]


@dataclass(slots=True)
class CreateInternalTopic:
    """Ask the controller to create ``__consumer_offsets`` (one-way)."""

    topic: str
    partitions: int
    replication_factor: int
    config: dict


@dataclass(slots=True)
class AlterSecurity:
    """Security records (control.security_meta: credentials, ACLs, quotas) for the
    controller to check and commit.  Built by a front door's handler from a client's
    request (authorized there); forwarded to the controller as a broker-to-broker call."""

    records: list[dict]


AdminRequest = CreateTopic | DeleteTopic | AlterTopicConfig | CreatePartitions | InitProducerId


class TopicAdmin:
    """Topic and producer-id administration, as the controller or forwarded to it."""

    def __init__(self, config: ClusterConfig, broker_id: int, control: ControlPlane, purgatory: Purgatory,
                 peers: PeerChannel, after_propose: Callable[[int], None] = lambda now_ms: None) -> None:
        """``after_propose(now_ms)`` runs when a proposal was committed and applied at once (a
        quorum of one): the broker must act on it before answering (the app reconciles)."""
        self.config = config
        self.broker_id = broker_id
        self.control = control
        self.image = control.image
        self.purgatory = purgatory
        self.peers = peers
        self.pending: dict[str, int] = {}  # topic -> metadata offset its create/delete commits at
        self._pid_reserved = 0  # producer ids handed out by this controller, committed or not
        self.after_propose = after_propose

    # -- the requests ------------------------------------------------------------------

    def create_topic(self, ctx: RequestContext, req: CreateTopic, now_ms: int) -> Completion | None:
        return self._run(ctx, req, now_ms, self._build_create)

    def delete_topic(self, ctx: RequestContext, req: DeleteTopic, now_ms: int) -> Completion | None:
        self._refuse_internal(req.topic, "deleted")
        return self._run(ctx, req, now_ms, self._build_delete)

    def alter_topic_config(self, ctx: RequestContext, req: AlterTopicConfig, now_ms: int) -> Completion | None:
        self._refuse_internal(req.topic, "reconfigured")
        return self._run(ctx, req, now_ms, self._build_alter)

    def _refuse_internal(self, name: str, what: str) -> None:
        """Internal topics are the broker's (INVALID_TOPIC_EXCEPTION): deleting
        ``__consumer_offsets`` would lose every group's offsets, and its settings are the broker's."""
        topic = self.image.get(name)
        if topic is not None and topic.internal:
            raise RequestError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"{name} is an internal topic: it cannot be {what}")

    def create_partitions(self, ctx: RequestContext, req: CreatePartitions, now_ms: int) -> Completion | None:
        return self._run(ctx, req, now_ms, self._build_add_partitions)

    def alter_security(self, ctx: RequestContext, req: AlterSecurity, now_ms: int) -> Completion | None:
        """Commit security records (after checking each); None if there were none."""
        return self._run(ctx, req, now_ms, self._build_security)

    def init_producer_id(self, ctx: RequestContext, now_ms: int) -> Completion[ProducerId]:
        """A new producer id from the controller's counter in the metadata log."""
        if not self.control.is_controller:
            return self._forward(InitProducerId(), now_ms)
        # ids handed out but not yet committed count too: two requests in one commit
        # interval must not get the same id
        pid = max(self.image.next_producer_id, self._pid_reserved)
        self._pid_reserved = pid + 1
        return self._commit([{"type": PRODUCER_IDS_RECORD, "next": pid + 1}], now_ms, ProducerId(pid, 0))

    def alter_isr(self, ctx: RequestContext, req: AlterIsr, now_ms: int) -> None:
        """As the controller: commit a leader's ISR change if it still leads in that epoch."""
        if not self.control.is_controller:
            raise RequestError(ErrorCode.NOT_CONTROLLER, "not the controller")
        pm = self.image.partition(req.topic, req.partition)
        if pm is None or (pm.leader, pm.leader_epoch) != (req.leader, req.leader_epoch):
            raise RequestError(ErrorCode.FENCED_LEADER_EPOCH, "not the leader of that partition in that epoch")
        isr = [r for r in pm.replicas if r in req.isr]
        if pm.leader not in isr:
            raise RequestError(ErrorCode.INVALID_REQUEST, "the ISR must hold the leader")
        if isr != pm.isr:
            self._propose([{"type": PARTITION_CHANGE_RECORD, "topic": req.topic, "partition": req.partition,
                            "leader": pm.leader, "leader_epoch": pm.leader_epoch, "isr": isr}], now_ms)

    def propose_isr(self, req: AlterIsr, now_ms: int) -> None:
        """As a leader: have the controller commit an ISR change (refusals are only logged;
        the leader proposes again if it still wants the change)."""
        if self.control.is_controller:
            try:
                self.alter_isr(INTERNAL, req, now_ms)
            except RequestError as exc:
                log.info("ISR change refused: %s", exc.message)
        elif self.control.controller >= 0:
            # answered within a leader's re-proposal interval, or forgotten (it proposes again)
            self.peers.call(self.control.controller, req, _log_isr_refusal, ISR_CALL_TIMEOUT_MS, now_ms)

    def create_internal_topic(self, ctx: RequestContext, req: CreateInternalTopic, now_ms: int) -> None:
        """As the controller, at another broker's request: create the offsets topic."""
        if req.topic != OFFSETS_TOPIC:
            raise RequestError(ErrorCode.INVALID_TOPIC_EXCEPTION, "only the offsets topic is created this way")
        if self.control.is_controller and self.image.get(OFFSETS_TOPIC) is None:
            self.ensure_offsets_topic(now_ms)

    def ensure_offsets_topic(self, now_ms: int) -> None:
        """Start creating ``__consumer_offsets`` (compacted; as the controller, or asking it)."""
        if OFFSETS_TOPIC in self.pending:
            return
        rf = min(3, len(self.config.brokers))
        req = CreateInternalTopic(OFFSETS_TOPIC, self.config.setting("offsets_topic_partitions"), rf,
                                  {"cleanup_policy": "compact", "min_insync_replicas": min(2, rf)})
        if self.control.is_controller:
            create = CreateTopic(req.topic, req.partitions, req.replication_factor, req.config)
            self._propose_now(lambda: self._build_create(create, now_ms, internal=True), now_ms)
        elif self.control.controller >= 0:
            self.peers.send(self.control.controller, req)

    def auto_create(self, name: str, now_ms: int) -> None:
        """Start creating a topic a producer asked for (answers nobody; metadata is retried)."""
        if name in self.pending or topic_name_problem(name) is not None:
            return
        if self.control.is_controller:
            self._propose_now(lambda: self._build_create(CreateTopic(name), now_ms), now_ms)
        elif self.control.controller >= 0:
            self.peers.send(self.control.controller, CreateTopic(name))

    # -- state -------------------------------------------------------------------------

    def known_topic(self, name: str) -> TopicMeta:
        topic = self.image.get(name)
        if topic is None or name in self.pending:
            raise RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        return topic

    def prune_pending(self) -> None:
        """After the image moved: forget creations and deletions that are applied."""
        applied = self.control.applied
        for name, end in list(self.pending.items()):
            if end <= applied or not self.control.is_controller:
                del self.pending[name]

    # -- as the controller, or forwarded to it -----------------------------------------

    def _run(self, ctx: RequestContext, req, now_ms: int, build) -> Completion | None:
        """Run ``build(req, now_ms) -> (records, topic names)`` as the controller, or forward."""
        if not self.control.is_controller:
            return self._forward(req, now_ms)
        records, names = build(req, now_ms)
        if not records:  # validate_only, or nothing to change
            return None
        return self._commit(records, now_ms, None, names)

    def _propose_now(self, build, now_ms: int) -> None:
        """Propose what ``build()`` returns, answering nobody (auto-creation)."""
        try:
            records, names = build()
            self._propose(records, now_ms, names)
        except (RequestError, NotLeader):
            return

    def _commit(self, records: list[dict], now_ms: int, value, names=()) -> Completion:
        """Propose ``records`` as the controller; complete with ``value`` once committed."""
        epoch = self.control.epoch
        try:
            end = self._propose(records, now_ms, names)
        except NotLeader as exc:
            raise RequestError(ErrorCode.NOT_CONTROLLER, str(exc)) from None
        done: Completion = Completion()

        def try_complete(now: int) -> bool:
            if self.control.epoch != epoch or not self.control.is_controller:
                done.fail_with(ErrorCode.NOT_CONTROLLER, "controller changed before the change was committed; retry")
                return True
            if self.control.applied >= end:
                done.complete(value)
                return True
            return False

        def on_expire(now: int) -> None:
            done.fail_with(ErrorCode.REQUEST_TIMED_OUT, "the change was not committed in time (is a majority of brokers up?)")

        self.purgatory.park(DelayedOperation(now_ms + ADMIN_TIMEOUT_MS, [META_KEY], try_complete, on_expire), now_ms)
        return done

    def _propose(self, records: list[dict], now_ms: int, names=()) -> int:
        """Propose as the controller; returns the offset the records commit at.  On a quorum
        of one they are applied at once, and the broker acts on them before answering."""
        end = self.control.propose(records)
        self.pending.update(dict.fromkeys(names, end))
        if self.control.applied >= end:
            self.after_propose(now_ms)
        return end

    def _forward(self, req, now_ms: int) -> Completion:
        controller = self.control.controller
        if controller < 0 or controller == self.broker_id:
            raise RequestError(ErrorCode.NOT_CONTROLLER, "no controller elected yet; retry")
        done: Completion = Completion()

        def on_reply(reply: PeerReply, now: int) -> None:
            if reply.error == ErrorCode.REQUEST_TIMED_OUT and reply.value is TIMED_OUT:
                done.fail_with(ErrorCode.REQUEST_TIMED_OUT, "the controller did not answer in time")
            elif reply.error:
                done.fail(RequestError(reply.error, reply.message or ""))  # relayed as the controller said it
            else:
                done.complete(reply.value)

        self.peers.call(controller, req, on_reply, ADMIN_TIMEOUT_MS, now_ms)
        return done

    # -- building metadata records -------------------------------------------------------

    def _checked_overrides(self, config: dict, replication_factor: int, changes: dict | None = None) -> dict:
        """``config`` checked key by key (typed: ``"1000"`` is not an integer), then as a whole
        with the broker defaults it inherits and the replication factor (config.RULES).
        ``changes`` (alter) are checked key by key and laid over ``config``."""
        try:
            overrides = {**config, **check_topic_config(changes)} if changes is not None else check_topic_config(config)
            self.config.check_topic(overrides, replication_factor)
        except ConfigError as exc:
            raise RequestError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        return overrides

    def _build_create(self, req: CreateTopic, now_ms: int, internal: bool = False):
        name = req.topic
        problem = topic_name_problem(name, allow_internal=internal)
        if problem:
            raise RequestError(ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
        if self.image.get(name) is not None or name in self.pending:
            raise RequestError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        partitions = req.partitions
        if partitions is None:
            partitions = self.config.default_partitions()
        if not 1 <= partitions <= 100_000:
            raise RequestError(ErrorCode.INVALID_PARTITIONS, f"partitions must be from 1 to 100000, got {partitions}")
        rf = req.replication_factor
        if rf is None:
            rf = self.config.default_replication_factor()
        brokers = [b.id for b in self.config.brokers]
        if not 1 <= rf <= len(brokers):
            raise RequestError(
                ErrorCode.INVALID_REPLICATION_FACTOR, f"replication factor {rf} must be from 1 to the {len(brokers)} configured brokers"
            )
        overrides = self._checked_overrides(req.config or {}, rf)
        if req.validate_only:
            return [], ()
        topic = new_topic(self.image, brokers, name, partitions, rf, overrides, self.control.live_brokers(now_ms))
        topic.internal = internal
        log.info("creating topic=%s partitions=%d rf=%d overrides=%s", name, partitions, rf, overrides)
        return [topic_record(topic)], (name,)

    def _build_delete(self, req: DeleteTopic, now_ms: int):
        topic = self.known_topic(req.topic)
        log.info("deleting topic=%s", topic.name)
        return [{"type": REMOVE_TOPIC_RECORD, "name": topic.name}], (topic.name,)

    def _build_alter(self, req: AlterTopicConfig, now_ms: int):
        topic = self.known_topic(req.topic)
        removals = [k for k, v in req.config.items() if v is None]
        changes = {k: v for k, v in req.config.items() if v is not None or k not in TOPIC_CONFIG}  # unknown: named
        kept = {k: v for k, v in topic.overrides.items() if k not in removals}
        overrides = self._checked_overrides(kept, len(topic.partitions[0].replicas), changes)
        if req.validate_only:
            return [], ()
        log.info("altering topic=%s set=%s removed=%s", topic.name, changes, removals)
        return [{"type": TOPIC_CONFIG_RECORD, "name": topic.name, "overrides": overrides}], ()

    def _build_add_partitions(self, req: CreatePartitions, now_ms: int):
        topic = self.known_topic(req.topic)
        if topic.internal:
            raise RequestError(ErrorCode.INVALID_PARTITIONS, f"{topic.name} is internal: its partition count is fixed")
        total, current = req.total, topic.partition_count
        if not current < total <= 100_000:
            raise RequestError(ErrorCode.INVALID_PARTITIONS, f"{topic.name} has {current} partitions: the new total must be more, at most 100000")
        if req.validate_only:
            return [], ()
        brokers = [b.id for b in self.config.brokers]
        rf = len(topic.partitions[0].replicas)
        live = self.control.live_brokers(now_ms)
        added = new_topic(self.image, brokers, topic.name, total - current, rf, {}, live).partitions
        for i, pm in enumerate(added):
            pm.partition = current + i
        log.info("adding partitions to topic=%s: %d -> %d", topic.name, current, total)
        return [{"type": ADD_PARTITIONS_RECORD, "name": topic.name, "partitions": [asdict(pm) for pm in added]}], ()


    def _build_security(self, req: AlterSecurity, now_ms: int):
        if len(req.records) > MAX_SECURITY_RECORDS:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"at most {MAX_SECURITY_RECORDS} security records in one change")
        for i, record in enumerate(req.records):
            try:
                check_record(record)
            except ValueError as exc:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"record {i}: {exc}") from None
        log.info("committing %d security records: %s", len(req.records),
                 ", ".join(sorted({r["type"] for r in req.records})))
        return list(req.records), ()


def _log_isr_refusal(reply: PeerReply, now_ms: int) -> None:
    if reply.value is TIMED_OUT:
        log.info("ISR change not answered by the controller in time; the leader will propose again")
    elif reply.error:
        log.info("ISR change refused: %s", reply.message)
