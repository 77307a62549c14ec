"""`zbroker quota set|list|remove`: client byte-rate quotas (docs/security.md, "Quotas and limits").

A quota bounds the bytes per second one principal may produce and fetch on each broker;
``--default`` names the quotas of every principal without its own.  They live in the
metadata log: a change reaches every broker as the log does and holds across restarts.
Registered on the main group by ``zbroker/cli/__init__.py``; the client library is
imported inside the commands (``make_admin``).
"""

from __future__ import annotations

import click

from zbroker.cli.common import BadUsage, make_admin
from zbroker.cli.output import echo_table

DEFAULT = "<default>"

_RATE = click.FloatRange(min=1, max=2**53)


def _principal(principal: str | None, default: bool) -> str:
    """The principal named (the broker checks its form), or the default's."""
    if (principal is None) == (not default):
        raise BadUsage("give exactly one of --principal User:NAME and --default")
    return DEFAULT if default else principal


def _whole(rate: float | None) -> float | int | None:
    """1000.0 -> 1000: whole rates are stored and shown as integers."""
    return int(rate) if rate is not None and rate == int(rate) else rate


def _shown(rate) -> str:
    return "-" if rate is None else f"{_whole(rate)}"


def _principal_options(fn):
    fn = click.option("--default", "default", is_flag=True, help="The quotas of every principal without its own.")(fn)
    return click.option("--principal", metavar="User:NAME", help="Whose quotas.")(fn)


@click.group()
def quota() -> None:
    """Produce and fetch byte-rate quotas per principal."""


@quota.command("set")
@_principal_options
@click.option("--produce-bytes-per-s", "produce", type=_RATE, help="Bytes per second it may produce, per broker.")
@click.option("--fetch-bytes-per-s", "fetch", type=_RATE, help="Bytes per second it may fetch, per broker.")
@click.pass_context
def quota_set(ctx, principal: str | None, default: bool, produce: float | None, fetch: float | None) -> None:
    """Set a principal's (or the default) quotas; a rate not given keeps its value."""
    who = _principal(principal, default)
    if produce is None and fetch is None:
        raise BadUsage("quota set: give --produce-bytes-per-s N, --fetch-bytes-per-s N or both")
    with make_admin(ctx) as admin:
        admin.set_quota(who, _whole(produce), _whole(fetch))
    changed = ", ".join(f"{what} {_shown(rate)} B/s" for what, rate in (("produce", produce), ("fetch", fetch)) if rate is not None)
    click.echo(f"quota of {who}: {changed}")


@quota.command("list")
@click.option("--principal", "principals", metavar="User:NAME", multiple=True, help="Only this principal; repeatable.")
@click.pass_context
def quota_list(ctx, principals: tuple[str, ...]) -> None:
    """List the quotas set ('-': no bound)."""
    with make_admin(ctx) as admin:
        quotas = admin.list_quotas(list(principals) or None)
    if not quotas:
        click.echo("no quotas set")
        return
    rows = [("PRINCIPAL", "PRODUCE_BYTES_PER_S", "FETCH_BYTES_PER_S")]
    rows += [(q.principal, _shown(q.produce_bytes_per_s), _shown(q.fetch_bytes_per_s)) for q in quotas]
    echo_table(rows)


@quota.command("remove")
@_principal_options
@click.option("--produce", is_flag=True, help="Only the produce quota.")
@click.option("--fetch", is_flag=True, help="Only the fetch quota.")
@click.pass_context
def quota_remove(ctx, principal: str | None, default: bool, produce: bool, fetch: bool) -> None:
    """Remove a principal's (or the default) quotas: both, or those named."""
    who = _principal(principal, default)
    with make_admin(ctx) as admin:
        admin.remove_quota(who, produce=produce or not fetch, fetch=fetch or not produce)
    what = "quotas" if produce == fetch else "produce quota" if produce else "fetch quota"
    click.echo(f"removed the {what} of {who}")
