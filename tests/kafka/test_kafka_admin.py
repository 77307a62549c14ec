"""The Kafka door's admin APIs against real clients: confluent-kafka's AdminClient
(librdkafka), kafka-python's KafkaAdminClient and kcat."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from clients import Admin, Consumer, Producer
from kafka_tools import kcat

pytestmark = pytest.mark.timeout(90)

TIMEOUT_S = 20


def admin(kbroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})


def result(futures: dict):
    """The result of the last future (raises what any raised)."""
    return [future.result(timeout=TIMEOUT_S) for future in futures.values()][-1]


def error_of(futures: dict) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        result(futures)
    return info.value.args[0]


def topic_configs(client: AdminClient, name: str) -> dict:
    return result(client.describe_configs([ConfigResource("topic", name)]))


def partition_count(client: AdminClient, name: str) -> int | None:
    topic = client.list_topics(timeout=TIMEOUT_S).topics.get(name)
    return None if topic is None else len(topic.partitions)


def test_confluent_create_topics_with_configs_existing_name_and_validate_only(kbroker):
    client = admin(kbroker)
    result(client.create_topics([NewTopic("orders", 3, 1, config={"cleanup.policy": "compact", "retention.ms": "3600000",
                                                                   "compression.type": "producer"})]))
    assert partition_count(client, "orders") == 3
    configs = topic_configs(client, "orders")
    assert configs["cleanup.policy"].value == "compact" and configs["retention.ms"].value == "3600000"
    assert not configs["cleanup.policy"].is_default and configs["segment.ms"].is_default

    again = error_of(client.create_topics([NewTopic("orders", 1, 1)]))
    assert again.code() == KafkaError.TOPIC_ALREADY_EXISTS

    result(client.create_topics([NewTopic("checked", 2, 1)], validate_only=True))
    assert partition_count(client, "checked") is None
    bad = error_of(client.create_topics([NewTopic("checked", 2, 1, config={"compression.type": "snappy"})], validate_only=True))
    assert bad.code() == KafkaError.INVALID_CONFIG and "compression.type" in bad.str()

    # -1: the broker's defaults (3 partitions, replication factor 1 on one broker)
    result(client.create_topics([NewTopic("defaults")]))
    assert partition_count(client, "defaults") == 3

    out = kcat(kbroker.kafka_bootstrap, "-L")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert 'topic "orders" with 3 partitions' in text and 'topic "defaults" with 3 partitions' in text


def test_confluent_refusals_name_the_problem(kbroker):
    client = admin(kbroker)
    unknown = error_of(client.create_topics([NewTopic("t", 1, 1, config={"no.such.config": "1"})]))
    assert unknown.code() == KafkaError.INVALID_CONFIG and "no.such.config" in unknown.str()
    manual = error_of(client.create_topics([NewTopic("t", 2, replica_assignment=[[1], [1]])]))
    assert manual.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT and "zbroker places replicas itself" in manual.str()
    too_many = error_of(client.create_topics([NewTopic("t", 1, 1, config={"min.insync.replicas": "2"})]))
    assert too_many.code() == KafkaError.INVALID_CONFIG and "min.insync.replicas" in too_many.str()
    missing = error_of(client.delete_topics(["nobody"]))
    assert missing.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert partition_count(client, "t") is None


def test_confluent_describe_configs_of_a_topic_and_a_broker(kbroker):
    client = admin(kbroker)
    result(client.create_topics([NewTopic("described", 1, 1)]))
    topic, broker = client.describe_configs([ConfigResource("topic", "described"), ConfigResource("broker", "1")]).values()
    topic, broker = topic.result(timeout=TIMEOUT_S), broker.result(timeout=TIMEOUT_S)
    # what quixstreams and other clients read
    for name in ("cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas", "max.message.bytes",
                 "message.timestamp.type"):
        assert topic[name].value is not None, name
    assert topic["message.timestamp.type"].value == "CreateTime" and topic["message.timestamp.type"].is_read_only
    assert topic["retention.ms"].value == "604800000" and not topic["retention.ms"].is_read_only
    assert broker["num.partitions"].value == "3" and broker["num.partitions"].is_read_only
    assert broker["advertised.listeners"].value == f"PLAINTEXT://{kbroker.kafka_bootstrap}"

    (missing,) = client.describe_configs([ConfigResource("topic", "nobody")]).values()
    with pytest.raises(KafkaException) as info:
        missing.result(timeout=TIMEOUT_S)
    assert info.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_confluent_alter_and_incremental_alter_configs_read_back(kbroker):
    client = admin(kbroker)
    result(client.create_topics([NewTopic("tuned", 1, 1, config={"retention.ms": "1000", "segment.ms": "60000"})]))

    # AlterConfigs replaces the whole set: segment.ms goes back to its default
    result(client.alter_configs([ConfigResource("topic", "tuned", set_config={"retention.bytes": "1048576"})]))
    configs = topic_configs(client, "tuned")
    assert configs["retention.bytes"].value == "1048576"
    assert configs["retention.ms"].value == "604800000" and configs["retention.ms"].is_default
    assert configs["segment.ms"].is_default

    def incremental(*entries, **options):
        return client.incremental_alter_configs([ConfigResource("topic", "tuned", incremental_configs=list(entries))], **options)

    result(incremental(ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
                       ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
                       ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE)))
    configs = topic_configs(client, "tuned")
    assert configs["retention.ms"].value == "7200000"
    assert configs["cleanup.policy"].value == "delete,compact"
    assert configs["retention.bytes"].value == "-1" and configs["retention.bytes"].is_default

    result(incremental(ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT)))
    assert topic_configs(client, "tuned")["cleanup.policy"].value == "compact"

    result(incremental(ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET), validate_only=True))
    assert topic_configs(client, "tuned")["retention.ms"].value == "7200000"

    append = error_of(incremental(ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND)))
    assert append.code() == KafkaError.INVALID_REQUEST
    unknown = error_of(incremental(ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)))
    assert unknown.code() == KafkaError.INVALID_CONFIG and "no.such.config" in unknown.str()
    broker = error_of(client.incremental_alter_configs([ConfigResource("broker", "1", incremental_configs=[
        ConfigEntry("log.retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])]))
    assert broker.code() == KafkaError.INVALID_CONFIG and "log.retention.ms" in broker.str()


def test_confluent_create_partitions_delete_topics_describe_cluster(kbroker):
    client = admin(kbroker)
    result(client.create_topics([NewTopic("growing", 2, 1)]))
    result(client.create_partitions([NewPartitions("growing", 5)]))
    assert partition_count(client, "growing") == 5
    fewer = error_of(client.create_partitions([NewPartitions("growing", 3)]))
    assert fewer.code() == KafkaError.INVALID_PARTITIONS
    result(client.create_partitions([NewPartitions("growing", 9)], validate_only=True))
    assert partition_count(client, "growing") == 5

    cluster = client.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    assert cluster.cluster_id == "zbroker"
    assert cluster.controller.id == 1
    assert [(n.id, f"{n.host}:{n.port}") for n in cluster.nodes] == [(1, kbroker.kafka_bootstrap)]

    result(client.delete_topics(["growing"]))
    assert partition_count(client, "growing") is None


def test_quixstreams_topic_manager_creates_and_inspects_its_topics(kbroker):
    """quixstreams' own TopicManager: an input topic, then a compacted changelog and a
    repartition topic derived from its configs (read back with describe_configs)."""
    from quixstreams.models.topics import TopicAdmin, TopicManager

    manager = TopicManager(TopicAdmin(kbroker.kafka_bootstrap), consumer_group="counter", timeout=TIMEOUT_S)
    words = manager.topic("words", create_config=manager.topic_config(num_partitions=2))
    assert words.broker_config.num_partitions == 2
    assert words.broker_config.extra_config == {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete"}
    derived = manager.derive_topic_config([words])
    changelog = manager.changelog_topic(stream_id="words", store_name="default", config=derived)
    assert changelog.name == "changelog__counter--words--default"
    assert changelog.broker_config.num_partitions == 2
    assert changelog.broker_config.extra_config["cleanup.policy"] == "compact"
    repartition = manager.repartition_topic("by-key", "words", manager.derive_topic_config([words]))
    assert repartition.broker_config.extra_config["cleanup.policy"] == "delete"
    configs = topic_configs(admin(kbroker), changelog.name)
    assert configs["cleanup.policy"].value == "compact" and not configs["cleanup.policy"].is_default


def test_kafka_python_create_describe_delete(kbroker):
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic
    from kafka.errors import UnknownTopicIdError

    client = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        created = client.create_topics([KNewTopic("kp", 2, 1, topic_configs={"cleanup.policy": "compact"})])
        (topic,) = created["topics"]  # CreateTopics v7: the created topic's id, partitions and configs
        assert topic["error_code"] == 0 and topic["num_partitions"] == 2 and topic["topic_id"]
        assert topic["configs"]["cleanup.policy"]["value"] == "compact"
        described = client.describe_configs([KConfigResource(ConfigResourceType.TOPIC, "kp")], config_filter="all")
        assert described["topic"]["kp"]["cleanup.policy"]["value"] == "compact"
        assert described["topic"]["kp"]["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        assert "kp" in client.list_topics()
        deleted = client.delete_topics(["kp"])
        assert [t["error_code"] for t in deleted["topics"]] == [0]
        # DeleteTopics v6: by topic id
        (by_id,) = client.create_topics([KNewTopic("kp2", 1, 1)])["topics"]
        deleted = client.delete_topics([uuid.UUID(str(by_id["topic_id"]))])
        assert [(t["name"], t["error_code"]) for t in deleted["topics"]] == [("kp2", 0)]
        with pytest.raises(UnknownTopicIdError):
            client.delete_topics([uuid.uuid4()])
        assert not {"kp", "kp2"} & set(client.list_topics())
    finally:
        client.close()


def test_confluent_delete_records_moves_the_log_start(kbroker):
    client = admin(kbroker)
    result(client.create_topics([NewTopic("trimmed", 1, 1), NewTopic("kept", 1, 1, config={"cleanup.policy": "compact"})]))
    with Producer(bootstrap=kbroker.bootstrap) as producer:  # one log, both doors: written natively
        for i in range(10):
            producer.send("trimmed", value=b"v%d" % i, key=b"k")
            producer.send("kept", value=b"v%d" % i, key=b"k")
        producer.flush(timeout=TIMEOUT_S)

    deleted = result(client.delete_records([TopicPartition("trimmed", 0, 4)], request_timeout=TIMEOUT_S))
    assert deleted.low_watermark == 4
    with Admin(kbroker.bootstrap) as native:
        (partition,) = native.describe_topic("trimmed").partitions
        assert (partition.log_start_offset, partition.high_watermark) == (4, 10)
    with Consumer(bootstrap=kbroker.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([("trimmed", 0)])
        records, deadline = [], time.monotonic() + TIMEOUT_S
        while not records and time.monotonic() < deadline:
            records = consumer.poll(timeout_ms=200)
        assert records and records[0].offset == 4 and records[0].value == b"v4"

    # -1: up to the high watermark
    assert result(client.delete_records([TopicPartition("trimmed", 0, -1)])).low_watermark == 10
    past = error_of(client.delete_records([TopicPartition("trimmed", 0, 11)]))
    assert past.code() == KafkaError.OFFSET_OUT_OF_RANGE
    compacted = error_of(client.delete_records([TopicPartition("kept", 0, 3)]))
    assert compacted.code() == KafkaError.POLICY_VIOLATION
