"""CurveZMQ on a real 3-broker cluster (``[security] curve = true``): clients with a key in
authorized_keys_dir produce and consume, the CLI and the environment variables carry the keys,
keys added or removed take effect without a restart, clients without an admitted key fail at
once, a client key can send no broker-to-broker request on either port, and the cluster
survives the loss of a leader."""

from __future__ import annotations

import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from clients.acls import AclBinding
from support import ClusterProcesses, RawClient, key_pair, run_cli, running_cluster, wait_until
from zbroker.errors import AuthenticationError, ZBrokerError

pytestmark = pytest.mark.timeout(120)

NOT_A_BROKER = 31  # CLUSTER_AUTHORIZATION_FAILED


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("curve"), replication_factor=3, min_insync_replicas=2, curve=True)


def clients():
    from clients import Admin, Consumer, Producer

    return Admin, Consumer, Producer


def produce(c: ClusterProcesses, topic: str, values: list[bytes], **options) -> list:
    _, _, Producer = clients()
    with Producer(bootstrap=c.bootstrap, acks="all", request_timeout_ms=10_000, **options) as producer:
        futures = [producer.send(topic, value=v) for v in values]
        return [f.result(timeout=30) for f in futures]


def consume(c: ClusterProcesses, topic: str, count: int, **options) -> list[bytes]:
    _, Consumer, _ = clients()
    seen: list[bytes] = []
    with Consumer(topic, bootstrap=c.bootstrap, auto_offset_reset="earliest", **options) as consumer:
        deadline = time.monotonic() + 30
        while len(seen) < count and time.monotonic() < deadline:
            seen += [r.value for r in consumer.poll(timeout_ms=500)]
    return seen


def test_a_client_with_a_key_produces_acks_all_and_consumes_learning_every_brokers_key(cluster):
    c = cluster
    Admin, _, _ = clients()
    with Admin(bootstrap=c.brokers[1].bootstrap, **c.client_options()) as admin:
        admin.create_topic("spread", partitions=6, replication_factor=3)
        brokers = {b.id for b in admin.describe_cluster().brokers}
        leaders = {p.leader for p in admin.describe_topic("spread").partitions}
    assert brokers == {1, 2, 3} and len(leaders) > 1  # leaders on brokers whose key the client got from metadata
    values = [b"r%d" % i for i in range(300)]
    produce(c, "spread", values, **c.client_options())
    assert sorted(consume(c, "spread", 300, **c.client_options())) == sorted(values)


def test_a_client_key_can_send_no_broker_to_broker_request_on_either_port(cluster):
    c = cluster
    _, public, secret = c.client_keys["admin"]
    spec = [{"topic": "spread", "partition": 0, "offset": 0}]
    asks = [("fetch", {"replica_id": 2, "max_wait_ms": 0, "partitions": spec}),
            ("raft_vote", {"from": 2, "epoch": 10_000, "last_epoch": 10_000, "end_offset": 10_000}),
            ("alter_isr", {"topic": "spread", "partition": 0, "leader": 1, "leader_epoch": 0, "isr": [1]}),
            ("alter_security", {"records": [{"type": "acl", "principal": "User:admin"}]}),
            ("create_internal_topic", {"topic": "__evil", "partitions": 1, "replication_factor": 1, "config": {}})]
    for i, broker in c.brokers.items():
        front = RawClient(broker.bootstrap, curve=broker.curve, identity=b"zb-broker-2")
        back = RawClient(f"127.0.0.1:{broker.peer_port}", curve=(public, secret, c.broker_publics[i]), identity=b"zb-broker-2")
        monitor = back.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            for kind, fields in asks:
                header, _ = front.call(kind, **fields)
                assert header["error"] == NOT_A_BROKER, (kind, header)
            assert monitor.poll(5000), "no handshake result on peer_port"
            assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            for kind, fields in asks:  # queued on a connection whose handshake never completes, or refused at once
                try:
                    back.send({"type": kind, **fields}, flags=zmq.DONTWAIT)
                except zmq.Again:
                    pass
            assert not back.sock.poll(1000), "a client key got an answer on peer_port"
        finally:
            back.sock.disable_monitor()
            monitor.close(linger=0)
            front.close()
            back.close()
    assert c.agreed_controller()[1] < 10_000
    assert all(t["topic"] != "__evil" for t in c.metadata(1)["topics"])


@pytest.mark.parametrize("how", ["no key", "unknown key", "wrong server key"])
def test_a_client_without_an_admitted_key_fails_clearly_and_at_once(cluster, tmp_path, how):
    c = cluster
    if how == "no key":
        options = {}
    elif how == "unknown key":
        secret_file, _, _ = key_pair(tmp_path, "stranger")
        options = {"curve_secret_key_file": str(secret_file), "curve_server_key": c.broker_publics[1].decode()}
    else:
        options = {"curve_secret_key_file": str(c.client_keys["admin"][0]), "curve_server_key": zmq.curve_keypair()[0].decode()}
    _, _, Producer = clients()
    started = time.monotonic()
    with Producer(bootstrap=c.brokers[1].bootstrap, acks="all", request_timeout_ms=30_000, **options) as producer:
        with pytest.raises(AuthenticationError) as failure:
            producer.send("spread", value=b"x").result(timeout=60)
    assert time.monotonic() - started < 15  # not the request timeout: the refused handshake fails it
    assert "CURVE handshake" in str(failure.value)


def test_a_key_added_works_without_a_restart_and_a_removed_one_stops_on_its_open_connection(cluster):
    c = cluster
    Admin, _, _ = clients()
    c.add_client_key("late")
    with Admin(bootstrap=c.bootstrap, **c.client_options()) as admin:  # the key's principal is what ACLs name
        admin.create_acls([AclBinding("User:late", "topic", "spread", operation="describe")])
    options = c.client_options("late")
    with Admin(bootstrap=c.brokers[1].bootstrap, request_timeout_ms=10_000, **options) as admin:
        assert "spread" in admin.list_topics()
        (c.clients_dir / "late.key").unlink()

        def refused():
            try:
                admin.list_topics()
            except ZBrokerError as exc:
                return exc
            return None

        error = wait_until(refused, timeout=10, interval=0.2, what="the removed key to stop working")
        assert error.code == 58  # SASL_AUTHENTICATION_FAILED: the open connection's key is gone
    with Admin(bootstrap=c.brokers[1].bootstrap, request_timeout_ms=10_000, **options) as admin:
        with pytest.raises(AuthenticationError):  # and a new connection's handshake is refused
            admin.list_topics()


def test_the_cli_takes_the_curve_options_and_the_python_client_the_environment(cluster, monkeypatch):
    c = cluster
    secret_file, server_key = c.client_options()["curve_secret_key_file"], c.client_options()["curve_server_key"]
    keys = ["--curve-secret-key-file", secret_file, "--curve-server-key", server_key]
    made = run_cli("--bootstrap", c.bootstrap, *keys, "topics", "create", "cli-curve", "--partitions", "1")
    assert made.returncode == 0, made.stderr
    sent = run_cli("--bootstrap", c.bootstrap, *keys, "produce", "cli-curve", "--acks", "all", input=b"a\nb\nc\n")
    assert sent.returncode == 0, sent.stderr
    got = run_cli("--bootstrap", c.bootstrap, *keys, "consume", "cli-curve", "--from-beginning", "--max-messages", "3",
                  "--timeout-ms", "10000")
    assert got.returncode == 0 and got.stdout.split() == [b"a", b"b", b"c"], got.stderr
    refused = run_cli("--bootstrap", c.bootstrap, "topics", "list")
    assert refused.returncode == 1 and "CURVE handshake" in refused.stderr.decode()
    status = run_cli("cluster", "status", str(c.config))  # asks on peer_port with the brokers' own keys
    assert status.returncode == 0, status.stdout + status.stderr

    monkeypatch.setenv("ZBROKER_CURVE_SECRET_KEY_FILE", secret_file)
    monkeypatch.setenv("ZBROKER_CURVE_SERVER_KEY", str(c.keys_dir / "broker1.key"))  # a key file works as well as Z85
    produce(c, "cli-curve", [b"d"])
    assert consume(c, "cli-curve", 4) == [b"a", b"b", b"c", b"d"]


def test_the_curve_cluster_survives_the_kill_of_a_leader(cluster):
    c = cluster
    Admin, _, _ = clients()
    with Admin(bootstrap=c.bootstrap, **c.client_options()) as admin:
        admin.create_topic("durable", partitions=1, replication_factor=3)
        leader = wait_until(lambda: admin.describe_topic("durable").partitions[0].leader, timeout=15, what="a leader")
    before = [b"a%d" % i for i in range(100)]
    produce(c, "durable", before, **c.client_options())
    c.brokers[leader].kill()
    survivor = next(i for i in c.brokers if i != leader)
    after = [b"b%d" % i for i in range(100)]
    produce(c, "durable", after, **c.client_options(broker_id=survivor))
    got = consume(c, "durable", 200, **c.client_options(broker_id=survivor))
    assert got == before + after, (leader, survivor, len(got), got[:3], got[-3:])


def test_a_single_curve_broker_admits_only_keyed_clients(tmp_path):
    from support import BrokerProcess, free_port

    secret_file, public, _ = key_pair(tmp_path / "keys", "broker1")
    client_file, client_public, client_secret = key_pair(tmp_path / "keys", "solo")
    (tmp_path / "clients").mkdir()
    (tmp_path / "keys" / "solo.key").replace(tmp_path / "clients" / "solo.key")
    config = tmp_path / "single.toml"
    port = free_port()
    config.write_text(f'[security]\ncurve = true\nauthorized_keys_dir = "clients"\nsuper_users = ["User:solo"]\n\n[[broker]]\nid = 1\nport = {port}\n'
                      f'data_dir = "data"\nsecret_key_file = "{secret_file}"\npublic_key = "{public.decode()}"\n')
    broker = BrokerProcess(tmp_path / "data", port=port, config=config)
    broker.use_config_only = True
    broker.curve = (client_public, client_secret, public)
    broker.start()
    try:
        plain = RawClient(broker.bootstrap)
        try:
            plain.send({"type": "metadata"})
            assert not plain.sock.poll(1000)  # no key: the handshake never completes, nothing is answered
        finally:
            plain.close()
        options = {"curve_secret_key_file": str(client_file), "curve_server_key": public.decode()}
        assert [r.offset for r in produce_single(broker.bootstrap, options)] == [0]
    finally:
        broker.close()


def produce_single(bootstrap: str, options: dict) -> list:
    _, _, Producer = clients()
    with Producer(bootstrap=bootstrap, acks=1, **options) as producer:
        return [producer.send("solo", value=b"x").result(timeout=30)]
