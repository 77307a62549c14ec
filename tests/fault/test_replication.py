"""Replication on 3 real brokers: identical replicas, ISR shrink/expand, high watermark, acks=all."""

from __future__ import annotations

import os
import signal

import pytest

from storage.batch import build_native_batch
from support import ClusterProcesses, RawClient, running_cluster, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path / "c", replication_factor=3, min_insync_replicas=2, replica_lag_ms=1500)


def partition_meta(c: ClusterProcesses, topic: str, partition: int = 0, via: int | None = None) -> dict:
    for i in ([via] if via else c.brokers):
        if c.brokers[i].alive():
            meta = c.metadata(i)
            if meta:
                for t in meta["topics"]:
                    if t["topic"] == topic:
                        return t["partitions"][partition]
    raise AssertionError("no broker answered")


def create(c: ClusterProcesses, topic: str, **config) -> dict:
    from clients import Admin

    with Admin(bootstrap=c.bootstrap, request_timeout_ms=20_000) as a:
        a.create_topic(topic, partitions=1, replication_factor=3, config=config)
    p = wait_until(lambda: (p := partition_meta(c, topic)) and p["leader"] > 0 and len(p["isr"]) == 3 and p,
                   timeout=15, what="a full ISR")
    # the leader applies the metadata on its own schedule: produce to it only once it knows it leads
    # (a produce sent before got UNKNOWN_TOPIC_OR_PARTITION or NOT_LEADER_OR_FOLLOWER under load)
    return wait_until(lambda: (q := partition_meta(c, topic, via=p["leader"])) and q["leader"] == p["leader"]
                      and len(q["isr"]) == 3 and q, timeout=15, what="the leader to know it leads")


def produce(c: ClusterProcesses, broker: int, topic: str, n: int, acks: int, start: int = 0) -> dict:
    client = RawClient(c.brokers[broker].bootstrap)
    try:
        batch = build_native_batch([(1, None, b"v%d" % (start + i), None) for i in range(n)])
        header, _ = client.call("produce", (batch,), timeout=15, acks=acks, timeout_ms=5000,
                                batches=[{"topic": topic, "partition": 0}])
        return header["results"][0]
    finally:
        client.close()


def high_watermark(c: ClusterProcesses, leader: int, topic: str) -> int:
    client = RawClient(c.brokers[leader].bootstrap)
    try:
        header, _ = client.call("list_offsets", partitions=[{"topic": topic, "partition": 0, "timestamp": -1}])
        return header["partitions"][0]["offset"]
    finally:
        client.close()


def test_acks_all_replicates_to_every_replica_byte_for_byte(cluster):
    p = create(cluster, "r")
    for k in range(5):
        assert produce(cluster, p["leader"], "r", 100, acks=-1, start=100 * k)["error"] == 0
    assert high_watermark(cluster, p["leader"], "r") == 500
    for b in cluster.brokers.values():
        b.stop()  # clean stop: every replica flushed
    logs = [sorted((b.data_dir / "r-0").glob("*.log")) for b in cluster.brokers.values()]
    contents = [b"".join(path.read_bytes() for path in paths) for paths in logs]
    assert contents[0] and contents[0] == contents[1] == contents[2]


def test_a_stopped_follower_holds_the_high_watermark_until_it_leaves_the_isr(cluster):
    p = create(cluster, "h", min_insync_replicas=3)
    leader = p["leader"]
    controller = cluster.agreed_controller()[0]
    # stop a follower that is not the controller: the other two keep the metadata quorum
    victim = next(r for r in p["replicas"] if r not in (leader, controller))
    assert produce(cluster, leader, "h", 10, acks=-1)["error"] == 0
    os.kill(cluster.brokers[victim].proc.pid, signal.SIGSTOP)
    try:
        result = produce(cluster, leader, "h", 10, acks=1, start=10)
        assert result["error"] == 0 and result["base_offset"] == 10
        assert high_watermark(cluster, leader, "h") == 10  # consumers do not see what the ISR lacks
        # after replica_lag_ms the leader shrinks the ISR, through the controller
        wait_until(lambda: victim not in partition_meta(cluster, "h", via=leader)["isr"], timeout=20, what="ISR shrink")
        wait_until(lambda: high_watermark(cluster, leader, "h") == 20, timeout=5, what="the high watermark to move")
        refused = produce(cluster, leader, "h", 1, acks=-1, start=20)
        assert refused["error"] == 19  # NOT_ENOUGH_REPLICAS: ISR 2 < min_insync_replicas 3
    finally:
        os.kill(cluster.brokers[victim].proc.pid, signal.SIGCONT)
    # it catches up and is taken back into the ISR
    wait_until(lambda: sorted(partition_meta(cluster, "h", via=leader)["isr"]) == sorted(p["replicas"]),
               timeout=30, what="ISR expand")
    assert produce(cluster, leader, "h", 1, acks=-1, start=21)["error"] == 0


def test_leader_failover_keeps_every_acknowledged_record(cluster):
    p = create(cluster, "f")
    old = p["leader"]
    for k in range(4):
        assert produce(cluster, old, "f", 50, acks=-1, start=50 * k)["error"] == 0
    cluster.brokers[old].kill()
    new = wait_until(lambda: (q := partition_meta(cluster, "f")) and q["leader"] not in (-1, old) and q,
                     timeout=20, what="a new leader")
    assert new["leader_epoch"] > p["leader_epoch"] and new["leader"] in p["isr"]
    wait_until(lambda: high_watermark(cluster, new["leader"], "f") == 200, timeout=20, what="the high watermark on the new leader")
    result = produce(cluster, new["leader"], "f", 10, acks=-1, start=200)
    assert result["base_offset"] == 200, result
    cluster.brokers[old].start()  # the old leader returns as a follower and catches up
    wait_until(lambda: sorted(partition_meta(cluster, "f")["isr"]) == sorted(p["replicas"]), timeout=30, what="ISR expand")


def test_describe_marks_under_replicated_partitions(cluster):
    import subprocess
    import sys

    p = create(cluster, "u")
    victim = next(r for r in p["replicas"] if r != p["leader"])
    cluster.brokers[victim].kill()
    wait_until(lambda: len(partition_meta(cluster, "u")["isr"]) == 2, timeout=20, what="ISR shrink")
    out = subprocess.run([sys.executable, "-m", "zbroker", "--bootstrap", cluster.bootstrap, "topics", "describe", "u"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "under-replicated" in out.stdout.decode()
