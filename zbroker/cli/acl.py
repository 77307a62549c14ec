"""`zbroker acl add|list|remove`: ACL bindings in the metadata log (docs/security.md, "ACLs").

``add`` and ``remove`` name one binding: ``--principal User:NAME`` (or ``User:*``), an
``--operation`` (read, write, create, delete, alter, describe, all), one resource
(``--topic T``, ``--group G`` or ``--cluster``), ``--pattern literal|prefixed`` (literal by
default; a literal ``*`` is every name) and ``--deny`` for a deny binding (allow by
default).  ``remove`` without ``--operation`` removes that principal's bindings of every
operation on the resource.  ``list`` shows the bindings its options match (all by
default; ``--pattern`` there may also be ``any`` or ``match``: every binding that applies
to a resource of that name).
"""

from __future__ import annotations

import click

from zbroker.cli.common import BadUsage, make_admin
from zbroker.cli.output import echo_table

OPERATIONS = ("read", "write", "create", "delete", "alter", "describe", "all")


def _resource(topic: str | None, group: str | None, cluster: bool, required: bool) -> tuple[str | None, str | None]:
    """``(resource_type, name)`` of the one resource option given."""
    given = [(kind, name) for kind, name in (("topic", topic), ("group", group), ("cluster", "cluster" if cluster else None))
             if name is not None]
    if len(given) > 1:
        raise BadUsage("give one resource: --topic, --group or --cluster")
    if not given:
        if required:
            raise BadUsage("missing resource: give --topic T, --group G or --cluster")
        return None, None
    return given[0]


def _options(principal: bool, operation: bool, filter_patterns: bool = False):
    """The options of a binding (``principal``, ``operation``: whether those are required)."""
    patterns = ("literal", "prefixed", "any", "match") if filter_patterns else ("literal", "prefixed")

    def decorate(command):
        for option in reversed([
            click.option("--principal", required=principal, help="User:NAME, or User:* for everyone."),
            click.option("--operation", type=click.Choice(OPERATIONS), required=operation,
                         help="What the binding allows (or denies)."),
            click.option("--topic", help="A topic (or, with --pattern prefixed, a name prefix)."),
            click.option("--group", help="A consumer group (or a prefix)."),
            click.option("--cluster", is_flag=True, help="The cluster (topic creation, ACLs, configs of brokers)."),
            click.option("--pattern", type=click.Choice(patterns), default=None,
                         help=f"How the name matches (default {'any' if filter_patterns else 'literal'})."),
            click.option("--deny", is_flag=True, help="A deny binding (deny wins over any allow)."),
        ]):
            command = option(command)
        return command

    return decorate


def _rows(bindings) -> list:
    rows = [("PERMISSION", "PRINCIPAL", "OPERATION", "RESOURCE", "NAME", "PATTERN")]
    rows += [(b.permission, b.principal, b.operation, b.resource_type, b.name, b.pattern) for b in bindings]
    return rows


@click.group()
def acl() -> None:
    """Add, list and remove ACLs (enforced while [security] is on)."""


@acl.command("add")
@_options(principal=True, operation=True)
@click.pass_context
def acl_add(ctx, principal, operation, topic, group, cluster, pattern, deny) -> None:
    """Add one binding: allow (or --deny) PRINCIPAL to do OPERATION on a resource."""
    from clients.acls import AclBinding

    kind, name = _resource(topic, group, cluster, required=True)
    binding = AclBinding(principal, kind, name, operation, pattern or "literal", "deny" if deny else "allow")
    with make_admin(ctx) as admin:
        admin.create_acls([binding])
    click.echo(f"added: {binding}")


@acl.command("list")
@_options(principal=False, operation=False, filter_patterns=True)
@click.pass_context
def acl_list(ctx, principal, operation, topic, group, cluster, pattern, deny) -> None:
    """List the bindings the options match (every binding by default)."""
    from clients.acls import AclFilter

    kind, name = _resource(topic, group, cluster, required=False)
    acl_filter = AclFilter(principal, kind, name, operation, pattern or "any", "deny" if deny else None)
    with make_admin(ctx) as admin:
        bindings = admin.describe_acls(acl_filter)
    if not bindings:
        click.echo("(no ACLs)")
        return
    echo_table(_rows(bindings))


@acl.command("remove")
@_options(principal=True, operation=False)
@click.pass_context
def acl_remove(ctx, principal, operation, topic, group, cluster, pattern, deny) -> None:
    """Remove a binding (every operation's, without --operation)."""
    from clients.acls import AclFilter

    kind, name = _resource(topic, group, cluster, required=True)
    acl_filter = AclFilter(principal, kind, name, operation, pattern or "literal", "deny" if deny else "allow")
    with make_admin(ctx) as admin:
        removed = admin.delete_acls([acl_filter])
    if not removed:
        click.echo("no ACL matched: nothing removed")
        return
    for b in removed:
        click.echo(f"removed: {b}")
