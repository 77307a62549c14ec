"""The `zbroker` command line (click).

Every command prints one clear line and exits non-zero on error; no
tracebacks reach the user (``ZBROKER_DEBUG=1`` shows them).  Exit codes:
0 success, 1 a failed operation (the broker said no, or nobody answered),
2 bad usage or a bad config file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from zbroker.cli.output import echo_table
from zbroker.config import DEFAULT_DATA_DIR, DEFAULT_PORT, ConfigError, load_config, single_node_config
from zbroker.errors import ZBrokerError

DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_PORT}"


class Fail(click.ClickException):
    """A one-line failure, exit 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class BadUsage(Fail):
    exit_code = 2


def parse_hostport(value: str, what: str = "--listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadUsage(f"{what}: expected HOST:PORT, got {value!r}")
    return host, int(port)


class _Group(click.Group):
    """Turns zbroker errors into one line instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except ConfigError as exc:
            raise BadUsage(str(exc)) from exc
        except ZBrokerError as exc:
            raise Fail(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise Fail(str(exc)) from exc
        except Exception as exc:
            if os.environ.get("ZBROKER_DEBUG"):
                raise
            raise Fail(f"unexpected {type(exc).__name__}: {exc} (set ZBROKER_DEBUG=1 for a traceback)") from exc


@click.group(cls=_Group)
@click.option(
    "--bootstrap",
    envvar="ZBROKER_BOOTSTRAP",
    default=DEFAULT_BOOTSTRAP,
    show_default=True,
    help="Brokers to contact first, HOST:PORT[,HOST:PORT...] (env ZBROKER_BOOTSTRAP).",
)
@click.pass_context
def cli(ctx: click.Context, bootstrap: str) -> None:
    """zbroker: a Kafka-style commit log over ZeroMQ + msgpack."""
    ctx.obj = {"bootstrap": bootstrap}


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Cluster config file (TOML).")
@click.option("--broker-id", type=int, help="Which broker of the config file this is (default: the first).")
@click.option("--data-dir", help=f"Data directory (default: ./{DEFAULT_DATA_DIR}, or the config's data_dir).")
@click.option("--listen", help=f"HOST:PORT to listen on (default: 127.0.0.1:{DEFAULT_PORT}, or the config's).")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def serve(config_path: str | None, broker_id: int | None, data_dir: str | None, listen: str | None, log_level: str) -> None:
    """Run a broker in the foreground until SIGTERM or Ctrl-C.

    Without --config: a single-node broker listening on 127.0.0.1:9555 with its
    data under ./zbroker-data and the default topic settings (docs/operations.md).
    """
    from zbroker.server import serve as run_server, setup_logging

    if config_path is None:
        host, port = parse_hostport(listen) if listen else ("127.0.0.1", DEFAULT_PORT)
        config = single_node_config(data_dir or DEFAULT_DATA_DIR, host, port)
        broker_id = config.brokers[0].id
    else:
        config = load_config(config_path)
        if broker_id is None:
            broker_id = config.brokers[0].id
        entry = config.broker(broker_id)
        changes = {}
        if data_dir:
            changes["data_dir"] = data_dir
        if listen:
            host, port = parse_hostport(listen)
            changes.update(host=host, port=port)
        if changes:
            config = config.with_broker(entry.id, **changes)
    Path(config.broker(broker_id).data_dir).mkdir(parents=True, exist_ok=True)
    setup_logging(log_level)
    run_server(config, broker_id)


def _admin(ctx: click.Context):
    from clients import Admin

    return Admin(bootstrap=ctx.obj["bootstrap"], request_timeout_ms=10000)


def _parse_configs(pairs: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadUsage(f"--config: expected KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


@cli.group()
def topics() -> None:
    """Create, list, describe, alter and delete topics."""


@topics.command("create")
@click.argument("name")
@click.option("--partitions", type=click.IntRange(1), help="Partition count (default: the broker's topic_defaults).")
@click.option("--replication-factor", type=click.IntRange(1), help="Replicas per partition (default: the broker's).")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", help="A per-topic setting; repeatable.")
@click.pass_context
def topics_create(ctx, name: str, partitions: int | None, replication_factor: int | None, configs: tuple[str, ...]) -> None:
    """Create topic NAME."""
    with _admin(ctx) as admin:
        admin.create_topic(name, partitions=partitions, replication_factor=replication_factor, config=_parse_configs(configs))
    click.echo(f"created topic {name}")


@topics.command("list")
@click.option("--internal", is_flag=True, help="Include internal topics.")
@click.pass_context
def topics_list(ctx, internal: bool) -> None:
    """List topic names."""
    with _admin(ctx) as admin:
        for name in sorted(admin.list_topics(internal=internal)):
            click.echo(name)


@topics.command("describe")
@click.argument("name")
@click.pass_context
def topics_describe(ctx, name: str) -> None:
    """Show a topic's partitions (leader, replicas, ISR, offsets) and settings."""
    with _admin(ctx) as admin:
        desc = admin.describe_topic(name)
    overrides = set(getattr(desc, "overrides", ()) or ())
    click.echo(f"Topic: {desc.name}  partitions: {len(desc.partitions)}")
    rows = [("PARTITION", "LEADER", "REPLICAS", "ISR", "EPOCH", "LOG_START", "HIGH_WATERMARK", "")]
    for p in desc.partitions:
        under = "under-replicated" if len(p.isr) < len(p.replicas) else ""
        rows.append(
            (str(p.partition), str(p.leader), ",".join(map(str, p.replicas)), ",".join(map(str, p.isr)),
             str(p.leader_epoch), str(p.log_start_offset), str(p.high_watermark), under)
        )
    echo_table(rows)
    click.echo("Config:")
    for key in sorted(desc.config):
        mark = "  (override)" if key in overrides else ""
        click.echo(f"  {key} = {_toml_value(desc.config[key])}{mark}")


def _toml_value(value) -> str:
    """A setting as ``--config KEY=VALUE`` takes it (true, 100, compact)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@topics.command("delete")
@click.argument("name")
@click.pass_context
def topics_delete(ctx, name: str) -> None:
    """Delete topic NAME and its data."""
    with _admin(ctx) as admin:
        admin.delete_topic(name)
    click.echo(f"deleted topic {name}")


@topics.command("alter")
@click.argument("name")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", help="Set a per-topic setting; repeatable.")
@click.option("--delete-config", "removals", multiple=True, metavar="KEY", help="Remove an override (back to the broker default).")
@click.option("--partitions", type=click.IntRange(1), help="Grow the topic to this many partitions.")
@click.pass_context
def topics_alter(ctx, name: str, configs: tuple[str, ...], removals: tuple[str, ...], partitions: int | None) -> None:
    """Change topic NAME's settings, or grow its partition count."""
    changes: dict[str, str | None] = _parse_configs(configs)
    changes.update({key: None for key in removals})
    if not changes and partitions is None:
        raise BadUsage("topics alter: nothing to change (give --config KEY=VALUE, --delete-config KEY or --partitions N)")
    with _admin(ctx) as admin:
        if changes:
            admin.alter_topic_config(name, changes)
            click.echo(f"altered topic {name}: " + ", ".join(f"{k}={'(default)' if v is None else v}" for k, v in changes.items()))
        if partitions is not None:
            admin.create_partitions(name, partitions)
            click.echo(f"topic {name} now has {partitions} partitions")
            click.echo("warning: keyed records now map to other partitions (murmur2(key) % partition count changed); "
                       "per-key order holds only among records sent after the change", err=True)


@cli.command()
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
    with Producer(bootstrap=ctx.obj["bootstrap"], acks="all" if acks == "all" else int(acks), linger_ms=5) as producer:
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


@cli.command()
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
    consumer = Consumer(bootstrap=ctx.obj["bootstrap"], auto_offset_reset=reset, group=group)
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


from zbroker.cli import bench, cluster, groups  # noqa: E402

cli.add_command(bench.bench)
cli.add_command(cluster.cluster)
cli.add_command(groups.groups)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        result = cli.main(args=argv, prog_name="zbroker", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except BrokenPipeError:  # `zbroker ... | head`: the reader left; not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
