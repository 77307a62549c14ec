"""The native users requests (upsert_user, remove_user, list_users) through a BrokerNode: what
reaches the metadata image, what is refused and named, what the authorizer is asked --
frames and ``now`` in, outbox out."""

from __future__ import annotations

import msgpack
import pytest
import scramp

from zbroker.config import single_node_config
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.sasl import verify_plain
from zbroker.node import BrokerNode

pytestmark = pytest.mark.timeout(60)

NOW = 1_000
CLIENT = b"\x00client"


def credential(mechanism: str, password: str = "pw", iterations: int = 4096) -> dict:
    salt, stored, server, count = scramp.ScramMechanism(mechanism).make_auth_info(password, iteration_count=iterations)
    return {"mechanism": mechanism, "salt": salt, "iterations": count, "stored_key": stored, "server_key": server}


class Asked:
    def __init__(self):
        self.asked = []

    def authorize(self, ctx, operation, resource):
        self.asked.append((operation.value, resource.type.value))
        return True


@pytest.fixture
def node(tmp_path):
    node = BrokerNode(single_node_config(str(tmp_path / "d")), 1, NOW, authorizer=Asked())
    yield node
    node.close(NOW)


def call(node: BrokerNode, kind: str, **fields) -> dict:
    node.handle(CLIENT, [msgpack.packb({"v": 1, "type": kind, "cid": 7, **fields})], NOW)
    for _ in range(20):  # an admin change is answered once committed
        if node.outbox:
            break
        node.tick(NOW)
    ((_conn, frames),) = node.outbox
    node.outbox.clear()
    return msgpack.unpackb(frames[0])


def test_upsert_sets_the_users_credentials_and_replaces_old_ones(node):
    assert call(node, "upsert_user", user="alice", credentials=[credential("SCRAM-SHA-256"),
                                                                 credential("SCRAM-SHA-512")])["error"] == 0
    users = node.app.control.image.security.users
    assert set(users["alice"]) == {"SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert verify_plain(users["alice"]["SCRAM-SHA-512"], "pw")
    assert call(node, "upsert_user", user="alice", credentials=[credential("SCRAM-SHA-512", "new")])["error"] == 0
    assert set(users["alice"]) == {"SCRAM-SHA-512"}  # the set replaces the old one, mechanisms and all
    assert verify_plain(users["alice"]["SCRAM-SHA-512"], "new")


def test_list_shows_names_mechanisms_and_iterations_never_keys(node):
    call(node, "upsert_user", user="bob", credentials=[credential("SCRAM-SHA-256", iterations=8192)])
    call(node, "upsert_user", user="alice", credentials=[credential("SCRAM-SHA-512")])
    answer = call(node, "list_users")
    assert answer["users"] == [{"user": "alice", "mechanisms": [{"mechanism": "SCRAM-SHA-512", "iterations": 4096}]},
                               {"user": "bob", "mechanisms": [{"mechanism": "SCRAM-SHA-256", "iterations": 8192}]}]


def test_remove_takes_every_credential_and_an_unknown_user_is_not_found(node):
    call(node, "upsert_user", user="alice", credentials=[credential("SCRAM-SHA-256")])
    assert call(node, "remove_user", user="alice")["error"] == 0
    assert "alice" not in node.app.control.image.security.users
    answer = call(node, "remove_user", user="alice")
    assert answer["error"] == ErrorCode.RESOURCE_NOT_FOUND and answer["error_message"] == "no user 'alice'"


@pytest.mark.parametrize("fields, message", [
    ({"user": ".hidden", "credentials": [credential("SCRAM-SHA-256")]}, "is not a user name"),
    ({"user": "a,b", "credentials": [credential("SCRAM-SHA-256")]}, "is not a user name"),
    ({"user": "x" * 129, "credentials": [credential("SCRAM-SHA-256")]}, "over the cap of 128"),
    ({"user": "alice", "credentials": []}, "at least one"),
    ({"user": "alice", "credentials": [credential("SCRAM-SHA-256")] * 2}, "repeats mechanism"),
    ({"user": "alice", "credentials": [{**credential("SCRAM-SHA-256"), "iterations": 100}]},
     "credentials[0]: iterations must be an integer from 4096"),
    ({"user": "alice", "credentials": [{**credential("SCRAM-SHA-256"), "mechanism": "PLAIN"}]},
     "credentials[0]: mechanism must be one of SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"user": "alice", "credentials": [{**credential("SCRAM-SHA-256"), "stored_key": b"short"}]},
     "credentials[0]: stored_key must be 32 to 32 bytes"),
    ({"user": "alice", "credentials": [{**credential("SCRAM-SHA-256"), "salt": "text"}]}, "must be bytes"),
])
def test_bad_names_and_credentials_are_refused_naming_what_is_wrong(node, fields, message):
    answer = call(node, "upsert_user", **fields)
    assert answer["error"] == ErrorCode.INVALID_REQUEST and message in answer["error_message"]
    assert node.app.control.image.security.users == {}


def test_changing_users_asks_for_alter_and_listing_for_describe_on_the_cluster(node):
    asked = node.router.authorizer.asked
    call(node, "upsert_user", user="alice", credentials=[credential("SCRAM-SHA-256")])
    call(node, "list_users")
    call(node, "remove_user", user="alice")
    assert asked == [("alter", "cluster"), ("describe", "cluster"), ("alter", "cluster")]
