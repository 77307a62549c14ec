"""Issue 12's three attacks on a 3-broker cluster, each failing to do harm: a client poses as a
broker with a broker's routing id (on the client port) or with a key of its own (on the
inter-broker port), with security off (brokers know each other by the cluster secret) and with
CurveZMQ on (the attacker holds a valid client key).

- (a) spoofed follower fetches while the real followers are stopped: acks=all produces are not
  acknowledged, and nothing acknowledged is lost when the leader is then killed;
- (b) ten spoofed ``raft_begin_epoch`` messages leave the controller and its epoch unchanged;
- (c) a spoofed ``raft_fetch_response`` carrying a ``remove_topic`` record deletes nothing.
"""

from __future__ import annotations

import os
import signal
import struct
import time

import msgpack
import pytest
import zmq

from storage.batch import build_native_batch
from support import ClusterProcesses, RawClient, running_cluster, wait_until
from zbroker.net.curve_keys import derive_broker_keypair

pytestmark = pytest.mark.timeout(150)

NOT_A_BROKER = 31  # CLUSTER_AUTHORIZATION_FAILED


@pytest.fixture(params=["cluster_secret", "curve"])
def cluster(request, tmp_path):
    yield from running_cluster(tmp_path / "c", replication_factor=3, min_insync_replicas=2, replica_lag_ms=1500,
                               curve=request.param == "curve")


class Attacker:
    """Sends broker-to-broker messages as broker ``pose_as``: on every broker's client port with
    that broker's routing id (and, with curve, a valid client key), and on every broker's
    peer_port with a CURVE key of its own."""

    def __init__(self, c: ClusterProcesses, pose_as: int) -> None:
        identity = b"zb-broker-%d" % pose_as
        self.front = {i: RawClient(b.bootstrap, curve=b.curve, identity=identity) for i, b in c.brokers.items()}
        public, secret = zmq.curve_keypair()
        # the worst case: it knows each broker's public key (derived from the secret, or in the config)
        servers = c.broker_publics if c.curve else {i: derive_broker_keypair(c.secret, i)[0] for i in c.brokers}
        self.back = {i: RawClient(f"127.0.0.1:{b.peer_port}", identity=identity, curve=(public, secret, servers[i]))
                     for i, b in c.brokers.items()}
        self.refused = 0
        self.undelivered = 0

    def send(self, broker: int, header: dict, *payloads: bytes) -> None:
        self.front[broker].send(header, *payloads)
        try:  # a DEALER with no connection made would block: this one's handshake never completes
            self.back[broker].send(header, *payloads, flags=zmq.DONTWAIT)
        except zmq.Again:
            self.undelivered += 1

    def check_answers(self) -> None:
        """Every answer on a client port is CLUSTER_AUTHORIZATION_FAILED; nothing comes back on a
        peer_port (the handshake is refused, so nothing was delivered)."""
        for client in self.front.values():
            while client.sock.poll(0):
                header, _ = client.recv()
                assert header["error"] == NOT_A_BROKER, header
                self.refused += 1
        for client in self.back.values():
            assert not client.sock.poll(200), "a client key got an answer on peer_port"

    def close(self) -> None:
        for client in [*self.front.values(), *self.back.values()]:
            client.close()


def admin(c: ClusterProcesses):
    from clients import Admin

    return Admin(bootstrap=c.bootstrap, request_timeout_ms=20_000, **c.client_options())


def partition_meta(c: ClusterProcesses, topic: str, via: int | None = None) -> dict | None:
    for i in ([via] if via else c.brokers):
        if c.brokers[i].alive():
            meta = c.metadata(i)
            for t in (meta or {}).get("topics", []):
                if t["topic"] == topic and t["partitions"]:
                    return t["partitions"][0]
    return None


def create(c: ClusterProcesses, topic: str) -> dict:
    with admin(c) as a:
        a.create_topic(topic, partitions=1, replication_factor=3)
    p = wait_until(lambda: (p := partition_meta(c, topic)) and p["leader"] > 0 and len(p["isr"]) == 3 and p,
                   timeout=15, what="a full ISR")
    return wait_until(lambda: (q := partition_meta(c, topic, via=p["leader"])) and q["leader"] == p["leader"] and q,
                      timeout=15, what="the leader to know it leads")


def produce_request(topic: str, values: list[bytes]) -> tuple[dict, bytes]:
    batch = build_native_batch([(1, None, v, None) for v in values])
    return {"type": "produce", "acks": -1, "timeout_ms": 4000, "batches": [{"topic": topic, "partition": 0}]}, batch


def read_all(c: ClusterProcesses, broker: int, topic: str) -> list[bytes]:
    from clients import Consumer

    with Consumer(bootstrap=c.brokers[broker].bootstrap, auto_offset_reset="earliest", **c.client_options(broker_id=broker)) as consumer:
        consumer.assign([(topic, 0)])
        seen: list[bytes] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            seen += [r.value for r in batch]
            if not batch and seen:
                break
        return seen


def test_a_client_posing_as_the_followers_gets_no_acks_all_write_acknowledged(cluster):
    c = cluster
    p = create(c, "orders")
    leader, followers = p["leader"], [r for r in p["replicas"] if r != p["leader"]]
    writer = c.brokers[leader].raw_client()
    try:
        header, batch = produce_request("orders", [b"v%d" % i for i in range(20)])
        header, _ = writer.call(header.pop("type"), (batch,), timeout=15, **header)
        assert header["results"][0]["error"] == 0
        acknowledged = [b"v%d" % i for i in range(20)]

        for f in followers:
            os.kill(c.brokers[f].proc.pid, signal.SIGSTOP)
        attackers = [Attacker(c, f) for f in followers]
        try:
            sent = []
            for k in range(6):  # 60 records, 10 a request, all in flight at once
                header, batch = produce_request("orders", [b"w%d" % (10 * k + i) for i in range(10)])
                sent.append(writer.send(header, batch))
            deadline = time.monotonic() + 5
            offset = 20
            while time.monotonic() < deadline:  # the old attack: fetch ever further to move the high watermark
                for attacker, f in zip(attackers, followers):
                    attacker.send(leader, {"type": "fetch", "replica_id": f, "max_wait_ms": 0, "min_bytes": 1,
                                           "partitions": [{"topic": "orders", "partition": 0, "offset": offset}]})
                offset = min(offset + 5, 80)
                time.sleep(0.05)
            for attacker in attackers:
                attacker.check_answers()
            assert sum(a.refused for a in attackers) > 0
            answers = {}
            while len(answers) < len(sent):
                header, _ = writer.recv(timeout=15)
                answers[header["cid"]] = header["results"][0]["error"] if not header["error"] else header["error"]
            assert all(code != 0 for code in answers.values()), answers  # NOT_ENOUGH_REPLICAS or REQUEST_TIMED_OUT
        finally:
            for attacker in attackers:
                attacker.close()
    finally:
        writer.close()

    c.brokers[leader].kill()
    for f in followers:
        os.kill(c.brokers[f].proc.pid, signal.SIGCONT)
    new = wait_until(lambda: (q := partition_meta(c, "orders")) and q["leader"] in followers and q, timeout=30,
                     what="a new leader")
    values = read_all(c, new["leader"], "orders")
    assert values[:20] == acknowledged  # every acknowledged record survived


def test_ten_spoofed_begin_epochs_leave_the_controller_and_its_epoch_alone(cluster):
    c = cluster
    before = wait_until(c.agreed_controller, timeout=15, what="a controller")
    controller, epoch = before
    pretender = next(i for i in c.brokers if i != controller)
    attacker = Attacker(c, pretender)
    try:
        for k in range(10):
            for i in c.brokers:
                attacker.send(i, {"type": "raft_begin_epoch", "cid": 0, "from": pretender, "epoch": epoch + 1000 * (k + 1),
                                  "leader": pretender})
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert c.controllers() == {i: before for i in c.brokers}
            time.sleep(0.1)
        attacker.check_answers()
        assert attacker.refused == 10 * len(c.brokers)
    finally:
        attacker.close()


def remove_topic_batch(offset: int, epoch: int, topic: str) -> bytes:
    batch = bytearray(build_native_batch([(int(time.time() * 1000), None, msgpack.packb({"type": "remove_topic", "name": topic}), None)]))
    struct.pack_into(">q", batch, 0, offset)  # base_offset and partition_leader_epoch: outside the CRC, as in Kafka
    struct.pack_into(">i", batch, 12, epoch)
    return bytes(batch)


def test_a_spoofed_raft_fetch_response_removing_a_topic_deletes_nothing(cluster):
    c = cluster
    create(c, "victim")
    writer = c.brokers[partition_meta(c, "victim")["leader"]].raw_client()
    try:
        header, batch = produce_request("victim", [b"keep%d" % i for i in range(10)])
        header, _ = writer.call(header.pop("type"), (batch,), timeout=15, **header)
        assert header["results"][0]["error"] == 0
    finally:
        writer.close()
    controller, epoch = wait_until(c.agreed_controller, timeout=15, what="a controller")
    attacker = Attacker(c, controller)
    try:
        for offset in range(0, 200):  # one of them is each follower's metadata log end
            for i in c.brokers:
                if i != controller:
                    attacker.send(i, {"type": "raft_fetch_response", "cid": 0, "from": controller, "epoch": epoch,
                                      "leader": controller, "offset": offset, "last_fetched_epoch": epoch,
                                      "high_watermark": offset + 1}, remove_topic_batch(offset, epoch, "victim"))
        time.sleep(1.0)  # give a (wrongly) accepted record time to be applied
        attacker.check_answers()
        assert attacker.refused == 200 * (len(c.brokers) - 1)
    finally:
        attacker.close()
    for i in c.brokers:
        assert partition_meta(c, "victim", via=i) is not None, f"broker {i} lost the topic"
        assert (c.root / f"b{i}" / "victim-0").is_dir(), f"broker {i} deleted the topic's data"
    assert read_all(c, partition_meta(c, "victim")["leader"], "victim") == [b"keep%d" % k for k in range(10)]
