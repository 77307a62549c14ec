"""Principal x operation x resource on both front doors, through the real routers in-process.

Every request type of both doors is sent by four principals against one broker with
security on (``[security] kafka_sasl``: ACLs enforced):

- ``User:granted`` holds exactly the ACLs the request needs (as docs/security.md lists them);
- ``User:nobody`` holds none;
- ``User:denied`` holds them too, and a deny of ``all`` on the same resources (deny wins);
- ``User:root`` is a super user and holds none.

The first and last must not be refused; the middle two must get Kafka's code
(TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED) where Kafka puts it, and their request must
change nothing (topics, configs, the log, committed offsets, ACLs, producer ids).
"""

from __future__ import annotations

import dataclasses
import io
import struct
import uuid
from dataclasses import dataclass
from typing import Callable

import msgpack
import pytest
from kio.serial import entity_reader, entity_writer

from storage import build_kafka_batch, build_native_batch
from tests.unit.servicefakes import settle
from zbroker.config import SecurityConfig, single_node_config
from zbroker.context import INTERNAL
from zbroker.control.security_meta import AclBinding, acl_record
from zbroker.control.topicadmin import AlterSecurity, CreateTopic
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka import KafkaDoor, codec
from zbroker.frontends.kafka.codec import build
from zbroker.frontends.kafka.router import KafkaConnection
from zbroker.groups.coordinator import CommitOffset, OffsetCommit
from zbroker.node import BrokerNode

NOW = 1_000
TAF, GAF, CAF = ErrorCode.TOPIC_AUTHORIZATION_FAILED, ErrorCode.GROUP_AUTHORIZATION_FAILED, ErrorCode.CLUSTER_AUTHORIZATION_FAILED
AUTH_CODES = {int(TAF), int(GAF), int(CAF)}
SECURE = SecurityConfig(kafka_sasl=("SCRAM-SHA-256",), super_users=("User:root",))
PRINCIPALS = ("User:nobody", "User:denied", "User:granted", "User:root")  # refused first: t still exists
T = ("topic", "t")
G = ("group", "g")
C = ("cluster", "cluster")


class Broker:
    """One broker with security on, topic ``t`` (one partition, two records) and offsets of
    group ``g``, driven through its native router (``native``) and a Kafka connection
    (``kafka``) as a given principal."""

    def __init__(self, data_dir):
        config = dataclasses.replace(single_node_config(str(data_dir)), security=SECURE)
        self.node = BrokerNode(config, 1, NOW)
        self.app = self.node.app
        self.door = KafkaDoor(self.app, self.node.metrics)
        settle(self.app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {}, False), NOW))
        self.app.produce.produce(INTERNAL, 1, 1000, [("t", 0, build_native_batch([(NOW, b"k", b"v", None)] * 2))], NOW)
        self.t_id = self.app.control.image.get("t").topic_id  # kept: a granted request may delete t
        self.cid = 0

    def grant(self, *bindings: AclBinding) -> None:
        settle(self.app.admin.alter_security(INTERNAL, AlterSecurity([acl_record(b) for b in bindings]), NOW))

    def snapshot(self):
        """Everything a request could change."""
        image = self.app.control.image
        part = self.app.partitions.get(("t", 0))
        log = (part.log.log_start_offset, part.log.log_end_offset) if part is not None else None
        return ({n: (m.partition_count, dict(m.overrides), m.topic_id) for n, m in image.topics.items()},
                log, dict(self.app.groups.offsets.get("g", {})),
                set(image.security.acls), image.next_producer_id)

    def topic_id(self) -> str:
        return self.t_id

    def native(self, principal, kind, *payloads, **fields) -> dict:
        self.cid += 1
        frame = msgpack.packb({"v": 1, "type": kind, "cid": self.cid, **fields})
        self.node.handle(b"\x00client", [frame, *payloads], NOW, principal=principal)
        self.node.tick(NOW)
        ((_conn, frames),) = self.node.outbox
        self.node.outbox.clear()
        return msgpack.unpackb(frames[0])

    def kafka(self, principal, api_key, version, **fields):
        self.cid += 1
        schema = codec.request_schema(api_key, version)
        out = io.BytesIO()
        entity_writer(schema.__header_schema__)(out, schema.__header_schema__(
            request_api_key=api_key, request_api_version=version, correlation_id=self.cid, client_id="matrix"))
        entity_writer(schema)(out, build(schema, fields))
        wire = Wire()
        # the principal a SASL login would have set: this matrix is about authorization
        conn = KafkaConnection(self.door.router, self.cid, "peer", wire, self.door.max_request_bytes, principal=principal)
        conn.data_received(struct.pack(">i", len(out.getvalue())) + out.getvalue(), NOW)
        self.node.tick(NOW)
        (reply,) = wire.sent
        response = codec.response_schema(api_key, version)
        return entity_reader(response)(reply, 9 if response.__flexible__ else 8)[0]


class Wire:
    def __init__(self):
        self.sent = []

    def write(self, data):
        self.sent += data

    def close(self):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@dataclass(frozen=True)
class Case:
    """One request: the ACLs it needs (``(operation, (type, name))``), how to send it as a
    principal (``send(broker, principal) -> error code where Kafka puts the refusal``) and
    the code a refusal gets."""

    name: str
    needs: tuple
    send: Callable
    refused: int


def _part(answer, *path):
    for step in path:
        answer = answer[step] if isinstance(step, int) else getattr(answer, step)
    return int(answer)


NATIVE_BATCH = build_native_batch([(NOW, None, b"x", None)])
KAFKA_BATCH = build_kafka_batch([(NOW, None, b"x", [])])


def n(kind, *payloads, **fields):
    return lambda b, p: b.native(p, kind, *payloads, **fields)["error"]


NATIVE = [
    Case("produce", (("write", T),), n("produce", NATIVE_BATCH, acks=1, batches=[{"topic": "t", "partition": 0}]), TAF),
    Case("fetch", (("read", T),), n("fetch", max_wait_ms=0, partitions=[{"topic": "t", "partition": 0, "offset": 0}]), TAF),
    Case("list_offsets", (("describe", T),), n("list_offsets", partitions=[{"topic": "t", "partition": 0, "timestamp": -1}]), TAF),
    Case("metadata", (("describe", T),), lambda b, p: b.native(p, "metadata", topics=["t"])["topics"][0]["error"], TAF),
    Case("describe_topic", (("describe", T),), n("describe_topic", topic="t"), TAF),
    Case("create_topic", (("create", ("topic", "new")),), n("create_topic", topic="new", partitions=1), TAF),
    Case("create_topic by cluster", (("create", C),), n("create_topic", topic="new", partitions=1), TAF),
    Case("delete_topic", (("delete", T),), n("delete_topic", topic="t"), TAF),
    Case("alter_topic_config", (("alter", T),), n("alter_topic_config", topic="t", config={"retention_ms": 5000}), TAF),
    Case("create_partitions", (("alter", T),), n("create_partitions", topic="t", total=2), TAF),
    Case("init_producer_id", (("write", C),), n("init_producer_id"), CAF),
    Case("init_producer_id by topic write", (("write", T),), n("init_producer_id"), CAF),
    Case("find_coordinator", (("describe", G),), n("find_coordinator", group="g"), GAF),
    Case("group_heartbeat", (("read", G), ("describe", T)), n("group_heartbeat", group="g", member_epoch=0, topics=["t"]), GAF),
    Case("offset_commit", (("read", G), ("read", T)), n("offset_commit", group="g", offsets=[{"topic": "t", "partition": 0, "offset": 1}]), GAF),
    Case("offset_fetch", (("describe", G), ("describe", T)), n("offset_fetch", group="g", partitions=[["t", 0]]), GAF),
    Case("describe_group", (("describe", G),), n("describe_group", group="g"), GAF),
    Case("delete_group", (("delete", G),), n("delete_group", group="g"), GAF),
    Case("create_acls", (("alter", C),),
         n("create_acls", acls=[{"principal": "User:x", "resource_type": "topic", "name": "t", "operation": "read"}]), CAF),
    Case("describe_acls", (("describe", C),), n("describe_acls"), CAF),
    Case("delete_acls", (("alter", C),), n("delete_acls", filters=[{"principal": "User:granted"}]), CAF),
]


def k(api_key, version, path, **fields):
    return lambda b, p: _part(b.kafka(p, api_key, version, **fields), *path)


def k_by_id(api_key, version, path, build_fields):
    return lambda b, p: _part(b.kafka(p, api_key, version, **build_fields(b)), *path)


def _commit(version):
    def fields(b):
        where = {"topic_id": b.topic_id()} if version >= 10 else {"name": "t"}
        return {"group_id": "g", "generation_id_or_member_epoch": -1, "member_id": "",
                "topics": [{**where, "partitions": [{"partition_index": 0, "committed_offset": 1}]}]}
    return fields


PRODUCE = {"acks": 1, "timeout": 1000}
FETCH = {"max_wait": 0, "min_bytes": 1, "max_bytes": 1 << 20, "replica_id": -1}
FETCH_PART = {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}
RES_TOPIC, RES_BROKER = 2, 4

KAFKA = [
    Case("Produce v9", (("write", T),), k(0, 9, ("responses", 0, "partition_responses", 0, "error_code"), **PRODUCE,
                                          topic_data=[{"name": "t", "partition_data": [{"index": 0, "records": KAFKA_BATCH}]}]), TAF),
    Case("Produce v13 by id", (("write", T),), k_by_id(0, 13, ("responses", 0, "partition_responses", 0, "error_code"), lambda b: {
        **PRODUCE, "topic_data": [{"topic_id": b.topic_id(), "partition_data": [{"index": 0, "records": KAFKA_BATCH}]}]}), TAF),
    Case("Fetch v12", (("read", T),), k(1, 12, ("responses", 0, "partitions", 0, "error_code"), **FETCH,
                                        topics=[{"topic": "t", "partitions": [FETCH_PART]}]), TAF),
    Case("Fetch v13 by id", (("read", T),), k_by_id(1, 13, ("responses", 0, "partitions", 0, "error_code"), lambda b: {
        **FETCH, "topics": [{"topic_id": b.topic_id(), "partitions": [FETCH_PART]}]}), TAF),
    Case("ListOffsets", (("describe", T),), k(2, 7, ("topics", 0, "partitions", 0, "error_code"), replica_id=-1,
                                              topics=[{"name": "t", "partitions": [{"partition_index": 0, "timestamp": -1}]}]), TAF),
    Case("OffsetForLeaderEpoch", (("describe", T),), k(23, 4, ("topics", 0, "partitions", 0, "error_code"), replica_id=-1,
                                                       topics=[{"topic": "t", "partitions": [{"partition": 0, "leader_epoch": 0}]}]), TAF),
    Case("Metadata", (("describe", T),), k(3, 12, ("topics", 0, "error_code"), topics=[{"name": "t"}]), TAF),
    Case("Metadata auto-create", (("describe", ("topic", "auto")), ("create", ("topic", "auto"))),
         k(3, 12, ("topics", 0, "error_code"), topics=[{"name": "auto"}], allow_auto_topic_creation=True), TAF),
    Case("CreateTopics", (("create", ("topic", "new")),), k(19, 7, ("topics", 0, "error_code"), timeout=1000,
                                                              topics=[{"name": "new", "num_partitions": 1, "replication_factor": 1}]), TAF),
    Case("CreateTopics by cluster", (("create", C),), k(19, 7, ("topics", 0, "error_code"), timeout=1000,
                                                        topics=[{"name": "new", "num_partitions": 1, "replication_factor": 1}]), TAF),
    Case("DeleteTopics", (("delete", T),), k(20, 6, ("responses", 0, "error_code"), timeout=1000, topics=[{"name": "t"}]), TAF),
    Case("DeleteTopics by id", (("delete", T),), k_by_id(20, 6, ("responses", 0, "error_code"), lambda b: {
        "timeout": 1000, "topics": [{"topic_id": b.topic_id()}]}), TAF),
    Case("DeleteRecords", (("delete", T),), k(21, 2, ("topics", 0, "partitions", 0, "error_code"), timeout=1000,
                                              topics=[{"name": "t", "partitions": [{"partition_index": 0, "offset": 1}]}]), TAF),
    Case("CreatePartitions", (("alter", T),), k(37, 3, ("results", 0, "error_code"), timeout=1000,
                                                topics=[{"name": "t", "count": 2, "assignments": None}]), TAF),
    Case("DescribeConfigs topic", (("describe", T),), k(32, 4, ("results", 0, "error_code"),
                                                        resources=[{"resource_type": RES_TOPIC, "resource_name": "t"}]), TAF),
    Case("DescribeConfigs broker", (("describe", C),), k(32, 4, ("results", 0, "error_code"),
                                                         resources=[{"resource_type": RES_BROKER, "resource_name": "1"}]), CAF),
    Case("AlterConfigs", (("alter", T),), k(33, 2, ("responses", 0, "error_code"), resources=[
        {"resource_type": RES_TOPIC, "resource_name": "t", "configs": [{"name": "retention.ms", "value": "5000"}]}]), TAF),
    Case("IncrementalAlterConfigs", (("alter", T),), k(44, 1, ("responses", 0, "error_code"), resources=[
        {"resource_type": RES_TOPIC, "resource_name": "t",
         "configs": [{"name": "retention.ms", "config_operation": 0, "value": "5000"}]}]), TAF),
    Case("InitProducerId", (("write", C),), k(22, 4, ("error_code",), transaction_timeout=1000, producer_id=-1,
                                              producer_epoch=-1), CAF),
    Case("InitProducerId by topic write", (("write", T),), k(22, 4, ("error_code",), transaction_timeout=1000,
                                                             producer_id=-1, producer_epoch=-1), CAF),
    Case("DescribeCluster", (("describe", C),), k(60, 1, ("error_code",), endpoint_type=1), CAF),
    Case("FindCoordinator", (("describe", G),), k(10, 4, ("coordinators", 0, "error_code"), key_type=0, coordinator_keys=["g"]), GAF),
    Case("JoinGroup", (("read", G),), k(11, 9, ("error_code",), group_id="g", session_timeout=10000, rebalance_timeout=10000,
                                        member_id="", protocol_type="consumer", protocols=[{"name": "range", "metadata": b""}]), GAF),
    Case("SyncGroup", (("read", G),), k(14, 5, ("error_code",), group_id="g", generation_id=1, member_id="m"), GAF),
    Case("Heartbeat", (("read", G),), k(12, 4, ("error_code",), group_id="g", generation_id=1, member_id="m"), GAF),
    Case("LeaveGroup", (("read", G),), k(13, 5, ("error_code",), group_id="g", members=[{"member_id": "m"}]), GAF),
    Case("ConsumerGroupHeartbeat", (("read", G), ("describe", T)), k(68, 1, ("error_code",), group_id="g", member_id="m1",
                                                                      member_epoch=0, rebalance_timeout=10000,
                                                                      subscribed_topic_names=["t"], topic_partitions=[]), GAF),
    Case("OffsetCommit", (("read", G), ("read", T)), k_by_id(8, 9, ("topics", 0, "partitions", 0, "error_code"), _commit(9)), GAF),
    Case("OffsetCommit v10 by id", (("read", G), ("read", T)),
         k_by_id(8, 10, ("topics", 0, "partitions", 0, "error_code"), _commit(10)), GAF),
    Case("OffsetFetch", (("describe", G), ("describe", T)), k(9, 9, ("groups", 0, "error_code"), groups=[
        {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0]}]}]), GAF),
    Case("DescribeGroups", (("describe", G),), k(15, 5, ("groups", 0, "error_code"), groups=["g"]), GAF),
    Case("DeleteGroups", (("delete", G),), k(42, 2, ("results", 0, "error_code"), groups_names=["g"]), GAF),
    Case("CreateAcls", (("alter", C),), k(30, 3, ("results", 0, "error_code"), creations=[
        {"resource_type": 2, "resource_name": "t", "resource_pattern_type": 3, "principal": "User:x", "host": "*",
         "operation": 3, "permission_type": 3}]), CAF),
    Case("DescribeAcls", (("describe", C),), k(29, 3, ("error_code",), resource_type_filter=1, pattern_type_filter=1,
                                               operation=1, permission_type=1), CAF),
    Case("DeleteAcls", (("alter", C),), k(31, 3, ("filter_results", 0, "error_code"), filters=[
        {"resource_type_filter": 1, "pattern_type_filter": 1, "principal_filter": "User:granted", "operation": 1,
         "permission_type": 1}]), CAF),
]


def bindings(principal: str, case: Case, permission: str = "allow") -> list[AclBinding]:
    return [AclBinding(principal, kind, name, "literal", operation if permission == "allow" else "all", permission)
            for operation, (kind, name) in case.needs]


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "d")
    yield b
    b.node.close(NOW)


@pytest.mark.parametrize("case", NATIVE + KAFKA, ids=lambda c: c.name)
def test_matrix(broker, case):
    broker.grant(*bindings("User:granted", case), *bindings("User:denied", case), *bindings("User:denied", case, "deny"))
    for principal in PRINCIPALS:
        before = broker.snapshot()
        code = case.send(broker, principal)
        if principal in ("User:granted", "User:root"):
            assert code not in AUTH_CODES, (principal, code)
        else:
            assert code == case.refused, (principal, code)
            assert broker.snapshot() == before, f"{case.name} refused to {principal} changed the broker's state"


# -- refusals one by one, filtered listings, the wildcard principal --------------------------

def allow(principal, kind, name, operation, pattern="literal"):
    return AclBinding(principal, kind, name, pattern, operation, "allow")


def test_a_produce_to_two_topics_is_refused_only_on_the_topic_not_granted(broker):
    settle(broker.app.admin.create_topic(INTERNAL, CreateTopic("u", 1, 1, {}, False), NOW))
    broker.grant(allow("User:a", "topic", "t", "write"))
    data = [{"name": name, "partition_data": [{"index": 0, "records": KAFKA_BATCH}]} for name in ("t", "u")]
    answer = broker.kafka("User:a", 0, 9, **PRODUCE, topic_data=data)
    assert [r.partition_responses[0].error_code for r in answer.responses] == [0, TAF]
    assert broker.app.partitions.get(("u", 0)).log.log_end_offset == 0
    native = broker.native("User:a", "produce", NATIVE_BATCH, acks=1, batches=[{"topic": "u", "partition": 0}])
    assert native["error"] == TAF and "User:a may not write topic 'u'" in native["error_message"]


def test_an_offset_commit_by_topic_id_is_refused_on_the_topic_it_resolves_to(broker):
    broker.grant(allow("User:a", "group", "g", "read"))
    answer = broker.kafka("User:a", 8, 10, **_commit(10)(broker))
    assert answer.topics[0].partitions[0].error_code == TAF
    broker.grant(allow("User:a", "topic", "t", "read"))
    assert broker.kafka("User:a", 8, 10, **_commit(10)(broker)).topics[0].partitions[0].error_code != TAF


def test_metadata_shows_only_the_topics_a_principal_may_describe(broker):
    for name in ("logs-a", "logs-b", "secret"):
        settle(broker.app.admin.create_topic(INTERNAL, CreateTopic(name, 1, 1, {}, False), NOW))
    broker.grant(allow("User:a", "topic", "logs-", "read", "prefixed"))
    listed = broker.kafka("User:a", 3, 12, topics=None)
    assert sorted(t.name for t in listed.topics) == ["logs-a", "logs-b"]
    assert sorted(t["topic"] for t in broker.native("User:a", "metadata", topics=None)["topics"]) == ["logs-a", "logs-b"]
    assert broker.kafka("User:nobody", 3, 12, topics=None).topics == ()
    # asked for by name: refused whether it exists or not; by id: refused without its name
    named = broker.kafka("User:a", 3, 12, topics=[{"name": "secret"}, {"name": "missing"}, {"name": "logs-a"}])
    assert [(t.name, t.error_code) for t in named.topics] == [("secret", TAF), ("missing", TAF), ("logs-a", 0)]
    by_id = broker.kafka("User:a", 3, 12, topics=[{"topic_id": broker.app.control.image.get("secret").topic_id}])
    assert [(t.name, t.error_code) for t in by_id.topics] == [(None, TAF)]


def test_auto_creation_needs_create(broker):
    broker.grant(allow("User:a", "topic", "*", "describe"))
    answer = broker.kafka("User:a", 3, 12, topics=[{"name": "auto"}], allow_auto_topic_creation=True)
    assert answer.topics[0].error_code == TAF and broker.app.control.image.get("auto") is None
    broker.grant(allow("User:a", "cluster", "cluster", "create"))
    answer = broker.kafka("User:a", 3, 12, topics=[{"name": "auto"}], allow_auto_topic_creation=True)
    assert answer.topics[0].error_code != TAF and broker.app.control.image.get("auto") is not None


def test_list_groups_shows_the_groups_a_principal_may_describe(broker):
    try:
        broker.app.groups.find_coordinator(INTERNAL, "g", NOW)
    except Exception:
        pass
    for _ in range(3):
        broker.node.tick(NOW)
    for g in ("app-1", "app-2", "other"):
        settle(broker.app.groups.offset_commit(INTERNAL, OffsetCommit(g, [CommitOffset("t", 0, 1, "")], "", -1), NOW))
    broker.grant(allow("User:a", "group", "app-", "describe", "prefixed"), allow("User:ops", "cluster", "cluster", "describe"))
    assert sorted(g.group_id for g in broker.kafka("User:a", 16, 5).groups) == ["app-1", "app-2"]
    assert sorted(g["group"] for g in broker.native("User:a", "list_groups")["groups"]) == ["app-1", "app-2"]
    assert len(broker.kafka("User:ops", 16, 5).groups) == 3
    assert broker.kafka("User:nobody", 16, 5).groups == ()


def test_the_wildcard_principal_grants_everyone_even_the_anonymous(broker):
    assert broker.native("User:ANONYMOUS", "describe_topic", topic="t")["error"] == TAF
    broker.grant(allow("User:*", "topic", "t", "read"))
    assert broker.native("User:ANONYMOUS", "describe_topic", topic="t")["error"] == 0
    assert broker.native(None, "describe_topic", topic="t")["error"] == 0  # no principal: anonymous


def test_kafka_acl_codes_round_trip_and_unsupported_ones_are_named(broker):
    creation = {"resource_name": "kafka-cluster", "resource_pattern_type": 3, "principal": "User:x", "host": "*",
                "permission_type": 3}
    answer = broker.kafka("User:root", 30, 3, creations=[
        {**creation, "resource_type": 4, "operation": 10},  # DESCRIBE_CONFIGS on the cluster: describe
        {**creation, "resource_type": 4, "operation": 12},  # IDEMPOTENT_WRITE: write on the cluster
        {**creation, "resource_type": 4, "operation": 9},  # CLUSTER_ACTION: brokers only
        {**creation, "resource_type": 5, "operation": 3},  # TRANSACTIONAL_ID
        {**creation, "resource_type": 2, "resource_name": "t", "operation": 3, "host": "10.0.0.1"},
    ])
    codes = [(r.error_code, r.error_message) for r in answer.results]
    assert [c for c, _m in codes] == [0, 0, 42, 42, 42]
    assert "CLUSTER_ACTION" in codes[2][1] and "TRANSACTIONAL_ID" in codes[3][1] and "host" in codes[4][1]
    assert broker.app.control.image.security.acls == {allow("User:x", "cluster", "cluster", "describe"),
                                                      allow("User:x", "cluster", "cluster", "write")}
    described = broker.kafka("User:root", 29, 3, resource_type_filter=4, pattern_type_filter=1, operation=1, permission_type=1)
    ((resource,),) = [described.resources]
    assert (resource.resource_type, resource.resource_name, sorted(a.operation for a in resource.acls)) == (4, "kafka-cluster", [4, 8])
    deleted = broker.kafka("User:root", 31, 3, filters=[{"resource_type_filter": 1, "pattern_type_filter": 1,
                                                         "principal_filter": "User:x", "operation": 8, "permission_type": 1}])
    assert [a.operation for a in deleted.filter_results[0].matching_acls] == [8]
    assert broker.app.control.image.security.acls == {allow("User:x", "cluster", "cluster", "write")}


def test_native_acl_requests_check_what_they_are_given(broker):
    bad = broker.native("User:root", "create_acls", acls=[{"principal": "alice", "resource_type": "topic", "name": "t",
                                                           "operation": "read"}])
    assert bad["error"] == ErrorCode.INVALID_REQUEST and "acls[0]" in bad["error_message"] and "principal" in bad["error_message"]
    bad = broker.native("User:root", "describe_acls", pattern="sideways")
    assert bad["error"] == ErrorCode.INVALID_REQUEST and "pattern" in bad["error_message"]
    assert not broker.app.control.image.security.acls
