"""The Kafka door's config-name table: Kafka's names and strings <-> zbroker's keys and types."""

from __future__ import annotations

import pytest

from zbroker.config import INT64_MAX, TOPIC_CONFIG, parse_config
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import configs
from zbroker.frontends.kafka.configs import AlterOp, ConfigSource

NEVER = str(INT64_MAX)


def cluster(**topic_defaults):
    return parse_config({"broker": [{"id": 1, "kafka_port": 9092}], "topic_defaults": topic_defaults})


def code_of(call) -> tuple[int, str]:
    with pytest.raises(RequestError) as info:
        call()
    return info.value.code, info.value.message


def test_every_zbroker_topic_setting_has_one_kafka_name():
    assert set(configs.BY_KEY) == set(TOPIC_CONFIG)
    assert len(configs.BY_NAME) == len(configs.TOPIC_CONFIG_NAMES)


@pytest.mark.parametrize("name, text, key, value", [
    ("retention.ms", "604800000", "retention_ms", 604_800_000),
    ("retention.ms", "-1", "retention_ms", -1),
    ("retention.bytes", " 1048576 ", "retention_bytes", 1_048_576),
    ("cleanup.policy", "compact", "cleanup_policy", "compact"),
    ("cleanup.policy", "compact, delete", "cleanup_policy", "compact,delete"),
    ("cleanup.policy", "delete,compact,delete", "cleanup_policy", "delete,compact"),
    ("min.insync.replicas", "2", "min_insync_replicas", 2),
    ("max.message.bytes", "2000000", "max_message_bytes", 2_000_000),
    ("unclean.leader.election.enable", "TRUE", "unclean_leader_election", True),
    ("min.cleanable.dirty.ratio", "0.25", "min_cleanable_dirty_ratio", 0.25),
    ("flush.messages", NEVER, "flush_messages", 0),  # Kafka's "never" is zbroker's "off"
    ("flush.ms", "1000", "flush_ms", 1000),
    ("zbroker.fsync", "always", "fsync", "always"),
])
def test_kafka_strings_become_zbroker_values_and_back(name, text, key, value):
    assert configs.creation_overrides([(name, text)]) == {key: value}
    back = configs.to_kafka(key, value)
    assert configs.creation_overrides([(name, back)]) == {key: value}


def test_values_read_back_as_kafka_writes_them():
    assert configs.to_kafka("flush_ms", 0) == NEVER
    assert configs.to_kafka("unclean_leader_election", False) == "false"
    assert configs.to_kafka("min_cleanable_dirty_ratio", 0.5) == "0.5"
    assert configs.to_kafka("retention_ms", 604_800_000) == "604800000"


@pytest.mark.parametrize("name, text, phrase", [
    ("retention.ms", "1e3", "must be an integer"),
    ("retention.ms", "-5", "retention.ms: must be an integer >= -1"),
    ("cleanup.policy", "compact,forever", "must list delete, compact or both"),
    ("cleanup.policy", " , ", "got 'nothing'"),
    ("unclean.leader.election.enable", "yes", "unclean.leader.election.enable: must be true or false"),
    ("min.cleanable.dirty.ratio", "lots", "must be a number"),
    ("flush.ms", "0", "0 is not accepted"),
    ("retention.ms", None, "a null value"),
    ("compression.type", "snappy", "compression.type: zbroker has no such setting; only 'producer'"),
    ("message.timestamp.type", "LogAppendTime", "only 'CreateTime'"),
    ("no.such.config", "1", "unknown topic config 'no.such.config'"),
])
def test_bad_or_unsupported_values_are_invalid_config_naming_the_kafka_config(name, text, phrase):
    code, message = code_of(lambda: configs.creation_overrides([(name, text)]))
    assert code == ErrorCode.INVALID_CONFIG
    assert phrase in message


def test_a_kafka_config_zbroker_lacks_is_accepted_at_its_fixed_value_and_changes_nothing():
    assert configs.creation_overrides([("compression.type", "producer"), ("message.timestamp.type", "CreateTime"),
                                       ("cleanup.policy", "compact")]) == {"cleanup_policy": "compact"}


def test_a_config_named_twice_is_invalid_request():
    code, _ = code_of(lambda: configs.creation_overrides([("retention.ms", "1"), ("retention.ms", "2")]))
    assert code == ErrorCode.INVALID_REQUEST


def test_alter_configs_replaces_the_whole_set_of_overrides():
    current = {"retention_ms": 1000, "cleanup_policy": "compact"}
    change = configs.replacement(current, [("retention.ms", "2000"), ("segment.ms", None)])
    assert change == {"cleanup_policy": None, "retention_ms": 2000}


def test_incremental_set_delete_append_subtract():
    effective = {**{k: v[0] for k, v in TOPIC_CONFIG.items()}, "cleanup_policy": "delete", "retention_ms": 5}
    ops = [("retention.ms", AlterOp.DELETE, None), ("cleanup.policy", AlterOp.APPEND, "compact"),
           ("segment.ms", AlterOp.SET, "60000"), ("compression.type", AlterOp.DELETE, None)]
    assert configs.incremental(effective, ops) == {"retention_ms": None, "cleanup_policy": "delete,compact", "segment_ms": 60000}
    both = {**effective, "cleanup_policy": "compact,delete"}
    assert configs.incremental(both, [("cleanup.policy", AlterOp.SUBTRACT, "delete")]) == {"cleanup_policy": "compact"}
    assert configs.incremental(both, [("cleanup.policy", AlterOp.APPEND, "delete")]) == {"cleanup_policy": "compact,delete"}


@pytest.mark.parametrize("ops, code, phrase", [
    ([("retention.ms", AlterOp.APPEND, "1")], ErrorCode.INVALID_REQUEST, "retention.ms is not a list"),
    ([("cleanup.policy", AlterOp.SUBTRACT, "delete")], ErrorCode.INVALID_CONFIG, "must list delete, compact or both"),
    ([("retention.ms", 7, "1")], ErrorCode.INVALID_REQUEST, "unknown config operation 7"),
    ([("retention.ms", 0, "1"), ("retention.ms", 1, None)], ErrorCode.INVALID_REQUEST, "more than once"),
    ([("bogus", 0, "1")], ErrorCode.INVALID_CONFIG, "unknown topic config 'bogus'"),
])
def test_incremental_refusals(ops, code, phrase):
    got, message = code_of(lambda: configs.incremental({"cleanup_policy": "delete"}, ops))
    assert got == code and phrase in message


def test_describe_topic_values_sources_and_synonyms():
    config = cluster(retention_ms=1000)
    entries = {e["name"]: e for e in configs.describe_topic(config, {"cleanup_policy": "compact"}, synonyms=True)}
    assert set(entries) == set(configs.BY_NAME)
    policy = entries["cleanup.policy"]
    assert (policy["value"], policy["config_source"], policy["read_only"]) == ("compact", ConfigSource.DYNAMIC_TOPIC_CONFIG, False)
    assert [(s["name"], s["value"], s["source"]) for s in policy["synonyms"]] == [
        ("cleanup.policy", "compact", ConfigSource.DYNAMIC_TOPIC_CONFIG), ("log.cleanup.policy", "delete", ConfigSource.DEFAULT_CONFIG)]
    retention = entries["retention.ms"]
    assert (retention["value"], retention["config_source"]) == ("1000", ConfigSource.STATIC_BROKER_CONFIG)
    assert entries["segment.ms"]["config_source"] == ConfigSource.DEFAULT_CONFIG
    fixed = entries["message.timestamp.type"]
    assert (fixed["value"], fixed["read_only"], fixed["config_type"]) == ("CreateTime", True, configs.ConfigType.STRING)
    assert entries["flush.messages"]["value"] == NEVER


def test_describe_topic_filters_by_name_and_leaves_out_unknown_names():
    entries = configs.describe_topic(cluster(), {}, ["retention.ms", "no.such"])
    assert [e["name"] for e in entries] == ["retention.ms"]
    assert configs.describe_topic(cluster(), {}, []) == []
    assert all(e["synonyms"] == [] and e["documentation"] is None for e in configs.describe_topic(cluster(), {}))


def test_describe_broker_is_read_only_and_from_the_config_file():
    config = cluster(partitions=6)
    entries = {e["name"]: e for e in configs.describe_broker(config, config.brokers[0])}
    assert all(e["read_only"] for e in entries.values())
    assert (entries["num.partitions"]["value"], entries["num.partitions"]["config_source"]) == ("6", ConfigSource.STATIC_BROKER_CONFIG)
    assert entries["log.retention.ms"]["value"] == "604800000"
    assert entries["advertised.listeners"]["value"] == "PLAINTEXT://127.0.0.1:9092"
    assert entries["broker.id"]["value"] == "1"
    assert "broker.id" not in {e["name"] for e in configs.describe_broker(config, None)}


def test_service_messages_are_told_in_kafka_names():
    text = "min_insync_replicas=3, replication_factor=1: min_insync_replicas must not exceed the replication factor"
    assert configs.kafka_message(text) == ("min.insync.replicas=3, replication_factor=1: min.insync.replicas must not exceed "
                                           "the replication factor")
