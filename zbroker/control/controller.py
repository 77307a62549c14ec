"""The controller's decisions: where partitions go, and who leads them (pure).

Functions here take the committed metadata image and the set of live brokers and
return metadata-log records; the caller proposes them through Raft and they take
effect on every broker once committed.

Placement (new topics): replicas round-robin over the broker ids in order, each
partition shifted by one, starting where the cluster's existing leaderships are
thinnest -- so leaders spread evenly over brokers within a topic and across
topics (rack-free; Kafka's default assignment without racks).

Leadership: dead brokers leave the ISR (the last member stays).  A partition
whose leader is dead gets the first live replica, in replica order, that is in
the ISR (any live replica if the topic allows unclean election); none -> leader
-1 (LEADER_NOT_AVAILABLE) until one returns.  A partition whose preferred leader
(its first replica) is alive and in the ISR but not leading gets it back.  Every
change of leader bumps the partition's leader epoch.
"""

from __future__ import annotations

import uuid
from collections import Counter

from zbroker.control.metadata import PARTITION_CHANGE_RECORD, MetadataImage, PartitionMeta, TopicMeta

NO_LEADER = -1


def leader_counts(image: MetadataImage, brokers: list[int]) -> Counter:
    counts = Counter({b: 0 for b in brokers})
    for topic in image.topics.values():
        for pm in topic.partitions:
            if pm.replicas:
                counts[pm.replicas[0]] += 1
    return counts


def place_partitions(image: MetadataImage, brokers: list[int], partitions: int, replication_factor: int) -> list[PartitionMeta]:
    """Replica lists for a new topic (first replica = preferred leader)."""
    ids = sorted(brokers)
    if not 1 <= replication_factor <= len(ids):
        raise ValueError(f"replication factor {replication_factor} needs 1 to {len(ids)} brokers")
    counts = leader_counts(image, ids)
    start = min(range(len(ids)), key=lambda i: (counts[ids[i]], i))
    out = []
    for p in range(partitions):
        replicas = [ids[(start + p + j) % len(ids)] for j in range(replication_factor)]
        out.append(PartitionMeta(p, replicas, replicas[0], 0, list(replicas)))
    return out


def elect_leader(pm: PartitionMeta, live: set[int], unclean: bool, isr: list[int] | None = None) -> int:
    """The leader a partition should have given the live brokers (and its ISR)."""
    isr = pm.isr if isr is None else isr
    preferred = pm.replicas[0] if pm.replicas else NO_LEADER
    if preferred in live and preferred in isr:
        return preferred
    if pm.leader in live and pm.leader in isr:
        return pm.leader  # keep a live leader rather than move twice
    for r in pm.replicas:
        if r in live and r in isr:
            return r
    if unclean:
        for r in pm.replicas:
            if r in live:
                return r
    return NO_LEADER


def leadership_changes(image: MetadataImage, live: set[int], unclean_of=lambda topic: False) -> list[dict]:
    """PartitionChange records for the brokers now alive.

    Dead brokers leave the ISR (but the last member stays, so the ISR still names
    who holds every committed record); leadership moves off dead brokers to a live
    ISR member, and back to the preferred replica when it is alive and in sync.
    """
    records = []
    for topic in image.topics.values():
        unclean = unclean_of(topic)
        for pm in topic.partitions:
            isr = [r for r in pm.isr if r in live] or list(pm.isr)
            leader = elect_leader(pm, live, unclean, isr)
            if leader != NO_LEADER and leader not in isr:  # unclean election: the new leader is the ISR
                isr = [leader]
            if leader == pm.leader and isr == pm.isr:
                continue
            records.append(
                {
                    "type": PARTITION_CHANGE_RECORD,
                    "topic": topic.name,
                    "partition": pm.partition,
                    "leader": leader,
                    "leader_epoch": pm.leader_epoch + (1 if leader != pm.leader else 0),
                    "isr": isr,
                }
            )
    return records


def new_topic(image: MetadataImage, brokers: list[int], name: str, partitions: int, rf: int, overrides: dict, live: set[int]) -> TopicMeta:
    """A new topic, placed, with leaders only on live brokers."""
    parts = place_partitions(image, brokers, partitions, rf)
    for pm in parts:
        pm.leader = elect_leader(pm, live, unclean=False)
    return TopicMeta(name, parts, dict(overrides), topic_id=uuid.uuid4().hex)
