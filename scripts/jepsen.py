#!/usr/bin/env python3
"""A Jepsen-style check of replication: acknowledged writes under kill -9, SIGSTOP and restarts.

Starts 3 brokers (RF=3, min ISR 2) on loopback, runs several producers (threads, each its
own idempotent Producer, acks="all") sending unique values, while a seeded nemesis, round
after round, kill -9s, SIGSTOPs or restarts the leader of a random partition or the
controller, then heals it.  After the last round everything is healed, the producers
flush, every partition's ISR is full again, and a final read checks:

- lost:             an acknowledged value is missing;
- duplicate:        a value appears twice;
- reordered:        a producer's values in one partition are not in the order it sent them;
- offset_conflict:  an acknowledged (partition, offset) holds another value;
- divergent:        two replicas' logs differ below the high watermark (read from the data
                    directories after a clean stop).

It prints one line: operations, faults, anomalies by kind; exit status 1 if any anomaly.

    python scripts/jepsen.py --seed 1 --rounds 20 [--producers 3] [--rate 400]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support import ClusterProcesses, wait_until  # noqa: E402

TOPIC = "jepsen"
PARTITIONS = 3


class Writer(threading.Thread):
    """One producer sending ``p<id>-<n>`` values at a steady rate; remembers every outcome."""

    def __init__(self, pid: int, bootstrap: str, rate: int) -> None:
        super().__init__(daemon=True, name=f"writer-{pid}")
        from clients import Producer

        self.pid = pid
        self.rate = rate
        self.producer = Producer(bootstrap=bootstrap, acks="all", linger_ms=2, request_timeout_ms=4000,
                                 delivery_timeout_ms=60_000, retry_backoff_ms=50)
        self.acked: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
        self.failed: set[bytes] = set()
        self.errors: dict[str, int] = defaultdict(int)  # why sends failed
        self.sent = 0
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def _done(self, fut, value: bytes) -> None:
        exc = fut.exception()
        with self.lock:
            if exc is None:
                meta = fut.result()
                self.acked[value] = (meta.partition, meta.offset)
            else:
                self.failed.add(value)
                self.errors[type(exc).__name__] += 1
                self.last_error = str(exc)

    def run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self.stop_flag.is_set():
            due = start + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.05))
                continue
            value = b"p%d-%d" % (self.pid, n)
            try:
                self.producer.send(TOPIC, value=value).add_done_callback(lambda f, v=value: self._done(f, v))
            except Exception:
                with self.lock:
                    self.failed.add(value)
            n += 1
            self.sent = n

    def finish(self) -> None:
        self.stop_flag.set()
        self.join(10)
        try:
            self.producer.flush(timeout=90)
        except Exception:
            pass
        self.producer.close(timeout=10)


def leader_of(c: ClusterProcesses, partition: int) -> int | None:
    for i, b in c.brokers.items():
        if not b.alive():
            continue
        meta = c.metadata(i, timeout=0.5)
        if meta:
            for t in meta["topics"]:
                if t["topic"] == TOPIC:
                    leader = t["partitions"][partition]["leader"]
                    return leader if leader > 0 else None
    return None


def healthy(c: ClusterProcesses) -> bool:
    """Every broker up, one agreed controller, every partition with a leader and a full ISR."""
    if not all(b.alive() for b in c.brokers.values()) or c.agreed_controller() is None:
        return False
    meta = c.metadata(1, timeout=1.0)
    if meta is None:
        return False
    for t in meta["topics"]:
        for p in t["partitions"]:
            if p["leader"] < 0 or sorted(p["isr"]) != sorted(p["replicas"]):
                return False
    return True


class Nemesis:
    def __init__(self, c: ClusterProcesses, rng: random.Random) -> None:
        self.c = c
        self.rng = rng
        self.faults: list[str] = []

    def round(self) -> None:
        c = self.c
        target_kind = self.rng.choice(["controller", "leader"])
        if target_kind == "controller":
            agreed = c.agreed_controller()
            target = agreed[0] if agreed else self.rng.choice(list(c.brokers))
        else:
            target = leader_of(c, self.rng.randrange(PARTITIONS)) or self.rng.choice(list(c.brokers))
        fault = self.rng.choice(["kill", "stop", "restart"])
        hold = self.rng.uniform(0.5, 3.0)
        b = c.brokers[target]
        self.faults.append(f"{fault}:{target_kind}:{target}")
        if fault == "kill":
            b.kill()
            time.sleep(hold)  # the fault lasts this long: the scenario, not a synchronisation
            b.start(wait=False)
        elif fault == "stop":
            os.kill(b.proc.pid, signal.SIGSTOP)
            time.sleep(hold)
            os.kill(b.proc.pid, signal.SIGCONT)
        else:
            b.stop()
            b.start(wait=False)
        b.wait_ready()
        time.sleep(self.rng.uniform(0.2, 1.0))  # let traffic flow between faults


def read_partition(c: ClusterProcesses, partition: int) -> list[tuple[int, bytes]]:
    """Every record of a partition, through a consumer (reads up to the high watermark)."""
    from clients import Consumer

    out = []
    with Consumer(bootstrap=c.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([(TOPIC, partition)])
        end = consumer.end_offsets([(TOPIC, partition)])
        end = list(end.values())[0]
        consumer.seek_to_beginning((TOPIC, partition))
        deadline = time.monotonic() + 60
        while (not out or out[-1][0] < end - 1) and time.monotonic() < deadline and end > 0:
            for rec in consumer.poll(timeout_ms=500):
                out.append((rec.offset, rec.value))
    return out


def replica_logs(c: ClusterProcesses, partition: int, high_watermark: int) -> dict[int, list[tuple[int, bytes]]]:
    """Each broker's copy of a partition below the high watermark, read from its data dir (brokers stopped)."""
    from storage import Log, LogConfig
    from storage.batch import decode_native_records, iter_batches

    copies = {}
    for i, b in c.brokers.items():
        lg = Log(b.data_dir / f"{TOPIC}-{partition}", LogConfig(), 0)
        recs, offset = [], lg.log_start_offset
        while offset < high_watermark:
            data = lg.read(offset, 1 << 20, max_offset=high_watermark).data
            if not data:
                break
            for pos, h in iter_batches(data):
                for rec in decode_native_records(data[pos : pos + h.size]):
                    if rec[0] < high_watermark:
                        recs.append((rec[0], rec[3]))
                offset = h.next_offset
        lg.close()
        copies[i] = recs
    return copies


def check(writers: list[Writer], logs: dict[int, list[tuple[int, bytes]]], replicas: dict[int, dict[int, list]]) -> dict[str, int]:
    anomalies = defaultdict(int)
    where: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for partition, recs in logs.items():
        for offset, value in recs:
            where[value].append((partition, offset))
    anomalies["duplicate"] = sum(1 for places in where.values() if len(places) > 1)
    stored = {(p, o): v for p, recs in logs.items() for o, v in recs}
    for w in writers:
        for value, (partition, offset) in w.acked.items():
            if value not in where:
                anomalies["lost"] += 1
            elif stored.get((partition, offset)) != value:
                anomalies["offset_conflict"] += 1
    for partition, recs in logs.items():
        last: dict[bytes, int] = {}
        for _offset, value in recs:
            producer, _, n = value.partition(b"-")
            if int(n) < last.get(producer, -1):
                anomalies["reordered"] += 1
            last[producer] = max(last.get(producer, -1), int(n))
    for partition, copies in replicas.items():
        reference = logs[partition]
        for broker, recs in copies.items():
            if recs != reference[: len(recs)] or len(recs) != len(reference):
                anomalies["divergent"] += 1
    for kind in ("lost", "duplicate", "reordered", "offset_conflict", "divergent"):
        anomalies.setdefault(kind, 0)
    return dict(anomalies)


def run(seed: int, rounds: int, producers: int = 3, rate: int = 400, root: Path | None = None) -> dict:
    from clients import Admin

    rng = random.Random(seed)
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
    c = ClusterProcesses(root, heartbeat_ms=100, session_timeout_ms=1500, election_timeout_ms=500,
                         replication_factor=3, min_insync_replicas=2, replica_lag_ms=3000, partitions=PARTITIONS,
                         name="jepsen")
    writers: list[Writer] = []
    try:
        c.start()
        wait_until(c.agreed_controller, timeout=20, what="a controller")
        with Admin(bootstrap=c.bootstrap, request_timeout_ms=30_000) as admin:
            admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
        wait_until(lambda: healthy(c), timeout=30, what="a healthy cluster")
        writers = [Writer(i, c.bootstrap, rate) for i in range(producers)]
        for w in writers:
            w.start()
        nemesis = Nemesis(c, rng)
        for _ in range(rounds):
            nemesis.round()
        wait_until(lambda: healthy(c), timeout=60, interval=0.2, what="the cluster to heal")
        for w in writers:
            w.finish()
        wait_until(lambda: healthy(c), timeout=60, interval=0.2, what="full ISRs after the writes")
        logs = {p: read_partition(c, p) for p in range(PARTITIONS)}
        for b in c.brokers.values():
            b.stop()
        replicas = {p: replica_logs(c, p, len(logs[p]) and logs[p][-1][0] + 1) for p in range(PARTITIONS)}
        anomalies = check(writers, logs, replicas)
        result = {
            "seed": seed,
            "operations": sum(w.sent for w in writers),
            "acked": sum(len(w.acked) for w in writers),
            "failed": sum(len(w.failed) for w in writers),
            "faults": len(nemesis.faults),
            "fault_list": nemesis.faults,
            "errors": dict(sum((Counter(w.errors) for w in writers), Counter())),
            "anomalies": anomalies,
        }
        return result
    finally:
        for w in writers:
            w.stop_flag.set()
        c.close()
        if tmp is not None:
            tmp.cleanup()


def summary(r: dict) -> str:
    kinds = " ".join(f"{k}={v}" for k, v in r["anomalies"].items())
    return (f"seed {r['seed']}: operations {r['operations']} (acked {r['acked']}, failed {r['failed']}), "
            f"faults {r['faults']}, anomalies: {kinds}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--rate", type=int, default=400, help="records/s per producer")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    r = run(args.seed, args.rounds, args.producers, args.rate)
    if args.verbose:
        print("faults:", ", ".join(r["fault_list"]))
        print("failed sends by error:", r["errors"])
    print(summary(r))
    return 1 if any(r["anomalies"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
