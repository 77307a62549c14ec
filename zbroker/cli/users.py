"""`zbroker users add NAME --password PW | remove NAME | list`: SASL users of the Kafka front door.

``add`` computes the user's SCRAM-SHA-256 and SCRAM-SHA-512 credentials here (a random salt
each, ``--iterations``, RFC 5802's StoredKey and ServerKey) and sends only those: the
password never leaves this process, and the metadata log keeps nothing a client could log
in with.  ``add`` on an existing user replaces its credentials (a password change).  Without
``--password`` the password is asked for (twice) on the terminal, or read as one line from
standard input.  Changing users needs ALTER on the cluster, listing them DESCRIBE.
"""

from __future__ import annotations

import click

from zbroker.cli.common import BadUsage, make_admin
from zbroker.cli.output import echo_table

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@click.group()
def users() -> None:
    """SASL users (SCRAM credentials) for Kafka clients."""


@users.command("add")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="The user's password (asked for if not given; note that a password on the command line is seen "
                   "by other local users in the process list).")
@click.option("--iterations", type=click.IntRange(4096, 1 << 20), default=4096, show_default=True,
              help="PBKDF2 iterations of the credentials (SCRAM clients pay them at each login, the broker at each "
                   "PLAIN login).")
@click.pass_context
def users_add(ctx, name: str, password: str, iterations: int) -> None:
    """Add user NAME, or set its password anew."""
    if not password:
        raise BadUsage("--password: empty")
    with make_admin(ctx) as admin:
        try:
            admin.add_user(name, password, iterations=iterations, mechanisms=SCRAM_MECHANISMS)
        except ValueError as exc:
            raise BadUsage(str(exc)) from None
    click.echo(f"user {name}: credentials set for {', '.join(SCRAM_MECHANISMS)} ({iterations} iterations); "
               f"Kafka principal User:{name}")


@users.command("remove")
@click.argument("name")
@click.pass_context
def users_remove(ctx, name: str) -> None:
    """Remove user NAME (its open Kafka connections are closed at their next request)."""
    with make_admin(ctx) as admin:
        admin.remove_user(name)
    click.echo(f"removed user {name}")


@users.command("list")
@click.pass_context
def users_list(ctx) -> None:
    """List users and their mechanisms (never keys)."""
    with make_admin(ctx) as admin:
        found = admin.list_users()
    rows = [("USER", "MECHANISMS", "ITERATIONS")]
    for name, mechanisms in sorted(found.items()):
        rows.append((name, ",".join(sorted(mechanisms)), ",".join(str(i) for i in sorted(set(mechanisms.values())))))
    echo_table(rows)
