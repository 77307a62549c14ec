"""Output helpers shared by the CLI's command modules (``topics``, ``groups``, ``cluster``)."""

from __future__ import annotations

import click


def echo_table(rows: list, indent: str = "") -> None:
    """Print rows of strings as left-aligned columns, two spaces apart (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
