#!/usr/bin/env python3
"""Ingest bridge throughput next to ``zbroker bench produce``, in the same run, on one broker.

A fresh single broker is started with one ingest bridge (``socket = "pull"``, bound,
``acks = 1``, topic ``bridge-bench``).  A plain pyzmq PUSH process (it imports only zmq)
sends ``--records`` frames of ``--value-size`` bytes as fast as ZeroMQ takes them; the
bridge's rate is ``records / (time from the first send until the broker's bridge_status
says all are stored)``, polled every 20 ms.  Then ``zbroker bench produce`` sends the same
count and size with acks=1 to topic ``produce-bench`` of the same broker.  Both topics
have ``--partitions`` partitions.  Rounds alternate the two so the machine's noise falls
on both; the medians and their ratio are printed.

    python scripts/bench_bridge.py [--records 1000000] [--value-size 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"= ([\d,]+) records/s")

SENDER = r"""
import json, sys, time, zmq
a = json.loads(sys.argv[1])
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.setsockopt(zmq.LINGER, -1)
s.connect(a["endpoint"])
value = b"x" * a["size"]
print(time.time(), flush=True)
for _ in range(a["records"]):
    s.send(value)
s.close()
ctx.term()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(bootstrap: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "zbroker", "--bootstrap", bootstrap, *args], cwd=ROOT, capture_output=True,
                          text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"zbroker {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def start_broker(data: Path, endpoint: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    config = data / "broker.toml"
    config.write_text("\n".join([
        "[[broker]]", "id = 1", 'host = "127.0.0.1"', f"port = {port}", f"gossip_port = {free_port()}",
        f"peer_port = {free_port()}", f'data_dir = "{data / "data"}"', "",
        "[[bridge]]", 'name = "bench"', 'socket = "pull"', f'endpoint = "{endpoint}"', 'topic = "bridge-bench"', "acks = 1", ""]))
    broker = subprocess.Popen([sys.executable, "-m", "zbroker", "serve", "--config", str(config)], cwd=ROOT,
                              stdout=open(data / "broker.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while cli(bootstrap, "topics", "list", check=False).returncode != 0:
        if broker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the broker did not start; see {data / 'broker.log'}")
        time.sleep(0.1)
    return broker, bootstrap


def stored(admin) -> int:
    return sum(b.get("stored", 0) for b in admin.bridge_status() if b.get("name") == "bench")


def bridge_round(admin, endpoint: str, records: int, size: int) -> float:
    """records/s through the bridge, from the first send until all are stored."""
    before = stored(admin)
    sender = subprocess.Popen([sys.executable, "-c", SENDER, json.dumps({"endpoint": endpoint, "records": records, "size": size})],
                              stdout=subprocess.PIPE, text=True)
    start = float(sender.stdout.readline())
    while stored(admin) < before + records:
        if time.time() - start > 600:
            raise SystemExit("the bridge did not store every record within 600 s")
        time.sleep(0.02)
    elapsed = time.time() - start
    sender.wait(30)
    return records / elapsed


def produce_round(bootstrap: str, records: int, size: int, partitions: int) -> float:
    out = cli(bootstrap, "bench", "produce", "--topic", "produce-bench", "--records", str(records), "--value-size", str(size),
              "--acks", "1", "--partitions", str(partitions)).stdout
    return float(RATE.search(out).group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from clients import Admin

    data = Path(tempfile.mkdtemp(prefix="bridgebench-"))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    broker, bootstrap = start_broker(data, endpoint)
    try:
        for topic in ("bridge-bench", "produce-bench"):
            cli(bootstrap, "topics", "create", topic, "--partitions", str(args.partitions))
        bridge, produce = [], []
        with Admin(bootstrap=bootstrap) as admin:
            for r in range(args.rounds):
                bridge.append(bridge_round(admin, endpoint, args.records, args.value_size))
                produce.append(produce_round(bootstrap, args.records, args.value_size, args.partitions))
                print(f"round {r + 1}: bridge (PULL, acks=1) {bridge[-1]:,.0f} records/s; "
                      f"bench produce (acks=1) {produce[-1]:,.0f} records/s", flush=True)
    finally:
        broker.terminate()
        broker.wait(30)
    b, p = statistics.median(bridge), statistics.median(produce)
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(f"records={args.records} value_size={args.value_size} partitions={args.partitions} rounds={args.rounds}")
    print(f"median: bridge {b:,.0f} records/s, bench produce {p:,.0f} records/s, ratio bridge/produce {b / p:.2f}")


if __name__ == "__main__":
    main()
