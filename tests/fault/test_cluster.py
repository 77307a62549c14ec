"""Three real brokers: election, controller failover, SIGSTOP, full restarts, clients following leaders."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from support import ClusterProcesses, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path):
    c = ClusterProcesses(tmp_path / "cluster")
    try:
        yield c.start()
    finally:
        c.close()


def admin(c: ClusterProcesses, ids=None):
    from clients import Admin

    ids = ids or list(c.brokers)
    return Admin(bootstrap=",".join(c.brokers[i].bootstrap for i in ids), request_timeout_ms=20_000)


def new_controller(c: ClusterProcesses, ids, old: int):
    """Waits for brokers ``ids`` to agree on a controller other than ``old``."""

    def agreed():
        value = c.agreed_controller(ids)
        return value if value is not None and value[0] != old else None

    return wait_until(agreed, timeout=15, what=f"a controller other than {old}")


def topics_view(c: ClusterProcesses, broker_id: int):
    meta = c.metadata(broker_id)
    if meta is None:
        return None
    return sorted((t["topic"], tuple((p["partition"], tuple(p["replicas"]), p["leader"], p["leader_epoch"]) for p in t["partitions"]))
                  for t in meta["topics"])


class Observer(threading.Thread):
    """Polls every live broker's (controller, epoch) until stopped; remembers every answer."""

    def __init__(self, c: ClusterProcesses) -> None:
        super().__init__(daemon=True)
        self.c = c
        self.seen: dict[int, set[int]] = {}  # epoch -> controllers reported for it
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for i, b in self.c.brokers.items():
                if not b.alive():
                    continue
                meta = self.c.metadata(i, timeout=0.3)
                if meta and meta["controller"] >= 0:
                    self.seen.setdefault(meta["controller_epoch"], set()).add(meta["controller"])

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(10)


def test_one_controller_within_5_s_of_start(tmp_path):
    c = ClusterProcesses(tmp_path / "cluster")
    try:
        started = time.monotonic()
        for b in c.brokers.values():
            b.start(wait=False)
        controller, epoch = wait_until(c.agreed_controller, timeout=5, what="an agreed controller")
        assert controller in c.brokers and epoch >= 1
        assert time.monotonic() - started < 5
    finally:
        c.close()


def test_kill_9_of_the_controller_elects_a_new_one_and_topics_can_be_created(cluster):
    controller, epoch = wait_until(cluster.agreed_controller, timeout=10, what="a controller")
    with admin(cluster) as a:
        a.create_topic("before", partitions=3)
    cluster.brokers[controller].kill()
    killed_at = time.monotonic()
    rest = [i for i in cluster.brokers if i != controller]
    new, new_epoch = new_controller(cluster, rest, controller)
    print(f"failover: new controller {new} (epoch {new_epoch}) {time.monotonic() - killed_at:.2f}s after kill -9")
    assert new != controller and new_epoch > epoch
    with admin(cluster, rest) as a:
        a.create_topic("after", partitions=3)
        assert {"before", "after"} <= set(a.list_topics())


def test_sigstop_controller_steps_down_and_all_converge(cluster):
    controller, epoch = wait_until(cluster.agreed_controller, timeout=10, what="a controller")
    rest = [i for i in cluster.brokers if i != controller]
    with admin(cluster) as a:
        a.create_topic("one", partitions=3)
    observer = Observer(cluster)
    observer.start()
    stopped = cluster.brokers[controller].proc
    try:
        os.kill(stopped.pid, signal.SIGSTOP)
        new, new_epoch = new_controller(cluster, rest, controller)
        assert new != controller and new_epoch > epoch
        with admin(cluster, rest) as a:
            a.create_topic("two", partitions=3)  # metadata moves on while the old controller sleeps
        time.sleep(2.0)  # hold it stopped well past its session timeout (1.5 s) -- the scenario, not a sync
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    # it steps down and catches up: everyone agrees on the controller and on the metadata
    wait_until(lambda: cluster.agreed_controller() is not None and cluster.agreed_controller()[1] >= new_epoch,
               timeout=15, what="all three agreeing on a controller")
    wait_until(lambda: len({repr(topics_view(cluster, i)) for i in cluster.brokers}) == 1, timeout=15,
               what="identical metadata on every broker")
    observer.stop()
    names = [t for t, _ in topics_view(cluster, controller)]
    assert names == ["one", "two"]
    doubles = {e: ids for e, ids in observer.seen.items() if len(ids) > 1}
    assert not doubles, f"two controllers reported for one epoch: {doubles}"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_topics_and_assignments_survive_restarting_every_broker(cluster, how):
    wait_until(cluster.agreed_controller, timeout=10, what="a controller")
    with admin(cluster) as a:
        a.create_topic("orders", partitions=6, config={"retention_ms": 3_600_000})
        a.create_topic("audit", partitions=2)
        a.alter_topic_config("audit", {"segment_ms": 60_000})
    before = topics_view(cluster, 1)
    for b in cluster.brokers.values():
        getattr(b, how)()
    for b in cluster.brokers.values():
        b.start(wait=False)
    for b in cluster.brokers.values():
        b.wait_ready()
    wait_until(cluster.agreed_controller, timeout=15, what="a controller after the restart")
    # every broker serves the same topics, placement and (preferred) leaders as before
    wait_until(lambda: all(topics_view(cluster, i) == before for i in cluster.brokers), timeout=15,
               what="the metadata from before the restart on every broker")
    with admin(cluster) as a:
        assert a.describe_topic("orders").config["retention_ms"] == 3_600_000
        assert a.describe_topic("audit").config["segment_ms"] == 60_000


def test_clients_bootstrap_from_one_broker_and_follow_leaders_through_a_broker_restart(cluster):
    from clients import Consumer, Producer

    wait_until(cluster.agreed_controller, timeout=10, what="a controller")
    with admin(cluster) as a:
        a.create_topic("keyed", partitions=6)
    one = cluster.brokers[1].bootstrap  # bootstrap from a single broker: the rest comes from metadata
    keys = [b"k%d" % i for i in range(12)]
    sent: dict[bytes, list[int]] = {k: [] for k in keys}
    victim = 3
    with Producer(bootstrap=one, acks=1, linger_ms=2, retries=1_000_000, delivery_timeout_ms=60_000) as producer:
        futures = []
        for n in range(3000):
            key = keys[n % len(keys)]
            futures.append(producer.send("keyed", value=b"%d" % n, key=key))
            sent[key].append(n)
            if n == 1000:
                cluster.brokers[victim].kill()  # its partitions have no leader until it returns
            if n == 1500:
                cluster.brokers[victim].start()
        producer.flush(timeout=60)
        for f in futures:
            f.result(timeout=60)  # every send is acknowledged in the end
    got: dict[bytes, list[int]] = {k: [] for k in keys}
    with Consumer("keyed", bootstrap=one, auto_offset_reset="earliest") as consumer:
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < 3000 and time.monotonic() < deadline:
            for rec in consumer.poll(timeout_ms=500):
                got[rec.key].append(int(rec.value))
    for key in keys:
        seen, first = set(), []
        for n in got[key]:  # a retried batch may repeat (idempotence is not on yet); keep first copies
            if n not in seen:
                seen.add(n)
                first.append(n)
        assert first == sent[key], f"key {key!r}: lost or reordered records"


def test_a_broker_back_after_the_metadata_log_moved_on_catches_up_from_a_snapshot(tmp_path):
    c = ClusterProcesses(tmp_path / "cluster", cluster_settings={"metadata_snapshot_records": 20,
                                                                 "metadata_segment_bytes": 2048})
    try:
        c.start()
        wait_until(c.agreed_controller, timeout=10, what="a controller")
        controller = c.agreed_controller()[0]
        away = next(i for i in c.brokers if i != controller)
        c.brokers[away].kill()
        present = [i for i in c.brokers if i != away]
        with admin(c, present) as a:
            for i in range(40):  # far more metadata records than a snapshot interval
                a.create_topic(f"t{i}", partitions=2, config={"retention_ms": 1000 + i})
                if i % 3 == 0:
                    a.delete_topic(f"t{i}")
        meta = c.root / f"b{controller}" / "meta"
        assert list(meta.glob("*.snapshot")), "the controller wrote no metadata snapshot"
        log_dir = c.root / f"b{controller}" / "__cluster_metadata-0"
        assert not (log_dir / f"{0:020d}.log").exists(), "the controller kept its whole metadata log"
        names = sorted(f"t{i}" for i in range(40) if i % 3)

        def agreed():
            views = [topics_view(c, i) for i in c.brokers]
            return views[0] is not None and all(v == views[0] for v in views) and [t for t, _ in views[0]] == names

        c.brokers[away].start()
        wait_until(agreed, timeout=30, what="the returning broker to catch up")
        assert "installing metadata snapshot" in c.brokers[away].log_text(tail=None)  # the whole log: it may be long by now
        # and it serves from that state across its own restart
        c.brokers[away].kill()
        c.brokers[away].start()
        wait_until(agreed, timeout=30, what="the same metadata after a restart")
    finally:
        c.close()
