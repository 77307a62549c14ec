"""The ACL authorizer (zbroker.security.acl): Kafka's rules over the image's ACL bindings."""

import pytest

from zbroker.config import SecurityConfig
from zbroker.context import RequestContext, broker_principal
from zbroker.control.security_meta import AclBinding, SecurityImage, acl_record, apply_security_record
from zbroker.security import CLUSTER, AllowAll, Operation, group, topic
from zbroker.security import acl as acl_module
from zbroker.security.acl import AclAuthorizer, build_authorizer

R, W, C, D, A, DESC, IW = (Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DELETE, Operation.ALTER,
                           Operation.DESCRIBE, Operation.IDEMPOTENT_WRITE)
SECURE = SecurityConfig(kafka_sasl=("SCRAM-SHA-256",), super_users=("User:root",))


def allow(principal, kind, name, operation="all", pattern="literal", host="*"):
    return AclBinding(principal, kind, name, pattern, operation, "allow", host)


def deny(principal, kind, name, operation="all", pattern="literal", host="*"):
    return AclBinding(principal, kind, name, pattern, operation, "deny", host)


class Acls:
    """A security image and an authorizer over it; bindings added through the records."""

    def __init__(self, *bindings):
        self.image = SecurityImage()
        self.authorizer = AclAuthorizer(SECURE, lambda: self.image)
        self.add(*bindings)

    def add(self, *bindings):
        for b in bindings:
            apply_security_record(self.image, acl_record(b))

    def remove(self, *bindings):
        for b in bindings:
            apply_security_record(self.image, acl_record(b, remove=True))

    def may(self, principal, operation, resource) -> bool:
        return self.authorizer.authorize(RequestContext(principal), operation, resource)


def test_no_acl_means_denied_and_security_off_allows_everything():
    acls = Acls()
    assert not acls.may("User:alice", R, topic("t"))
    assert not acls.may("User:ANONYMOUS", DESC, CLUSTER)
    assert isinstance(build_authorizer(SecurityConfig(), lambda: None), AllowAll)
    assert isinstance(build_authorizer(SECURE, lambda: SecurityImage()), AclAuthorizer)


def test_literal_prefixed_and_wildcard_names():
    acls = Acls(allow("User:alice", "topic", "orders", "read"),
                allow("User:alice", "topic", "logs-", "write", pattern="prefixed"),
                allow("User:bob", "topic", "*", "read"),
                allow("User:bob", "group", "app-", "read", pattern="prefixed"))
    assert acls.may("User:alice", R, topic("orders"))
    assert not acls.may("User:alice", R, topic("orders2"))  # literal is exact
    assert acls.may("User:alice", W, topic("logs-a")) and acls.may("User:alice", W, topic("logs-"))
    assert not acls.may("User:alice", W, topic("logs")) and not acls.may("User:alice", W, topic("xlogs-a"))
    assert acls.may("User:bob", R, topic("anything")) and not acls.may("User:bob", W, topic("anything"))
    assert acls.may("User:bob", R, group("app-1")) and not acls.may("User:bob", R, group("other"))
    assert acls.may("User:bob", R, topic("*"))  # "*" as a name is matched by the literal * too
    # a prefixed "*" is a prefix, not a wildcard
    acls.add(allow("User:carol", "topic", "*", "read", pattern="prefixed"))
    assert not acls.may("User:carol", R, topic("t")) and acls.may("User:carol", R, topic("*t"))


def test_deny_wins_over_any_allow():
    acls = Acls(allow("User:alice", "topic", "*", "all"), deny("User:alice", "topic", "secret-", "read", pattern="prefixed"))
    assert acls.may("User:alice", W, topic("secret-x"))  # only read is denied
    assert not acls.may("User:alice", R, topic("secret-x"))
    assert acls.may("User:alice", R, topic("public"))
    acls.add(deny("User:*", "topic", "public", "all"))
    assert not acls.may("User:alice", W, topic("public"))  # denied to everyone, alice too
    # deny of an implied operation does not deny the one that implies it, and vice versa
    acls = Acls(allow("User:a", "topic", "t", "read"), deny("User:a", "topic", "t", "describe"))
    assert acls.may("User:a", R, topic("t")) and not acls.may("User:a", DESC, topic("t"))


def test_the_wildcard_principal_matches_everyone():
    acls = Acls(allow("User:*", "topic", "shared", "read"))
    for who in ("User:alice", "User:ANONYMOUS", "Bridge:sensors"):
        assert acls.may(who, R, topic("shared"))
    assert not acls.may("User:alice", W, topic("shared"))


@pytest.mark.parametrize("granted, implied", [
    ("read", True), ("write", True), ("delete", True), ("alter", True), ("describe", True), ("all", True),
    ("create", False),
])
def test_describe_is_implied_by_read_write_delete_and_alter(granted, implied):
    acls = Acls(allow("User:a", "topic", "t", granted), allow("User:a", "group", "g", granted))
    assert acls.may("User:a", DESC, topic("t")) is implied
    assert acls.may("User:a", DESC, group("g")) is implied
    if granted not in ("all", "describe"):  # nothing implies more than itself
        others = {R, W, C, D, A} - {Operation(granted)}
        assert not any(acls.may("User:a", op, topic("t")) for op in others)


def test_all_grants_every_operation_but_cluster_action():
    acls = Acls(allow("User:a", "cluster", "cluster", "all"))
    for op in (R, W, C, D, A, DESC, IW):
        assert acls.may("User:a", op, CLUSTER)
    assert not acls.may("User:a", Operation.CLUSTER_ACTION, CLUSTER)


def test_super_users_may_do_everything_but_only_brokers_act_as_brokers():
    acls = Acls(deny("User:*", "topic", "*", "all"))
    assert acls.may("User:root", R, topic("t")) and acls.may("User:root", A, CLUSTER)
    assert not acls.may("User:root", Operation.CLUSTER_ACTION, CLUSTER)
    for broker in (broker_principal(2), "Broker:self"):
        assert acls.may(broker, Operation.CLUSTER_ACTION, CLUSTER) and acls.may(broker, W, topic("t"))
    assert not acls.may("User:Broker:1", Operation.CLUSTER_ACTION, CLUSTER)


def test_create_on_the_cluster_creates_any_topic_unless_the_topic_denies_it():
    acls = Acls(allow("User:a", "cluster", "cluster", "create"), deny("User:a", "topic", "no-", "create", pattern="prefixed"))
    assert acls.may("User:a", C, topic("anything"))
    assert not acls.may("User:a", C, topic("no-way"))
    assert not acls.may("User:a", DESC, topic("anything"))  # creating is not describing
    acls = Acls(allow("User:b", "topic", "mine", "create"))
    assert acls.may("User:b", C, topic("mine")) and not acls.may("User:b", C, topic("other"))


def test_idempotent_write_by_cluster_write_or_write_on_some_topic():
    assert Acls(allow("User:a", "cluster", "cluster", "write")).may("User:a", IW, CLUSTER)
    assert Acls(allow("User:a", "topic", "t", "write")).may("User:a", IW, CLUSTER)
    assert Acls(allow("User:a", "topic", "t-", "write", pattern="prefixed")).may("User:a", IW, CLUSTER)
    assert not Acls(allow("User:a", "topic", "t", "read")).may("User:a", IW, CLUSTER)
    # KIP-679: a write allowed only where a deny covers it grants nothing
    assert not Acls(allow("User:a", "topic", "t", "write"), deny("User:a", "topic", "t", "write")).may("User:a", IW, CLUSTER)
    assert not Acls(allow("User:a", "topic", "t-x", "write"),
                    deny("User:*", "topic", "t-", "write", pattern="prefixed")).may("User:a", IW, CLUSTER)
    assert not Acls(allow("User:a", "topic", "t", "write"), deny("User:a", "topic", "*", "all")).may("User:a", IW, CLUSTER)
    assert not Acls(allow("User:a", "topic", "t", "write"),
                    deny("User:a", "cluster", "cluster", "write")).may("User:a", IW, CLUSTER)


def test_a_host_other_than_any_never_allows_and_always_denies():
    acls = Acls(allow("User:a", "topic", "t", "read", host="10.0.0.1"))
    assert not acls.may("User:a", R, topic("t"))
    acls = Acls(allow("User:a", "topic", "t", "read"), deny("User:a", "topic", "t", "read", host="10.0.0.1"))
    assert not acls.may("User:a", R, topic("t"))


def test_decisions_are_cached_until_the_security_image_changes():
    acls = Acls(allow("User:a", "topic", "t", "read"))
    assert acls.may("User:a", R, topic("t"))
    built = acls.authorizer.index
    assert acls.may("User:a", R, topic("t")) and acls.authorizer.index is built  # no rebuild without a change
    acls.add(deny("User:a", "topic", "t", "read"))
    assert not acls.may("User:a", R, topic("t"))
    acls.remove(deny("User:a", "topic", "t", "read"))
    assert acls.may("User:a", R, topic("t"))
    acls.image.clear()  # a snapshot loaded in place of the image
    assert not acls.may("User:a", R, topic("t"))


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(acl_module, "MAX_CACHED", 10)
    acls = Acls(allow("User:a", "topic", "t-", "read", pattern="prefixed"))
    for i in range(25):
        assert acls.may("User:a", R, topic(f"t-{i}"))
        assert not acls.may("User:b", R, topic(f"t-{i}"))
    assert sum(len(d) for d in acls.authorizer._cache.values()) <= 10
    assert acls.authorizer.allowed_names(RequestContext("User:a"), R, topic("x").type, [f"t-{i}" for i in range(25)] + ["u"]) \
        == [f"t-{i}" for i in range(25)]
    assert sum(len(d) for d in acls.authorizer._cache.values()) <= 10
