"""The pure parts of CurveZMQ: broker keys from the cluster secret or the config, the client key
directory (scanned with time passed in), User-Ids and the principal each maps to."""

from __future__ import annotations

import os

import pytest
import zmq
import zmq.auth

from zbroker.config import ConfigError, parse_config
from zbroker.net.curve_keys import (
    FORCED_RESCAN_MS,
    RESCAN_MS,
    BrokerKeys,
    KeyDir,
    broker_keys,
    derive_broker_keypair,
    split_user_id,
    user_id,
)
from zbroker.net.zap import CLIENT, GOSSIP, PEER, ZapHandler

SECRET = "s" * 32


def config(tmp_path, security: str, brokers: str) -> object:
    import tomllib

    return parse_config(tomllib.loads(f"[security]\n{security}\n{brokers}"), "c.toml", base_dir=tmp_path)


def three(extra=lambda i: ""):
    return "".join(f"[[broker]]\nid = {i}\nport = {9000 + 10 * i}\ndata_dir = 'd{i}'\n{extra(i)}\n" for i in (1, 2, 3))


def test_derived_keys_are_a_curve_pair_one_per_broker_and_secret():
    public, secret = derive_broker_keypair(SECRET, 1)
    assert len(public) == len(secret) == 40 and zmq.curve_public(secret) == public
    assert derive_broker_keypair(SECRET, 1) == (public, secret)  # every broker derives the same
    assert derive_broker_keypair(SECRET, 2)[0] != public
    assert derive_broker_keypair("t" * 32, 1)[0] != public


def test_without_curve_every_brokers_key_comes_from_the_secret(tmp_path):
    keys = broker_keys(config(tmp_path, f'cluster_secret = "{SECRET}"', three()), 2)
    assert (keys.public, keys.secret) == derive_broker_keypair(SECRET, 2)
    assert keys.principal(derive_broker_keypair(SECRET, 3)[0]) == "Broker:3"
    assert keys.principal(zmq.curve_keypair()[0]) is None


def test_a_cluster_without_a_secret_or_keys_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="security.cluster_secret: missing"):
        broker_keys(config(tmp_path, "", three()), 1)
    single = broker_keys(config(tmp_path, "", "[[broker]]\nid = 1\n"), 1)  # a single broker needs none
    assert single.principal(single.public) == "Broker:1"


def test_with_curve_each_broker_has_its_own_pair_and_knows_the_others_public_keys(tmp_path):
    pairs = {}
    for i in (1, 2, 3):
        _, secret_file = zmq.auth.create_certificates(str(tmp_path), f"broker{i}")
        pairs[i] = zmq.auth.load_certificate(secret_file)
    entries = three(lambda i: f"secret_key_file = 'broker{i}.key_secret'\npublic_key = '{pairs[i][0].decode()}'\n")
    keys = broker_keys(config(tmp_path, "curve = true\nauthorized_keys_dir = 'clients'", entries), 3)
    assert (keys.public, keys.secret) == pairs[3]
    assert keys.principal(pairs[1][0]) == "Broker:1" and keys.principal(pairs[2][0].decode()) == "Broker:2"

    wrong = three(lambda i: f"secret_key_file = 'broker{i}.key_secret'\npublic_key = '{pairs[1][0].decode()}'\n")
    with pytest.raises(ConfigError, match=r"broker\[1\].public_key: does not match"):
        broker_keys(config(tmp_path, "curve = true\nauthorized_keys_dir = 'clients'", wrong), 2)
    public_only = three(lambda i: f"secret_key_file = 'broker{i}.key'\npublic_key = '{pairs[i][0].decode()}'\n")
    with pytest.raises(ConfigError, match="holds no secret key"):
        broker_keys(config(tmp_path, "curve = true\nauthorized_keys_dir = 'clients'", public_only), 1)


def test_user_ids_carry_the_principal_and_the_key():
    key = zmq.curve_keypair()[0]
    assert split_user_id(user_id("User:alice", key)) == ("User:alice", key.decode())
    for junk in (None, "", "anonymous", "User:alice short", " " + key.decode()):
        assert split_user_id(junk) is None


def write_key(folder, name) -> bytes:
    public_file, _ = zmq.auth.create_certificates(str(folder), name)
    return zmq.auth.load_certificate(public_file)[0]


def test_the_key_directory_maps_each_key_file_to_its_name(tmp_path):
    keys = tmp_path / "clients"
    keys.mkdir()
    alice, bob = write_key(keys, "alice"), write_key(keys, "bob")
    os.remove(keys / "alice.key_secret")
    (keys / "notes.txt").write_text("not a key")
    (keys / "broken.key").write_text("public-key = nonsense")
    (keys / "bad name!.key").write_bytes((keys / "bob.key").read_bytes().replace(bob, zmq.curve_keypair()[0]))
    d = KeyDir(str(keys))
    assert d.principal(alice, 0) == "User:alice" and d.principal(bob.decode(), 0) == "User:bob"
    assert len(d.keys) == 2  # the rest skipped


def test_keys_added_and_removed_are_seen_at_the_next_scan_and_an_unknown_key_forces_one(tmp_path):
    d = KeyDir(str(tmp_path))
    assert d.principal(b"x" * 40, 0) is None
    carol = write_key(tmp_path, "carol")
    assert d.principal(carol, RESCAN_MS - 1) is None  # not rescanned yet
    assert d.admit(carol, RESCAN_MS - 1) == "User:carol"  # an unknown key: the directory changed, rescan
    os.remove(tmp_path / "carol.key")
    assert d.principal(carol, RESCAN_MS) == "User:carol"
    assert d.principal(carol, 2 * RESCAN_MS) is None  # a second later it is gone
    assert not d.refresh(2 * RESCAN_MS + FORCED_RESCAN_MS - 1, force=True)  # nothing changed: no forced rescan yet
    assert d.refresh(2 * RESCAN_MS + FORCED_RESCAN_MS, force=True)


def test_a_replaced_key_stops_the_old_one_and_one_key_under_two_names_admits_neither(tmp_path):
    d = KeyDir(str(tmp_path))
    old = write_key(tmp_path, "dave")
    assert d.principal(old, 0) == "User:dave"
    os.remove(tmp_path / "dave.key")
    new = write_key(tmp_path, "dave")
    assert d.principal(new, RESCAN_MS) == "User:dave" and d.principal(old, RESCAN_MS) is None
    (tmp_path / "dave2.key").write_bytes((tmp_path / "dave.key").read_bytes())
    assert d.principal(new, 2 * RESCAN_MS) is None


def test_a_missing_directory_admits_nobody(tmp_path):
    assert KeyDir(str(tmp_path / "nowhere")).principal(b"k" * 40, 0) is None


def test_the_zap_handler_maps_keys_per_domain_and_checks_each_message_against_the_live_keys(tmp_path):
    now = [0]
    brokers = BrokerKeys(1, *derive_broker_keypair(SECRET, 1), {i: derive_broker_keypair(SECRET, i)[0] for i in (1, 2)})
    clients = KeyDir(str(tmp_path))
    erin = write_key(tmp_path, "erin")
    zap = ZapHandler(zmq.Context.instance(), brokers, clients, lambda: now[0])  # no socket until start()
    broker2 = derive_broker_keypair(SECRET, 2)[0]

    def admitted(domain, key):
        ok = zap.credentials_providers[domain].callback(domain, key)
        return zap.curve_user_id(key) if ok else None

    assert admitted(PEER, broker2) == user_id("Broker:2", broker2)
    assert admitted(GOSSIP, broker2) == user_id("Broker:2", broker2)
    assert admitted(PEER, erin) is None  # a client key never gets in on peer_port or gossip
    assert admitted(CLIENT, broker2) is None  # nor a broker key on the client port: its principal is no User
    erin_id = admitted(CLIENT, erin)
    assert erin_id == user_id("User:erin", erin)
    assert zap.principal(CLIENT, erin_id) == "User:erin"
    assert zap.principal(PEER, erin_id) is None and zap.principal(CLIENT, user_id("Broker:2", broker2)) is None
    assert zap.principal(CLIENT, user_id("User:mallory", erin)) is None  # the User-Id must match the live map
    os.remove(tmp_path / "erin.key")
    now[0] = RESCAN_MS
    assert zap.principal(CLIENT, erin_id) is None  # removed: its open connection stops too
