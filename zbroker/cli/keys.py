"""`zbroker keys generate NAME [--dir DIR]`: a CurveZMQ key pair for a client or a broker.

Writes ``NAME.key`` (the public key) and ``NAME.key_secret`` (the public and the secret
key) in pyzmq's ``zmq.auth`` certificate format, the files CURVE needs on each side
(DESIGN §11): a client's ``NAME.key`` goes into the brokers' ``authorized_keys_dir``, where
its file name is its principal (``User:NAME``); the secret file stays with its owner and is
written readable by its owner only.  Existing files are never overwritten.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from zbroker.cli.common import BadUsage

#: A key's name is a principal's name: letters, digits, ``.``, ``_`` and ``-``, not starting with ``.``.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


@click.group()
def keys() -> None:
    """CurveZMQ key pairs."""


@keys.command()
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to write NAME.key and NAME.key_secret (created if missing).")
def generate(name: str, directory: str) -> None:
    """Write a key pair: NAME.key (public) and NAME.key_secret (secret, mode 0600)."""
    import zmq
    import zmq.auth

    if not NAME.fullmatch(name):
        raise BadUsage(f"NAME: {name!r} is not a key name (letters, digits, '.', '_', '-'; at most 128; "
                       "not starting with '.'): it becomes the principal User:NAME")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise BadUsage(f"{path} exists: refusing to overwrite a key (remove it first to replace it)")
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(folder), name)
    finally:
        os.umask(old_umask)
    os.chmod(public_file, 0o644)
    os.chmod(secret_file, 0o600)
    public_key, _ = zmq.auth.load_certificate(public_file)
    click.echo(f"public key  {public_file}  {public_key.decode()}")
    click.echo(f"secret key  {secret_file}  (keep it to its owner: mode 0600)")
