#!/usr/bin/env python3
"""Benchmark: the Kafka front door beside the native door, on one broker, in one run.

One single-node broker is started on a fresh data dir with both doors.  Then, in turn:

1. a confluent-kafka ``Producer`` (librdkafka; 100-byte values, ``acks=1``, its default
   batching) sends ``--records`` records through the Kafka door, timed from the first
   ``produce()`` to the end of ``flush()``;
2. a confluent-kafka ``Consumer`` with ``assign()`` reads them back from the start;
3. ``zbroker bench produce`` and ``zbroker bench consume`` (the native client, same record
   count, value size and acks) against the native door;
4. a confluent-kafka ``Consumer`` reads the natively produced records through the Kafka
   door (every native batch converted to Kafka's format on the way out).

Records/s of each, and the Kafka/native ratios, are printed at the end::

    python scripts/kafka_bench.py [--records 1000000] [--partitions 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"= ([\d,]+) records/s")
VALUE_SIZE = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zbroker(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zbroker", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def start_broker(data: str) -> tuple[subprocess.Popen, str, str]:
    native, kafka = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    broker = subprocess.Popen([sys.executable, "-m", "zbroker", "serve", "--data-dir", data, "--listen", native,
                               "--kafka-listen", kafka, "--log-level", "WARNING"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while zbroker("--bootstrap", native, "topics", "list", timeout=30).returncode != 0:
        if broker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the broker did not start")
        time.sleep(0.2)
    return broker, native, kafka


def create_topic(native: str, topic: str, partitions: int) -> None:
    out = zbroker("--bootstrap", native, "topics", "create", topic, "--partitions", str(partitions), timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"cannot create {topic}: {out.stderr}")


def kafka_produce(kafka: str, topic: str, records: int) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka, "acks": 1, "queue.buffering.max.messages": 1_000_000})
    value = os.urandom(VALUE_SIZE)
    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(err)

    produce, poll = producer.produce, producer.poll
    start = time.perf_counter()
    for _ in range(records):
        try:
            produce(topic, value, on_delivery=report)
        except BufferError:
            poll(0.05)
            produce(topic, value, on_delivery=report)
    if producer.flush(120):
        raise RuntimeError("records still unsent after 120 s")
    elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{len(failed)} records failed, e.g. {failed[0]}")
    return records / elapsed


def kafka_consume(kafka: str, topic: str, partitions: int, records: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "kafka-bench", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        count, start, idle_since = 0, None, time.perf_counter()
        while count < records:
            batch = consumer.consume(10_000, 1.0)
            if not batch:
                if time.perf_counter() - idle_since > 20:
                    raise RuntimeError(f"only {count} of {records} records arrived")
                continue
            if start is None:
                start = time.perf_counter()
            idle_since = time.perf_counter()
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(str(msg.error()))
            count += len(batch)
        return count / (time.perf_counter() - start)
    finally:
        consumer.close()


def native_bench(native: str, kind: str, topic: str, records: int) -> float:
    args = ["--bootstrap", native, "bench", kind, "--topic", topic, "--records", str(records)]
    if kind == "produce":
        args += ["--value-size", str(VALUE_SIZE), "--acks", "1"]
    out = zbroker(*args)
    match = RATE.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"zbroker bench {kind} failed:\n{out.stdout}{out.stderr}")
    print(f"  {out.stdout.strip()}", flush=True)
    return float(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="kafka-bench-")
    broker, native, kafka = start_broker(data)
    try:
        for topic in ("kafka-bench", "native-bench"):
            create_topic(native, topic, args.partitions)
        print(f"one broker: native {native}, Kafka {kafka}; {args.records:,} records of {VALUE_SIZE} bytes, acks=1, "
              f"{args.partitions} partitions", flush=True)
        rates = {}
        rates["kafka produce"] = kafka_produce(kafka, "kafka-bench", args.records)
        print(f"  confluent-kafka produce: {rates['kafka produce']:,.0f} records/s", flush=True)
        rates["kafka consume"] = kafka_consume(kafka, "kafka-bench", args.partitions, args.records)
        print(f"  confluent-kafka consume: {rates['kafka consume']:,.0f} records/s", flush=True)
        rates["native produce"] = native_bench(native, "produce", "native-bench", args.records)
        rates["native consume"] = native_bench(native, "consume", "native-bench", args.records)
        rates["kafka consume of native"] = kafka_consume(kafka, "native-bench", args.partitions, args.records)
        print(f"  confluent-kafka consume of native batches: {rates['kafka consume of native']:,.0f} records/s", flush=True)
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(data, ignore_errors=True)
    print()
    print(f"{'':44}{'records/s':>12}")
    for name, rate in rates.items():
        print(f"{name:44}{rate:>12,.0f}")
    print(f"{'produce: Kafka door / native door':44}{rates['kafka produce'] / rates['native produce']:>12.2f}")
    print(f"{'consume: Kafka door / native door':44}{rates['kafka consume'] / rates['native consume']:>12.2f}")


if __name__ == "__main__":
    main()
