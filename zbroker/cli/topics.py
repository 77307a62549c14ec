"""`zbroker topics create|list|describe|delete|alter`: topic administration."""

from __future__ import annotations

import click

from zbroker.cli.common import BadUsage, make_admin
from zbroker.cli.output import echo_table
from zbroker.config import topic_config_from_text


def _parse_configs(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs, each value as its key's type (the broker wants typed values);
    a value that does not parse is sent as text, for the broker to name."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadUsage(f"--config: expected KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return topic_config_from_text(out)


@click.group()
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
    with make_admin(ctx) as admin:
        admin.create_topic(name, partitions=partitions, replication_factor=replication_factor, config=_parse_configs(configs))
    click.echo(f"created topic {name}")


@topics.command("list")
@click.option("--internal", is_flag=True, help="Include internal topics.")
@click.pass_context
def topics_list(ctx, internal: bool) -> None:
    """List topic names."""
    with make_admin(ctx) as admin:
        for name in sorted(admin.list_topics(internal=internal)):
            click.echo(name)


@topics.command("describe")
@click.argument("name")
@click.pass_context
def topics_describe(ctx, name: str) -> None:
    """Show a topic's partitions (leader, replicas, ISR, offsets) and settings."""
    with make_admin(ctx) as admin:
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
    with make_admin(ctx) as admin:
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
    changes = _parse_configs(configs)
    changes.update({key: None for key in removals})
    if not changes and partitions is None:
        raise BadUsage("topics alter: nothing to change (give --config KEY=VALUE, --delete-config KEY or --partitions N)")
    with make_admin(ctx) as admin:
        if changes:
            admin.alter_topic_config(name, changes)
            click.echo(f"altered topic {name}: " + ", ".join(f"{k}={'(default)' if v is None else _toml_value(v)}" for k, v in changes.items()))
        if partitions is not None:
            admin.create_partitions(name, partitions)
            click.echo(f"topic {name} now has {partitions} partitions")
            click.echo("warning: keyed records now map to other partitions (murmur2(key) % partition count changed); "
                       "per-key order holds only among records sent after the change", err=True)
