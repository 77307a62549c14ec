"""`zbroker produce` and `zbroker consume`: records between a topic and stdin/stdout."""

from __future__ import annotations

import click

from zbroker.cli.common import BadUsage


@click.command()
@click.argument("topic")
@click.option("--key-separator", help="Split each line at the first SEP into key and value.")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="1", show_default=True)
@click.option("--partition", type=click.IntRange(0), help="Send every record to this partition.")
@click.pass_context
def produce(ctx, topic: str, key_separator: str | None, acks: str, partition: int | None) -> None:
    """Send one record per line of standard input to TOPIC."""
    from clients import Producer

    stdin = click.get_binary_stream("stdin")
    sep = key_separator.encode() if key_separator else None
    count = 0
    futures = []
    with Producer(**ctx.obj["connect"], acks="all" if acks == "all" else int(acks), linger_ms=5) as producer:
        for line in stdin:
            line = line.rstrip(b"\r\n")
            key = None
            if sep is not None:
                key, found, value = line.partition(sep)
                if not found:
                    key, value = None, line
            else:
                value = line
            futures.append(producer.send(topic, value=value, key=key, partition=partition))
            count += 1
            if len(futures) >= 10_000:
                for fut in futures:
                    fut.result()
                futures.clear()
        producer.flush()
        for fut in futures:
            fut.result()
    click.echo(f"produced {count} record(s) to {topic}", err=True)


@click.command()
@click.argument("topic")
@click.option("--group", help="Consume as a member of this group: share partitions with its other members, commit positions.")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset (default: only new records).")
@click.option("--partition", type=click.IntRange(0), help="Read only this partition.")
@click.option("--offset", type=click.IntRange(0), help="With --partition: start at this offset.")
@click.option("--max-messages", type=click.IntRange(1), help="Exit after this many records.")
@click.option("--timeout-ms", type=click.IntRange(1), help="Exit when no record arrives for this long.")
@click.option("--print-key", is_flag=True, help="Print KEY<TAB> before each value.")
@click.option("--print-offset", is_flag=True, help="Print PARTITION:OFFSET<TAB> before each record.")
@click.pass_context
def consume(ctx, topic, group, from_beginning, partition, offset, max_messages, timeout_ms, print_key, print_offset) -> None:
    """Print TOPIC's records to standard output, one per line."""
    import time

    from clients import Consumer

    if offset is not None and partition is None:
        raise BadUsage("--offset needs --partition")
    out = click.get_binary_stream("stdout")
    reset = "earliest" if from_beginning else "latest"
    consumer = Consumer(**ctx.obj["connect"], auto_offset_reset=reset, group=group)
    seen = 0
    try:
        if partition is not None:
            consumer.assign([(topic, partition)])
            if offset is not None:
                consumer.seek(topic, partition, offset)
        else:
            consumer.subscribe([topic])
        last = time.monotonic()
        while max_messages is None or seen < max_messages:
            wait = 500 if timeout_ms is None else max(1, min(500, int(timeout_ms - (time.monotonic() - last) * 1000)))
            batch = consumer.poll(timeout_ms=wait, max_records=(max_messages - seen) if max_messages else 500)
            if not batch:
                if timeout_ms is not None and (time.monotonic() - last) * 1000 >= timeout_ms:
                    break
                continue
            last = time.monotonic()
            for rec in batch:
                parts = []
                if print_offset:
                    parts.append(f"{rec.partition}:{rec.offset}".encode())
                if print_key:
                    parts.append(rec.key if rec.key is not None else b"null")
                parts.append(rec.value if rec.value is not None else b"null")
                out.write(b"\t".join(parts) + b"\n")
            out.flush()
            seen += len(batch)
    except BrokenPipeError:
        pass
    finally:
        consumer.close()
    click.echo(f"consumed {seen} record(s)", err=True)
