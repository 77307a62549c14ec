"""Consumer groups on 3 real brokers: one owner per partition, kill -9 and clean close of members,
kill -9 of the coordinator, and a member joining and leaving 20 times."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from support import ClusterProcesses, RawClient, wait_until

pytestmark = pytest.mark.timeout(180)

TOPIC, GROUP, PARTITIONS, SESSION_MS = "events", "billing", 6, 3000
WORKER = Path(__file__).with_name("group_worker.py")


@pytest.fixture
def cluster(tmp_path):
    c = ClusterProcesses(tmp_path / "c", replication_factor=3, min_insync_replicas=2)
    try:
        c.start()
        wait_until(c.agreed_controller, timeout=15, what="a controller")
        from clients import Admin

        with Admin(bootstrap=c.bootstrap, request_timeout_ms=20_000) as a:
            a.create_topic(TOPIC, partitions=PARTITIONS)
        yield c
    finally:
        c.close()


class Feeder(threading.Thread):
    """Produces ``v<n>`` values at a steady rate until stopped; remembers what was acknowledged."""

    def __init__(self, bootstrap: str, rate: int = 300) -> None:
        super().__init__(daemon=True)
        from clients import Producer

        self.producer = Producer(bootstrap=bootstrap, acks="all", linger_ms=5)
        self.rate, self.n, self.stop_flag = rate, 0, threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop_flag.is_set():
            if time.monotonic() < start + self.n / self.rate:
                time.sleep(0.005)
                continue
            self.producer.send(TOPIC, value=b"v%d" % self.n)
            self.n += 1

    def finish(self) -> int:
        self.stop_flag.set()
        self.join(10)
        self.producer.flush(30)
        self.producer.close()
        return self.n


class Worker:
    def __init__(self, c: ClusterProcesses, root: Path, name: str) -> None:
        self.out = root / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, str(WORKER), "--bootstrap", c.bootstrap, "--group", GROUP, "--topic", TOPIC,
                                      "--out", str(self.out), "--session-ms", str(SESSION_MS)])

    def records(self) -> list[tuple[int, int, str]]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            parts = line.split(" ")
            if parts[0] == "R" and len(parts) == 4:
                out.append((int(parts[1]), int(parts[2]), parts[3]))
        return out

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def describe(c: ClusterProcesses) -> dict | None:
    """The group as its coordinator describes it (None while it cannot be reached)."""
    for b in c.brokers.values():
        if not b.alive():
            continue
        client = RawClient(b.bootstrap)
        try:
            h, _ = client.call("find_coordinator", group=GROUP, timeout=1)
            if h["error"]:
                continue
            coordinator = RawClient(f"{h['host']}:{h['port']}")
            try:
                d, _ = coordinator.call("describe_group", group=GROUP, timeout=1)
                return d if d["error"] == 0 else None
            finally:
                coordinator.close()
        except TimeoutError:
            continue
        finally:
            client.close()
    return None


def owners(d: dict | None) -> dict[tuple[str, int], list[str]]:
    out: dict = {}
    for m in (d or {}).get("members", []):
        for t, p in m["assignment"] + m["revoking"]:
            out.setdefault((t, p), []).append(m["member_id"])
    return out


def stable_with(c: ClusterProcesses, members: int):
    d = describe(c)
    if d and d["state"] == "stable" and len(d["members"]) == members and len(owners(d)) == PARTITIONS:
        return d
    return None


class OwnerWatch(threading.Thread):
    """Samples the coordinator's state; remembers any partition held by two members."""

    def __init__(self, c: ClusterProcesses) -> None:
        super().__init__(daemon=True)
        self.c, self.doubles, self.samples, self.stop_flag = c, [], 0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for tp, ms in owners(describe(self.c)).items():
                if len(ms) > 1:
                    self.doubles.append((tp, ms))
            self.samples += 1

    def finish(self) -> None:
        self.stop_flag.set()
        self.join(10)


def consumed_all(workers: list[Worker], produced: int) -> bool:
    return {v for w in workers for _, _, v in w.records()} >= {f"v{i}" for i in range(produced)}


def test_one_owner_each_kill_9_moves_partitions_without_loss(cluster, tmp_path):
    feeder = Feeder(cluster.bootstrap)
    feeder.start()
    workers = [Worker(cluster, tmp_path, f"w{i}") for i in range(3)]
    try:
        d = wait_until(lambda: stable_with(cluster, 3), timeout=30, what="3 members with 2 partitions each")
        assert sorted(len(m["assignment"]) for m in d["members"]) == [2, 2, 2]
        wait_until(lambda: all(w.records() for w in workers), timeout=20, what="every member reading")
        victim = workers.pop(0)
        victim.kill()
        killed = time.monotonic()
        wait_until(lambda: stable_with(cluster, 2), timeout=SESSION_MS / 1000 + 10, interval=0.05, what="the partitions to move")
        moved = time.monotonic() - killed
        print(f"rebalance after kill -9 of a member: {moved:.2f}s (session timeout {SESSION_MS} ms)")
        assert moved <= SESSION_MS / 1000 + 2
        produced = feeder.finish()
        wait_until(lambda: consumed_all(workers + [victim], produced), timeout=30, what="every record consumed")
        # duplicates only from the killed member's uncommitted tail
        survivors = Counter((p, o) for w in workers for p, o, _ in w.records())
        assert all(n == 1 for n in survivors.values())
        theirs = {(p, o) for p, o, _ in victim.records()}
        twice = [po for po in theirs if po in survivors]
        tail = {p: max(o for q, o in theirs if q == p) for p, _ in theirs}
        assert all(o > tail[p] - 500 for p, o in twice), twice  # only the last, uncommitted poll or so
    finally:
        feeder.stop_flag.set()
        for w in workers:
            w.kill()


def test_clean_close_moves_partitions_at_once_without_duplicates(cluster, tmp_path):
    feeder = Feeder(cluster.bootstrap)
    feeder.start()
    workers = [Worker(cluster, tmp_path, f"w{i}") for i in range(3)]
    try:
        wait_until(lambda: stable_with(cluster, 3), timeout=30, what="3 members")
        wait_until(lambda: all(w.records() for w in workers), timeout=20, what="every member reading")
        leaving = workers.pop(0)
        leaving.stop()
        stopped = time.monotonic()
        wait_until(lambda: stable_with(cluster, 2), timeout=10, interval=0.05, what="the partitions to move")
        print(f"rebalance after a clean close: {time.monotonic() - stopped:.2f}s")
        produced = feeder.finish()
        everyone = workers + [leaving]
        wait_until(lambda: consumed_all(everyone, produced), timeout=30, what="every record consumed")
        reads = Counter((p, o) for w in everyone for p, o, _ in w.records())
        assert all(n == 1 for n in reads.values()), [po for po, n in reads.items() if n > 1][:5]
    finally:
        feeder.stop_flag.set()
        for w in workers:
            w.kill()


def test_kill_9_of_the_coordinator_keeps_the_group_and_its_offsets(cluster):
    from clients import Consumer

    feeder = Feeder(cluster.bootstrap)
    feeder.start()
    got: list = []
    consumer = Consumer(TOPIC, group=GROUP, bootstrap=cluster.bootstrap, session_timeout_ms=SESSION_MS)
    try:
        deadline = time.monotonic() + 20
        while len(got) < 200 and time.monotonic() < deadline:
            got += consumer.poll(timeout_ms=200)
        consumer.commit()
        before = {(o["topic"], o["partition"]): o["offset"] for o in describe(cluster)["offsets"]}
        assert before
        h, _ = RawClient(cluster.brokers[1].bootstrap).call("find_coordinator", group=GROUP)
        cluster.brokers[h["coordinator"]].kill()
        # the group goes on: new records keep arriving, commits keep working
        seen = len(got)
        deadline = time.monotonic() + 30
        while len(got) < seen + 300 and time.monotonic() < deadline:
            got += consumer.poll(timeout_ms=200)
        assert len(got) >= seen + 300
        consumer.commit()
        after = wait_until(lambda: (d := describe(cluster)) and {(o["topic"], o["partition"]): o["offset"] for o in d["offsets"]},
                           timeout=20, what="the new coordinator's offsets")
        assert all(after.get(tp, -1) >= off for tp, off in before.items())  # intact, and moved on
    finally:
        consumer.close()
        feeder.finish()


def test_a_member_joining_and_leaving_20_times_never_makes_a_double_owner(cluster):
    from clients import Consumer

    def member(stop: threading.Event, reads: list) -> None:
        c = Consumer(TOPIC, group=GROUP, bootstrap=cluster.bootstrap, session_timeout_ms=SESSION_MS,
                     auto_commit_interval_ms=200)
        try:
            while not stop.is_set():
                reads.extend((r.partition, r.offset) for r in c.poll(timeout_ms=100))
        finally:
            c.close()

    feeder = Feeder(cluster.bootstrap, rate=200)
    feeder.start()
    stops = [threading.Event(), threading.Event()]
    reads: list = []
    steady = [threading.Thread(target=member, args=(s, reads), daemon=True) for s in stops]
    for t in steady:
        t.start()
    watch = OwnerWatch(cluster)
    try:
        wait_until(lambda: stable_with(cluster, 2), timeout=30, what="2 members")
        watch.start()
        for _ in range(20):
            stop = threading.Event()
            t = threading.Thread(target=member, args=(stop, reads), daemon=True)
            t.start()
            wait_until(lambda: stable_with(cluster, 3), timeout=20, interval=0.05, what="the third member in")
            stop.set()
            t.join(20)
            wait_until(lambda: stable_with(cluster, 2), timeout=20, interval=0.05, what="the third member out")
        watch.finish()
        assert watch.samples > 20 and not watch.doubles, watch.doubles[:5]
    finally:
        watch.stop_flag.set()
        for s in stops:
            s.set()
        for t in steady:
            t.join(20)
        feeder.finish()
