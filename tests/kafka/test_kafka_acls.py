"""Kafka's ACL APIs (CreateAcls, DescribeAcls, DeleteAcls) against real admin clients:
confluent-kafka's AdminClient (librdkafka) and kafka-python's KafkaAdminClient, with
zbroker's own Admin and CLI seeing the same bindings."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

from clients import Admin
from support import run_cli

pytestmark = pytest.mark.timeout(90)

TIMEOUT_S = 20


def results(futures):
    return {key: future.result(timeout=TIMEOUT_S) for key, future in futures.items()}


def test_confluent_create_describe_delete_acls_round_trip(kbroker):
    client = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    read = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.READ,
                      AclPermissionType.ALLOW)
    deny = AclBinding(ResourceType.TOPIC, "logs-", ResourcePatternType.PREFIXED, "User:*", "*", AclOperation.WRITE,
                      AclPermissionType.DENY)
    group = AclBinding(ResourceType.GROUP, "app", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.READ,
                       AclPermissionType.ALLOW)
    results(client.create_acls([read, deny, group]))
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    described = client.describe_acls(everything).result(timeout=TIMEOUT_S)
    assert sorted(described, key=str) == sorted([read, deny, group], key=str)
    # MATCH: what applies to topic logs-app
    match = AclBindingFilter(ResourceType.TOPIC, "logs-app", ResourcePatternType.MATCH, None, None, AclOperation.ANY,
                             AclPermissionType.ANY)
    assert client.describe_acls(match).result(timeout=TIMEOUT_S) == [deny]
    # zbroker's own Admin sees the same bindings
    with Admin(kbroker.bootstrap) as admin:
        assert {(b.principal, b.resource_type, b.name, b.pattern, b.operation, b.permission) for b in admin.describe_acls()} == {
            ("User:alice", "topic", "orders", "literal", "read", "allow"),
            ("User:*", "topic", "logs-", "prefixed", "write", "deny"),
            ("User:alice", "group", "app", "literal", "read", "allow")}
    alice = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None, AclOperation.ANY,
                             AclPermissionType.ANY)
    deleted = results(client.delete_acls([alice]))
    assert sorted(deleted[alice], key=str) == sorted([read, group], key=str)
    assert client.describe_acls(everything).result(timeout=TIMEOUT_S) == [deny]
    assert "User:alice" not in run_cli("acl", "list", bootstrap=kbroker.bootstrap).stdout.decode()


def test_confluent_kafka_operations_without_an_equivalent_are_refused_by_name(kbroker):
    client = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    action = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, "User:a", "*",
                        AclOperation.CLUSTER_ACTION, AclPermissionType.ALLOW)
    configs = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, "User:a", "*",
                         AclOperation.DESCRIBE_CONFIGS, AclPermissionType.ALLOW)
    futures = client.create_acls([action, configs])
    with pytest.raises(KafkaException) as info:
        futures[action].result(timeout=TIMEOUT_S)
    assert "CLUSTER_ACTION" in str(info.value)
    futures[configs].result(timeout=TIMEOUT_S)  # stored as describe on the cluster
    with Admin(kbroker.bootstrap) as admin:
        assert [(b.resource_type, b.name, b.operation) for b in admin.describe_acls()] == [("cluster", "cluster", "describe")]


def test_kafka_python_admin_acls(kbroker):
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient,
                             ResourcePattern, ResourcePatternFilter)
    from kafka.admin import ResourceType as KResourceType

    client = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap, request_timeout_ms=10000)
    try:
        acl = ACL("User:bob", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                  ResourcePattern(KResourceType.TOPIC, "events", ACLResourcePatternType.LITERAL))
        created = client.create_acls([acl])
        assert created["failed"] == [] and len(created["succeeded"]) == 1
        found, error = client.describe_acls(ACLFilter("User:bob", None, ACLOperation.ANY, ACLPermissionType.ANY,
                                                      ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY)))
        assert [(a.principal, a.operation, a.resource_pattern.resource_name) for a in found] == [
            ("User:bob", ACLOperation.WRITE, "events")]
        deleted = client.delete_acls([ACLFilter("User:bob", None, ACLOperation.ANY, ACLPermissionType.ANY,
                                                ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY))])
        assert len(deleted[0][1]) == 1
    finally:
        client.close()
