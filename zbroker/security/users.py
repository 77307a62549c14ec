"""SASL users, what both front doors share: the rule for a user name, and SCRAM's keys.

A user ``NAME`` is the principal ``User:NAME``.  Names are letters, digits, ``.``, ``_``
and ``-``, at most 128, not starting with ``.``: the same names as ``zbroker keys
generate``'s, and none that SCRAM has to escape (``,`` and ``=``).

RFC 5802's keys, from a password's ``SaltedPassword = PBKDF2(SASLprep(password), salt, i)``::

    ClientKey = HMAC(SaltedPassword, "Client Key")     StoredKey = H(ClientKey)
    ServerKey = HMAC(SaltedPassword, "Server Key")

The metadata log keeps salt, iterations, StoredKey and ServerKey: enough to check a login,
not enough to make one (that takes the ClientKey).
"""

from __future__ import annotations

import hashlib
import hmac
import re

USER_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: SCRAM mechanism -> its hash (hashlib's name).
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


def check_user_name(name: str) -> str:
    """``name`` if it is a user name.

    Raises:
        ValueError: naming the rule.
    """
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise ValueError(f"user {name!r:.80} is not a user name (letters, digits, '.', '_', '-'; at most 128; "
                         f"not starting with '.')")
    return name


def scram_keys(mechanism: str, salted_password: bytes) -> tuple[bytes, bytes]:
    """``(StoredKey, ServerKey)`` of a SaltedPassword for ``mechanism``."""
    name = SCRAM_HASHES[mechanism]
    client_key = hmac.new(salted_password, b"Client Key", name).digest()
    return hashlib.new(name, client_key).digest(), hmac.new(salted_password, b"Server Key", name).digest()
