"""`zbroker bench`: produce, consume and end-to-end benchmarks against a running broker.

Each prints a progress bar on stderr and one result line on stdout, e.g.::

    produce: 2000000 records in 3.41 s = 586,510 records/s, 55.9 MB/s (values); ack latency ms p50 4.1 p99 9.8 p99.9 12.0

Latency of produce is sampled (one record in ``--sample-every``) from ``send()`` to its
acknowledgement; end-to-end latency is from ``send()`` to ``poll()`` returning the record,
measured on every record with the send time carried in the value.
"""

from __future__ import annotations

import os
import struct
import threading
import time

import click


def percentiles(samples: list[float], points=(50, 99, 99.9)) -> dict[float, float]:
    """Nearest-rank percentiles of ``samples`` (empty -> NaN)."""
    if not samples:
        return {p: float("nan") for p in points}
    ordered = sorted(samples)
    n = len(ordered)
    return {p: ordered[min(n - 1, max(0, int(round(p / 100 * n + 0.5)) - 1))] for p in points}


def _latency_text(name: str, samples_s: list[float]) -> str:
    pct = percentiles([s * 1000 for s in samples_s])
    return f"{name} latency ms p50 {pct[50]:.2f} p99 {pct[99]:.2f} p99.9 {pct[99.9]:.2f} ({len(samples_s)} samples)"


def _ensure_topic(connect: dict, topic: str, partitions: int) -> None:
    from clients import Admin
    from zbroker.errors import TopicAlreadyExistsError

    with Admin(**connect) as admin:
        try:
            admin.create_topic(topic, partitions=partitions)
        except TopicAlreadyExistsError:
            pass


def _progress(total: int, label: str):
    return click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"), show_eta=True, show_percent=True)


@click.group()
def bench() -> None:
    """Measure throughput and latency against a running broker."""


_common = [
    click.option("--topic", default="bench", show_default=True),
    click.option("--records", type=click.IntRange(1), default=1_000_000, show_default=True),
]


def _apply(options):
    def deco(fn):
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


@bench.command("produce")
@_apply(_common)
@click.option("--value-size", type=click.IntRange(0), default=100, show_default=True, help="Bytes per value.")
@click.option("--key-size", type=click.IntRange(0), default=0, show_default=True, help="0 = null keys.")
@click.option("--partitions", type=click.IntRange(1), default=3, show_default=True, help="For a topic that does not exist yet.")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="1", show_default=True)
@click.option("--linger-ms", type=click.IntRange(0), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(1024), default=65536, show_default=True)
@click.option("--compression", type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]), default="none", show_default=True)
@click.option("--sample-every", type=click.IntRange(1), default=1000, show_default=True, help="Sample ack latency of one record in N.")
@click.option("--rate", type=click.IntRange(0), default=0, show_default=True,
              help="Records/s to offer (0 = as fast as possible: throughput, with latency dominated by queueing).")
@click.pass_context
def bench_produce(ctx, topic, records, value_size, key_size, partitions, acks, linger_ms, batch_size, compression, sample_every, rate):
    """Send RECORDS records with Producer.send(), one call per record."""
    from clients import Producer

    connect = ctx.obj["connect"]
    _ensure_topic(connect, topic, partitions)
    value = os.urandom(value_size)
    keys = [os.urandom(key_size) for _ in range(1024)] if key_size else None
    latencies: list[float] = []
    producer = Producer(
        **connect,
        acks="all" if acks == "all" else int(acks),
        linger_ms=linger_ms,
        batch_size=batch_size,
        compression=compression,
    )
    clock = time.perf_counter
    step = 50_000
    try:
        with _progress(records, "produce") as bar:
            start = clock()
            send = producer.send
            pace = 1.0 / rate if rate else 0.0
            for i in range(records):
                if pace and i % 100 == 0:
                    ahead = start + i * pace - clock()
                    if ahead > 0:
                        time.sleep(ahead)
                key = keys[i & 1023] if keys else None
                if i % sample_every == 0:
                    sent = clock()
                    fut = send(topic, value, key)
                    fut.add_done_callback(lambda f, sent=sent: latencies.append(clock() - sent))
                else:
                    send(topic, value, key)
                if i % step == step - 1:
                    bar.update(step)
            producer.flush()
            elapsed = clock() - start
            bar.update(records % step)
    finally:
        producer.close()
    achieved = records / elapsed
    offered = f"offered {rate:,}/s; " if rate else ""
    click.echo(
        f"produce: {records} records in {elapsed:.2f} s = {achieved:,.0f} records/s, "
        f"{achieved * value_size / 1e6:.1f} MB/s (values); acks={acks}; {offered}" + _latency_text("ack", latencies)
    )


@bench.command("consume")
@_apply(_common)
@click.option("--max-records", type=click.IntRange(1), default=10_000, show_default=True, help="max_records per poll().")
@click.option("--fetch-max-bytes", type=click.IntRange(1024), default=1_048_576, show_default=True, help="max_partition_fetch_bytes.")
@click.pass_context
def bench_consume(ctx, topic, records, max_records, fetch_max_bytes):
    """Read RECORDS records from the start of TOPIC with Consumer.poll()."""
    from clients import Consumer

    consumer = Consumer(
        topic, **ctx.obj["connect"], auto_offset_reset="earliest", max_partition_fetch_bytes=fetch_max_bytes
    )
    count = nbytes = 0
    clock = time.perf_counter
    try:
        with _progress(records, "consume") as bar:
            start = None
            idle_since = clock()
            while count < records:
                batch = consumer.poll(timeout_ms=1000, max_records=max_records)
                if not batch:
                    if clock() - idle_since > 10:
                        raise click.ClickException(f"only {count} records arrived; produce more first (zbroker bench produce)")
                    continue
                if start is None:
                    start = clock()
                idle_since = clock()
                count += len(batch)
                for rec in batch:
                    if rec.value is not None:
                        nbytes += len(rec.value)
                bar.update(len(batch))
            elapsed = clock() - start
    finally:
        consumer.close()
    rate = count / elapsed
    click.echo(f"consume: {count} records in {elapsed:.2f} s = {rate:,.0f} records/s, {nbytes / elapsed / 1e6:.1f} MB/s (values)")


@bench.command("e2e")
@_apply(_common)
@click.option("--value-size", type=click.IntRange(8), default=100, show_default=True)
@click.option("--rate", type=click.IntRange(1), default=20_000, show_default=True, help="Records/s the producer offers.")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="1", show_default=True)
@click.option("--linger-ms", type=click.IntRange(0), default=0, show_default=True)
@click.pass_context
def bench_e2e(ctx, topic, records, value_size, rate, acks, linger_ms):
    """Produce at RATE while consuming; report send -> poll latency."""
    from clients import Consumer, Producer

    connect = ctx.obj["connect"]
    topic = f"{topic}-e2e-{os.getpid()}"
    _ensure_topic(connect, topic, 1)
    consumer = Consumer(topic, **connect, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    producer = Producer(**connect, acks="all" if acks == "all" else int(acks), linger_ms=linger_ms)
    pad = os.urandom(value_size - 8)
    pack = struct.Struct(">q").pack
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            start = time.perf_counter()
            for i in range(records):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                producer.send(topic, pack(time.perf_counter_ns()) + pad)
            producer.flush()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    latencies: list[float] = []
    sender = threading.Thread(target=produce, name="bench-e2e-producer", daemon=True)
    try:
        with _progress(records, "e2e") as bar:
            sender.start()
            idle_since = time.perf_counter()
            while len(latencies) < records and not errors:
                batch = consumer.poll(timeout_ms=200, max_records=10_000)
                now = time.perf_counter_ns()
                if not batch:
                    if time.perf_counter() - idle_since > 15:
                        raise click.ClickException(f"records stopped arriving after {len(latencies)}")
                    continue
                idle_since = time.perf_counter()
                latencies.extend((now - struct.unpack_from(">q", r.value)[0]) / 1e9 for r in batch)
                bar.update(len(batch))
        sender.join(10)
        if errors:
            raise errors[0]
    finally:
        producer.close()
        consumer.close()
    click.echo(f"e2e: {records} records at {rate:,} records/s offered; " + _latency_text("end-to-end", latencies))
