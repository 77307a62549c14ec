"""Metadata (key 3): brokers, topics, partitions, leaders and leader epochs.

Brokers are advertised at their Kafka address (``kafka_host``, default ``host``, and
``kafka_port``; brokers without a Kafka listener are left out).  Topics a client names
are auto-created when the cluster's ``auto_create_topics`` says so and the request
allows it (v4+; always for older versions, as Kafka does); a topic being created answers
LEADER_NOT_AVAILABLE and the client asks again.  Topics asked for by id (v10+) are found
by id, an unknown id is UNKNOWN_TOPIC_ID, and never auto-created.  v13 (Kafka 4.0,
KIP-1102) adds a top-level ``error_code``, always NONE here (no REBOOTSTRAP_REQUIRED):
kafka-python pinned to a 4.x release sends v13 whatever the broker advertises.

Authorization is the service's (:meth:`zbroker.core.cluster.ClusterInfo.metadata`, the
same on the native door): every topic is shown only to a principal that may DESCRIBE it,
a topic asked for and not describable is TOPIC_AUTHORIZATION_FAILED (asked for by id:
without its name), and auto-creation needs CREATE.
"""

from __future__ import annotations

from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.datapath import topic_name
from zbroker.frontends.kafka.router import KafkaRoute

API_KEY = 3
VERSIONS = (0, 13)


def kafka_brokers(app) -> list[dict]:
    """The brokers that have a Kafka listener, at their advertised address."""
    return [{"node_id": b.id, "host": b.kafka_advertised_host, "port": b.kafka_port, "rack": None}
            for b in app.config.brokers if b.kafka_port]


def _by_id(app, request, version: int) -> tuple[list[str], list[dict]]:
    """Topics asked for by id (v10+, name null; librdkafka does so for a KIP-848
    assignment): the names of those that exist, and the answers for those that do not."""
    names, unknown = [], []
    for t in request.topics or ():
        if t.name is None and getattr(t, "topic_id", None) is not None and t.topic_id.int:
            name = topic_name(app, t.topic_id)
            if name is None:
                unknown.append({"error_code": ErrorCode.UNKNOWN_TOPIC_ID, "name": None if version >= 12 else "",
                                "topic_id": t.topic_id,
                                "partitions": [], "topic_authorized_operations": -2147483648})
            else:
                names.append(name)
    return names, unknown


def metadata(app, ctx, request, version, now_ms):
    names = None if request.topics is None else [t.name for t in request.topics if t.name is not None]
    if version == 0 and not names:
        names = None  # v0: an empty list means every topic
    by_id, topics = _by_id(app, request, version) if version >= 10 else ([], [])
    auto_create = getattr(request, "allow_auto_topic_creation", True)
    answer = app.cluster.metadata(ctx, names if names is None else names + by_id, auto_create, now_ms)
    image = app.control.image
    hidden = set(by_id)  # asked for by id: a refused topic's name is not told
    for t in answer.topics:
        meta = image.get(t.topic)
        name = t.topic if t.error != ErrorCode.TOPIC_AUTHORIZATION_FAILED or t.topic not in hidden else (
            None if version >= 12 else "")
        topics.append({
            "error_code": t.error, "name": name, "topic_id": meta.topic_id if meta is not None else None,
            "is_internal": t.internal, "topic_authorized_operations": -2147483648,
            "partitions": [{"error_code": p.error, "partition_index": p.partition, "leader_id": p.leader,
                            "leader_epoch": p.leader_epoch, "replica_nodes": p.replicas, "isr_nodes": p.isr,
                            "offline_replicas": [r for r in p.replicas if r not in {b.id for b in answer.brokers if b.alive}]}
                           for p in t.partitions],
        })
    return {"brokers": kafka_brokers(app), "cluster_id": answer.cluster_name, "controller_id": answer.controller,
            "topics": topics, "cluster_authorized_operations": -2147483648}


def _error(request, version, code, message):
    names = [] if request is None or request.topics is None else [t.name for t in request.topics]
    return {"brokers": [], "error_code": code,  # top level: v13+
            "topics": [{"error_code": code, "name": n, "partitions": []} for n in names]}


# authorized per topic by the service (see the module text): no pairs for the router
ROUTE = KafkaRoute(API_KEY, "Metadata", VERSIONS, metadata, error=_error)
