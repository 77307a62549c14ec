"""What a client asks about the cluster: brokers, topics, partitions and their leaders.

Served by any broker from its copy of the metadata image (every broker applies the
committed metadata log), plus, for ``describe_topic``, the log positions of the
partitions this broker leads.  A metadata request may auto-create topics a producer
names (``auto_create_topics``), at most ``MAX_AUTO_CREATES_PER_REQUEST`` per request:
creating topics costs the loop time.  A name asked for twice is answered once.
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
                 admin: TopicAdmin) -> None:
        self.config = config
        self.broker_id = broker_id
        self.control = control
        self.image = control.image
        self.partitions = partitions
        self.admin = admin

    def metadata(self, ctx: RequestContext, names: list[str] | None, allow_auto_create: bool, now_ms: int) -> ClusterMetadata:
        # each name once (Kafka treats the list as a set): the answer is bounded by the
        # distinct names, which the wire caps (protocol.MAX_TOPICS)
        names = list(self.image.topics) if names is None else list(dict.fromkeys(names))
        topics = []
        auto_creates = 0
        for name in names:
            topic = self.image.get(name)
            # an invalid name is never created: counting it would starve the valid names behind it
            if (topic is None and allow_auto_create and self.config.setting("auto_create_topics")
                    and topic_name_problem(name) is None and auto_creates < MAX_AUTO_CREATES_PER_REQUEST):
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
