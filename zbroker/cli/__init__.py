"""The `zbroker` command line (click): the main group, its global options and its commands.

One module per command group: ``serve``, ``topics``, ``io`` (produce and
consume), ``groups``, ``cluster``, ``bench``, ``keys``, ``acl``, ``users``, ``quota``; ``common`` (one-line errors, the
Admin client) and ``output`` (tables) are shared.  ``clients`` and the broker
are imported inside the commands that use them, so ``zbroker serve`` loads no
client code.  Errors and exit codes: see ``zbroker.cli.common``.
"""

from __future__ import annotations

import os
import sys

import click

from zbroker.cli import acl, bench, bridge, cluster, groups, io, keys, quota, serve, topics, users
from zbroker.cli.common import OneLineErrors, connect_options
from zbroker.config import DEFAULT_PORT

DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_PORT}"


@click.group(cls=OneLineErrors)
@click.option(
    "--bootstrap",
    envvar="ZBROKER_BOOTSTRAP",
    default=DEFAULT_BOOTSTRAP,
    show_default=True,
    help="Brokers to contact first, HOST:PORT[,HOST:PORT...] (env ZBROKER_BOOTSTRAP).",
)
@click.option("--curve-secret-key-file", envvar="ZBROKER_CURVE_SECRET_KEY_FILE", type=click.Path(dir_okay=False),
              help="This client's CurveZMQ key pair, NAME.key_secret, for brokers with [security] curve = true "
                   "(env ZBROKER_CURVE_SECRET_KEY_FILE).")
@click.option("--curve-server-key", envvar="ZBROKER_CURVE_SERVER_KEY", metavar="Z85|PATH",
              help="The first bootstrap broker's CurveZMQ public key, or its .key file (env ZBROKER_CURVE_SERVER_KEY).")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str, curve_secret_key_file: str | None, curve_server_key: str | None) -> None:
    """zbroker: a Kafka-style commit log over ZeroMQ + msgpack."""
    ctx.obj = {"bootstrap": bootstrap, "connect": connect_options(bootstrap, curve_secret_key_file, curve_server_key)}


for command in (serve.serve, topics.topics, io.produce, io.consume, groups.groups, cluster.cluster, bench.bench, keys.keys,
                acl.acl, users.users, quota.quota, bridge.bridge):
    cli.add_command(command)


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
