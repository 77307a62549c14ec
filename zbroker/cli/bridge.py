"""`zbroker bridge status`: what every bridge and mirror of the cluster is doing (docs/bridge.md).

Each broker answers for the bridges it runs (a bridge runs on the broker its config names,
a mirror on the controller's broker); the command asks them all.  Registered on the main
group by ``zbroker/cli/__init__.py``; the client library is imported inside the command
(``make_admin``).
"""

from __future__ import annotations

import json

import click

from zbroker.cli.common import make_admin
from zbroker.cli.output import echo_table

#: status keys shown as columns, in order, when any entry has them (the rest: --json)
_COUNTERS = ("received", "stored", "sent", "mirrored", "dropped", "failed", "in_flight", "held", "lag")


def _lag(entry: dict):
    """A mirror's or egress bridge's total lag: from its ``lag``, or the sum over its partitions."""
    if "lag" in entry:
        return entry["lag"]
    parts = entry.get("partitions")
    if isinstance(parts, list) and parts and all(isinstance(p, dict) and isinstance(p.get("lag"), int) for p in parts):
        return sum(p["lag"] for p in parts)
    return None


def _cell(value) -> str:
    return "-" if value is None else str(value)


@click.group()
def bridge() -> None:
    """Bridges to plain ZeroMQ sockets and mirrors of other clusters."""


@bridge.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print every field of every bridge and mirror as JSON.")
@click.pass_context
def bridge_status(ctx, as_json: bool) -> None:
    """Each bridge and mirror: where it runs, its state, its counters, positions and lag."""
    with make_admin(ctx) as admin:
        entries = admin.bridge_status()
    if as_json:
        click.echo(json.dumps(entries, indent=2, sort_keys=True, default=str))
        return
    if not entries:
        click.echo("no bridges or mirrors are configured")
        return
    for entry in entries:
        entry.setdefault("lag", _lag(entry))
    columns = [c for c in _COUNTERS if any(e.get(c) is not None for e in entries)]
    rows = [["NAME", "KIND", "BROKER", "STATE", *(c.upper().replace("_", " ") for c in columns)]]
    for e in entries:
        if e.get("name") is None:
            rows.append(["?", "?", _cell(e.get("broker")), f"unreachable: {e.get('error')}", *("-" for _ in columns)])
            continue
        rows.append([e["name"], _cell(e.get("kind")), _cell(e.get("broker")), _cell(e.get("state")),
                     *(_cell(e.get(c)) for c in columns)])
    echo_table(rows)
    errors = [(e["name"], e["last_error"]) for e in entries if e.get("name") and e.get("last_error")]
    for name, error in errors:
        click.echo(f"{name}: last error: {error}")
