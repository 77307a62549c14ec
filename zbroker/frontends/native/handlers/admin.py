"""metadata, describe_topic, create_topic, delete_topic, alter_topic_config, create_partitions, init_producer_id."""

from __future__ import annotations

from dataclasses import asdict

from zbroker import protocol as P
from zbroker.control.topicadmin import AlterTopicConfig, CreatePartitions, CreateTopic, DeleteTopic, ProducerId
from zbroker.core.cluster import ClusterMetadata, PartitionState, TopicDetail
from zbroker.frontends.native.router import Route
from zbroker.security import CLUSTER, Operation, topic


def _partition(p: PartitionState, positions: bool = False) -> dict:
    entry = {"partition": p.partition, "error": p.error, "leader": p.leader, "replicas": p.replicas, "isr": p.isr,
             "leader_epoch": p.leader_epoch}
    if positions:
        entry.update(log_start_offset=p.log_start_offset, high_watermark=p.high_watermark, log_end_offset=p.log_end_offset)
    return entry


def metadata(app, ctx, fields, payloads, now_ms):
    return app.cluster.metadata(ctx, fields["topics"], fields["allow_auto_create"], now_ms)


def metadata_reply(m: ClusterMetadata):
    return {
        "cluster_name": m.cluster_name, "controller": m.controller, "controller_epoch": m.controller_epoch,
        "brokers": [{k: v for k, v in asdict(b).items() if k != "curve_key" or v is not None} for b in m.brokers],
        "topics": [{"topic": t.topic, "error": t.error, "internal": t.internal, "partitions": [_partition(p) for p in t.partitions]}
                   for t in m.topics],
    }, []


def describe_topic(app, ctx, fields, payloads, now_ms):
    return app.cluster.describe_topic(ctx, fields["topic"])


def describe_topic_reply(t: TopicDetail):
    return {"topic": t.topic, "internal": t.internal, "config": t.config, "overrides": t.overrides,
            "partitions": [_partition(p, positions=True) for p in t.partitions]}, []


def create_topic_request(fields: dict) -> CreateTopic:
    return CreateTopic(fields["topic"], fields["partitions"], fields["replication_factor"], fields["config"] or {},
                       fields["validate_only"])


def create_topic(app, ctx, fields, payloads, now_ms):
    return app.admin.create_topic(ctx, create_topic_request(fields), now_ms)


def delete_topic(app, ctx, fields, payloads, now_ms):
    return app.admin.delete_topic(ctx, DeleteTopic(fields["topic"]), now_ms)


def alter_topic_config(app, ctx, fields, payloads, now_ms):
    return app.admin.alter_topic_config(ctx, AlterTopicConfig(fields["topic"], fields["config"], fields["validate_only"]), now_ms)


def create_partitions(app, ctx, fields, payloads, now_ms):
    return app.admin.create_partitions(ctx, CreatePartitions(fields["topic"], fields["total"], fields["validate_only"]), now_ms)


def init_producer_id(app, ctx, fields, payloads, now_ms):
    return app.admin.init_producer_id(ctx, now_ms)


def init_producer_id_reply(pid: ProducerId):
    return {"producer_id": pid.producer_id, "producer_epoch": pid.producer_epoch}, []


def _on_topic(operation):
    return lambda f: [(operation, topic(f["topic"]))]


ROUTES = [
    # authorized per topic by the service (core.cluster): TOPIC_AUTHORIZATION_FAILED per topic, filtered listings
    Route(P.METADATA, metadata, metadata_reply),
    Route(P.DESCRIBE_TOPIC, describe_topic, describe_topic_reply, access=_on_topic(Operation.DESCRIBE)),
    Route(P.CREATE_TOPIC, create_topic, access=_on_topic(Operation.CREATE)),
    Route(P.DELETE_TOPIC, delete_topic, access=_on_topic(Operation.DELETE)),
    Route(P.ALTER_TOPIC_CONFIG, alter_topic_config, access=_on_topic(Operation.ALTER)),
    Route(P.CREATE_PARTITIONS, create_partitions, access=_on_topic(Operation.ALTER)),
    Route(P.INIT_PRODUCER_ID, init_producer_id, init_producer_id_reply,
          access=lambda f: [(Operation.IDEMPOTENT_WRITE, CLUSTER)]),
]
