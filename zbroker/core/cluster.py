"""What a client asks about the cluster: brokers, topics, partitions and their leaders.

Served by any broker from its copy of the metadata image (every broker applies the
committed metadata log), plus, for ``describe_topic``, the log positions of the
partitions this broker leads.  A metadata request may auto-create topics a producer
names (``auto_create_topics``), at most ``MAX_AUTO_CREATES_PER_REQUEST`` per request:
creating topics costs the loop time.  A name asked for twice is answered once.

Authorization (the broker's authorizer, the one the routers ask), on every front door
alike, as Kafka's Metadata answers: asked for every topic, a principal is shown only the
topics it may DESCRIBE; a topic asked for by name that it may not describe answers
TOPIC_AUTHORIZATION_FAILED (whether it exists or not, so its existence is not told);
a missing topic is auto-created only for a principal that may CREATE it (on the topic
or on the cluster), else TOPIC_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zbroker.config import ClusterConfig
from zbroker.context import RequestContext
from zbroker.control.controlplane import ControlPlane
from zbroker.control.metadata import TopicMeta, topic_name_problem
from zbroker.control.topicadmin import TopicAdmin
from zbroker.core.partitions import PartitionManager
from zbroker.errors import ErrorCode
from zbroker.security import AllowAll, Authorizer, Operation, ResourceType, allowed_names
from zbroker.security import topic as topic_resource

MAX_AUTO_CREATES_PER_REQUEST = 10


@dataclass(slots=True)
class BrokerState:
    id: int
    host: str
    port: int
    alive: bool
    curve_key: str | None = None  # its CURVE public key (Z85) when [security] curve = true


@dataclass(slots=True)
class PartitionState:
    partition: int
    error: int
    leader: int
    replicas: list[int]
    isr: list[int]
    leader_epoch: int
    log_start_offset: int = -1  # describe_topic only: known on the leader
    high_watermark: int = -1
    log_end_offset: int = -1


@dataclass(slots=True)
class TopicState:
    topic: str
    error: int = 0
    internal: bool = False
    partitions: list[PartitionState] = field(default_factory=list)


@dataclass(slots=True)
class ClusterMetadata:
    cluster_name: str
    controller: int
    controller_epoch: int
    brokers: list[BrokerState]
    topics: list[TopicState]


@dataclass(slots=True)
class TopicDetail:
    topic: str
    internal: bool
    config: dict
    overrides: list[str]
    partitions: list[PartitionState]


class ClusterInfo:
    def __init__(self, config: ClusterConfig, broker_id: int, control: ControlPlane, partitions: PartitionManager,
                 admin: TopicAdmin, authorizer: Authorizer | None = None) -> None:
        self.config = config
        self.authorizer = authorizer or AllowAll()
        self.broker_id = broker_id
        self.control = control
        self.image = control.image
        self.partitions = partitions
        self.admin = admin

    def metadata(self, ctx: RequestContext, names: list[str] | None, allow_auto_create: bool, now_ms: int) -> ClusterMetadata:
        # each name once (Kafka treats the list as a set): the answer is bounded by the
        # distinct names, which the wire caps (protocol.MAX_TOPICS)
        everything = names is None
        if everything:  # only those the principal may describe, decided in bulk
            names = allowed_names(self.authorizer, ctx, Operation.DESCRIBE, ResourceType.TOPIC, self.image.topics)
        else:
            names = list(dict.fromkeys(names))
        may = (lambda operation, name: True) if isinstance(self.authorizer, AllowAll) else (
            lambda operation, name: self.authorizer.authorize(ctx, operation, topic_resource(name)))
        topics = []
        auto_creates = 0
        for name in names:
            if not everything and not may(Operation.DESCRIBE, name):
                topics.append(TopicState(name, int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)))
                continue
            topic = self.image.get(name)
            # an invalid name is never created: counting it would starve the valid names behind it
            if (topic is None and allow_auto_create and self.config.setting("auto_create_topics")
                    and topic_name_problem(name) is None and auto_creates < MAX_AUTO_CREATES_PER_REQUEST):
                if not may(Operation.CREATE, name):
                    topics.append(TopicState(name, int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)))
                    continue
                auto_creates += 1
                self.admin.auto_create(name, now_ms)
                topic = self.image.get(name)
                if topic is None:
                    topics.append(TopicState(name, int(ErrorCode.LEADER_NOT_AVAILABLE)))
                    continue
            if topic is None:
                error = ErrorCode.INVALID_TOPIC_EXCEPTION if topic_name_problem(name, True) else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                topics.append(TopicState(name, int(error)))
            else:
                topics.append(TopicState(name, 0, topic.internal, self._partition_states(topic)))
        live = self.control.live_brokers(now_ms)
        curve = self.config.security.curve
        brokers = [BrokerState(b.id, b.host, b.port, b.id in live, b.public_key if curve else None) for b in self.config.brokers]
        return ClusterMetadata(self.config.name, self.control.controller, self.control.epoch, brokers, topics)

    @staticmethod
    def _partition_states(topic: TopicMeta) -> list[PartitionState]:
        return [PartitionState(pm.partition, int(ErrorCode.LEADER_NOT_AVAILABLE) if pm.leader < 0 else 0, pm.leader,
                               pm.replicas, pm.isr, pm.leader_epoch) for pm in topic.partitions]

    def describe_topic(self, ctx: RequestContext, name: str) -> TopicDetail:
        topic = self.admin.known_topic(name)
        parts = self._partition_states(topic)
        for entry in parts:
            part = self.partitions.get((topic.name, entry.partition))
            if part is not None and part.leader == self.broker_id:
                entry.log_start_offset = part.log.log_start_offset
                entry.high_watermark = part.high_watermark
                entry.log_end_offset = part.log.log_end_offset
        return TopicDetail(topic.name, topic.internal, self.config.topic_settings(topic.overrides), sorted(topic.overrides), parts)
