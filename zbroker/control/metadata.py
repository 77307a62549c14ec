"""The metadata image: topics, their settings and their partitions' placement.

This is the broker's in-memory picture of the cluster that metadata requests are
answered from.  It is a plain value object: no files, no sockets.  It is built by
applying, in order, the committed records of the replicated metadata log
``__cluster_metadata`` (records defined at the bottom of this module; see
zbroker/controlplane.py and docs/architecture.md).

Topic names follow Kafka's rule: 1-249 characters from ``[A-Za-z0-9._-]``, not
``.`` or ``..``.  Names starting with ``__`` are reserved for internal topics.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from zbroker.control.security_meta import SECURITY_RECORDS, SecurityImage, apply_security_record, security_records

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def topic_name_problem(name: str, allow_internal: bool = False) -> str | None:
    """Why ``name`` is not a valid topic name, or None if it is."""
    if not _TOPIC_NAME.match(name):
        return f"topic name {name!r} must be 1-249 characters from [A-Za-z0-9._-]"
    if name in (".", ".."):
        return f"topic name {name!r} is not allowed"
    if name.startswith("__") and not allow_internal:
        return f"topic name {name!r}: names starting with '__' are reserved for internal topics"
    return None


@dataclass
class PartitionMeta:
    """Placement of one partition."""

    partition: int
    replicas: list[int]
    leader: int
    leader_epoch: int = 0
    isr: list[int] = field(default_factory=list)


@dataclass
class TopicMeta:
    """A topic: its partitions and its per-topic setting overrides."""

    name: str
    partitions: list[PartitionMeta]
    overrides: dict[str, Any] = field(default_factory=dict)
    internal: bool = False
    topic_id: str = ""  # unique per creation: a topic deleted and created again is another topic

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


class MetadataImage:
    """All topics known to this broker, by name."""

    def __init__(self, topics: dict[str, TopicMeta] | None = None) -> None:
        self.topics: dict[str, TopicMeta] = topics or {}
        self.next_producer_id = 0  # idempotent producer ids are handed out from here
        self.security = SecurityImage()  # SCRAM credentials, ACLs, quotas (control.security_meta)

    def get(self, name: str) -> TopicMeta | None:
        return self.topics.get(name)

    def partition(self, topic: str, partition: int) -> PartitionMeta | None:
        meta = self.topics.get(topic)
        if meta is None or not 0 <= partition < len(meta.partitions):
            return None
        return meta.partitions[partition]

    def add(self, topic: TopicMeta) -> None:
        self.topics[topic.name] = topic

    def remove(self, name: str) -> TopicMeta | None:
        return self.topics.pop(name, None)

    def clear(self) -> None:
        """Forget everything (before a snapshot is applied in its place)."""
        self.topics.clear()
        self.next_producer_id = 0
        self.security.clear()


# -- the metadata log's records -------------------------------------------------------
#
# Each record of __cluster_metadata is a msgpack map with a "type".  Records set
# whole values (never increments), so applying one twice is harmless; an empty
# record is the Raft leader-change marker and changes nothing.

TOPIC_RECORD = "topic"  # name, internal, topic_id, overrides, partitions: [{partition, replicas, leader, leader_epoch, isr}]
REMOVE_TOPIC_RECORD = "remove_topic"  # name
TOPIC_CONFIG_RECORD = "topic_config"  # name, overrides (the whole new override map)
PARTITION_CHANGE_RECORD = "partition_change"  # topic, partition, leader, leader_epoch, isr
PRODUCER_IDS_RECORD = "producer_ids"  # next: the next producer id to hand out
ADD_PARTITIONS_RECORD = "add_partitions"  # name, partitions: [{partition, replicas, leader, leader_epoch, isr}]


def topic_record(topic: TopicMeta) -> dict:
    return {
        "type": TOPIC_RECORD,
        "name": topic.name,
        "internal": topic.internal,
        "topic_id": topic.topic_id,
        "overrides": dict(topic.overrides),
        "partitions": [asdict(p) for p in topic.partitions],
    }


def image_records(image: MetadataImage) -> list[dict]:
    """Records that rebuild ``image`` when applied, in order, to an empty image (a snapshot)."""
    records = [topic_record(topic) for topic in image.topics.values()]
    records.append({"type": PRODUCER_IDS_RECORD, "next": image.next_producer_id})
    records += security_records(image.security)
    return records


def apply_record(image: MetadataImage, record: dict) -> tuple[str, ...]:
    """Apply one committed record; returns the names of the topics it touched."""
    kind = record.get("type")
    if kind == TOPIC_RECORD:
        parts = [PartitionMeta(**p) for p in record["partitions"]]
        image.add(TopicMeta(record["name"], parts, dict(record["overrides"]), bool(record.get("internal", False)),
                            record.get("topic_id", "")))
        return (record["name"],)
    if kind == REMOVE_TOPIC_RECORD:
        image.remove(record["name"])
        return (record["name"],)
    if kind == TOPIC_CONFIG_RECORD:
        topic = image.get(record["name"])
        if topic is not None:
            topic.overrides = dict(record["overrides"])
        return (record["name"],)
    if kind == PARTITION_CHANGE_RECORD:
        pm = image.partition(record["topic"], record["partition"])
        if pm is not None:
            pm.leader = record["leader"]
            pm.leader_epoch = record["leader_epoch"]
            pm.isr = list(record["isr"])
        return (record["topic"],)
    if kind == ADD_PARTITIONS_RECORD:
        topic = image.get(record["name"])
        if topic is not None:
            have = topic.partition_count
            topic.partitions.extend(PartitionMeta(**p) for p in record["partitions"] if p["partition"] >= have)
        return (record["name"],)
    if kind == PRODUCER_IDS_RECORD:
        image.next_producer_id = max(image.next_producer_id, int(record["next"]))
        return ()
    if kind in SECURITY_RECORDS:
        apply_security_record(image.security, record)
        return ()
    raise ValueError(f"unknown metadata record type {kind!r}")
