"""`zbroker groups list|describe|reset-offsets|delete`: consumer-group administration.

Registered on the main group by ``zbroker/cli/__init__.py``, which turns zbroker
errors into one line.  The client library is imported inside the commands
(``make_admin``).
"""

from __future__ import annotations

import click

from zbroker.cli.common import BadUsage, Fail, make_admin
from zbroker.cli.output import echo_table
from zbroker.errors import NonEmptyGroupError


@click.group()
def groups() -> None:
    """List, describe, reset the offsets of and delete consumer groups."""


@groups.command("list")
@click.pass_context
def groups_list(ctx) -> None:
    """List consumer group names, one per line."""
    with make_admin(ctx) as admin:
        names = admin.list_groups()
    for name in names:
        click.echo(name)


@groups.command("describe")
@click.argument("group")
@click.pass_context
def groups_describe(ctx, group: str) -> None:
    """Show GROUP's state, members, assignment, committed offsets and lag."""
    with make_admin(ctx) as admin:
        desc = admin.describe_group(group)
    owner: dict[tuple[str, int], object] = {}
    for m in desc.members:
        for tp in m.revoking:
            owner.setdefault(tuple(tp), m)
        for tp in m.assignment:
            owner[tuple(tp)] = m
    click.echo(f"Group: {desc.group}  state: {desc.state}  members: {len(desc.members)}")
    rows = [("TOPIC", "PARTITION", "MEMBER", "CLIENT", "COMMITTED", "LOG_END", "LAG")]
    for tp in sorted(set(desc.offsets) | set(owner)):
        info = desc.offsets.get(tp)
        m = owner.get(tp)
        numbers = (info.committed, info.log_end, info.lag) if info else (-1, -1, -1)
        rows.append((tp[0], str(tp[1]), m.member_id if m else "-", (m.client_id or "-") if m else "-",
                     *("-" if n < 0 else str(n) for n in numbers)))
    echo_table(rows)
    click.echo("Members:")
    if not desc.members:
        click.echo("  (none)")
        return
    mrows = [("MEMBER", "CLIENT", "INSTANCE", "EPOCH", "ASSIGNED")]
    for m in desc.members:
        mrows.append((m.member_id, m.client_id or "-", m.instance_id or "-", str(m.member_epoch), str(len(m.assignment))))
    echo_table(mrows, indent="  ")


@groups.command("reset-offsets")
@click.argument("group")
@click.option("--topic", required=True, help="The topic whose offsets to reset.")
@click.option("--to-earliest", is_flag=True, help="The first offset still in the log.")
@click.option("--to-latest", is_flag=True, help="The log end (skip everything there now).")
@click.option("--to-offset", type=click.IntRange(0), help="This offset (clamped into each partition's log).")
@click.option("--to-datetime", metavar="ISO", help="The first record at or after this time (ISO-8601; no zone = local time).")
@click.option("--partition", "partitions", type=click.IntRange(0), multiple=True, help="Only this partition; repeatable (default: all).")
@click.pass_context
def groups_reset_offsets(ctx, group: str, topic: str, to_earliest: bool, to_latest: bool, to_offset: int | None,
                         to_datetime: str | None, partitions: tuple[int, ...]) -> None:
    """Set GROUP's committed offsets of --topic; the group's consumers must be stopped."""
    chosen = [name for name, given in (("--to-earliest", to_earliest), ("--to-latest", to_latest),
                                       ("--to-offset", to_offset is not None), ("--to-datetime", to_datetime is not None)) if given]
    if len(chosen) != 1:
        what = "none given" if not chosen else "got " + " and ".join(chosen)
        raise BadUsage(f"reset-offsets: give exactly one of --to-earliest, --to-latest, --to-offset N, --to-datetime ISO ({what})")
    if to_datetime is not None:
        from datetime import datetime

        try:
            datetime.fromisoformat(to_datetime.strip())
        except ValueError:
            raise BadUsage(f"--to-datetime: not an ISO-8601 date/time: {to_datetime!r}") from None
    with make_admin(ctx) as admin:
        try:
            new = admin.reset_offsets(group, topic, to_earliest=to_earliest, to_latest=to_latest, to_offset=to_offset,
                                      to_datetime=to_datetime, partitions=list(partitions) or None)
        except NonEmptyGroupError:
            raise Fail(f"group {group!r} has active members: stop the consumers first, then reset its offsets") from None
        except ValueError as exc:
            raise BadUsage(str(exc)) from None
    for (t, p), offset in sorted(new.items()):
        click.echo(f"{t}-{p} -> {offset}")


@groups.command("delete")
@click.argument("group")
@click.pass_context
def groups_delete(ctx, group: str) -> None:
    """Delete GROUP and its committed offsets (it must have no members)."""
    with make_admin(ctx) as admin:
        try:
            admin.delete_group(group)
        except NonEmptyGroupError:
            raise Fail(f"group {group!r} has active members: stop the consumers first, then delete it") from None
    click.echo(f"deleted group {group}")
