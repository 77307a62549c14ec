"""Placement and leadership decisions (pure)."""

from collections import Counter

from zbroker.control.controller import NO_LEADER, elect_leader, leadership_changes, new_topic, place_partitions
from zbroker.control.metadata import MetadataImage, PartitionMeta, TopicMeta, apply_record, topic_record

BROKERS = [1, 2, 3]


def test_replicas_and_leaders_spread_evenly_within_and_across_topics():
    image = MetadataImage()
    for name in ("a", "b", "c", "d"):
        image.add(new_topic(image, BROKERS, name, 4, 3, {}, set(BROKERS)))
    leaders = Counter(pm.leader for t in image.topics.values() for pm in t.partitions)
    assert max(leaders.values()) - min(leaders.values()) <= 1
    replicas = Counter(r for t in image.topics.values() for pm in t.partitions for r in pm.replicas)
    assert max(replicas.values()) - min(replicas.values()) <= 1
    for t in image.topics.values():
        for pm in t.partitions:
            assert len(set(pm.replicas)) == 3 and pm.isr == pm.replicas


def test_placement_rejects_impossible_replication():
    import pytest

    with pytest.raises(ValueError):
        place_partitions(MetadataImage(), BROKERS, 1, 4)


def test_dead_leader_moves_to_a_live_in_sync_replica_then_back():
    pm = PartitionMeta(0, [1, 2, 3], 1, 5, [1, 2, 3])
    image = MetadataImage({"t": TopicMeta("t", [pm])})
    (change,) = leadership_changes(image, live={2, 3})
    assert (change["leader"], change["leader_epoch"], change["isr"]) == (2, 6, [2, 3])  # the dead one leaves the ISR
    apply_record(image, change)
    assert leadership_changes(image, live={2, 3}) == []  # stable
    assert leadership_changes(image, live={1, 2, 3}) == []  # back, but not in sync yet: no move
    apply_record(image, {**change, "isr": [2, 3, 1]})  # the leader saw it catch up
    (back,) = leadership_changes(image, live={1, 2, 3})  # the preferred leader gets its partition back
    assert (back["leader"], back["leader_epoch"]) == (1, 7)


def test_the_last_isr_member_stays_when_it_dies():
    image = MetadataImage({"t": TopicMeta("t", [PartitionMeta(0, [1, 2], 1, 0, [1])])})
    (change,) = leadership_changes(image, live={2})
    assert change["leader"] == NO_LEADER and change["isr"] == [1]  # 2 has not every record: no leader


def test_no_live_in_sync_replica_means_no_leader_unless_unclean():
    pm = PartitionMeta(0, [1, 2], 1, 0, [1])
    assert elect_leader(pm, live={2}, unclean=False) == NO_LEADER
    assert elect_leader(pm, live={2}, unclean=True) == 2
    image = MetadataImage({"t": TopicMeta("t", [pm])})
    (change,) = leadership_changes(image, live={2}, unclean_of=lambda t: True)
    assert change["leader"] == 2 and change["isr"] == [2]


def test_single_replica_partition_goes_offline_and_returns():
    image = MetadataImage({"t": TopicMeta("t", [PartitionMeta(0, [3], 3, 0, [3])])})
    (off,) = leadership_changes(image, live={1, 2})
    assert off["leader"] == NO_LEADER
    apply_record(image, off)
    (on,) = leadership_changes(image, live={1, 2, 3})
    assert on["leader"] == 3 and on["leader_epoch"] == 2


def test_records_round_trip_through_the_image():
    image = MetadataImage()
    topic = new_topic(image, BROKERS, "t", 2, 2, {"retention_ms": 5}, set(BROKERS))
    copy = MetadataImage()
    apply_record(copy, topic_record(topic))
    assert copy.get("t").overrides == {"retention_ms": 5}
    assert [p.replicas for p in copy.get("t").partitions] == [p.replicas for p in topic.partitions]
    apply_record(copy, {"type": "topic_config", "name": "t", "overrides": {}})
    assert copy.get("t").overrides == {}
    apply_record(copy, {"type": "remove_topic", "name": "t"})
    assert copy.get("t") is None
