"""What the CLI's command modules share: one-line failures and the Admin they talk to.

Every command prints one clear line and exits non-zero on error; no
tracebacks reach the user (``ZBROKER_DEBUG=1`` shows them).  Exit codes:
0 success, 1 a failed operation (the broker said no, or nobody answered),
2 bad usage or a bad config file.
"""

from __future__ import annotations

import os

import click

from zbroker.config import ConfigError
from zbroker.errors import ZBrokerError


class Fail(click.ClickException):
    """A one-line failure, exit 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class BadUsage(Fail):
    exit_code = 2


class OneLineErrors(click.Group):
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


def connect_options(bootstrap: str, curve_secret_key_file: str | None, curve_server_key: str | None) -> dict:
    """The client keyword arguments the global options give: ``--bootstrap`` and the CurveZMQ keys."""
    if (curve_secret_key_file is None) != (curve_server_key is None):
        missing = "--curve-server-key" if curve_server_key is None else "--curve-secret-key-file"
        raise BadUsage(f"{missing}: missing: CurveZMQ needs both --curve-secret-key-file and --curve-server-key "
                       f"(or ZBROKER_CURVE_SECRET_KEY_FILE and ZBROKER_CURVE_SERVER_KEY)")
    return {"bootstrap": bootstrap, "curve_secret_key_file": curve_secret_key_file, "curve_server_key": curve_server_key}


def make_admin(ctx: click.Context):
    """An Admin client for the global options (clients is imported here, not at start-up)."""
    from clients import Admin

    return Admin(**ctx.obj["connect"], request_timeout_ms=10000)
