"""`zbroker keys generate`: CurveZMQ key pairs in zmq.auth's format, never overwritten."""

from __future__ import annotations

import stat

import pytest
import zmq
import zmq.auth

from support import one_line_error, run_cli

pytestmark = pytest.mark.timeout(60)


def test_generate_writes_a_pair_zmq_auth_reads_with_the_secret_for_its_owner_only(tmp_path):
    out = run_cli("keys", "generate", "alice", "--dir", str(tmp_path / "keys"))
    assert out.returncode == 0, out.stderr
    public, secret = tmp_path / "keys" / "alice.key", tmp_path / "keys" / "alice.key_secret"
    public_key, none = zmq.auth.load_certificate(str(public))
    same_public, secret_key = zmq.auth.load_certificate(str(secret))
    assert none is None and same_public == public_key and len(public_key) == 40 and len(secret_key) == 40
    assert zmq.curve_public(secret_key) == public_key  # a real pair
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert public_key.decode() in out.stdout.decode()


def test_an_existing_key_is_never_overwritten(tmp_path):
    assert run_cli("keys", "generate", "bob", "--dir", str(tmp_path)).returncode == 0
    before = (tmp_path / "bob.key_secret").read_bytes()
    out = run_cli("keys", "generate", "bob", "--dir", str(tmp_path))
    assert out.returncode == 2 and "exists: refusing to overwrite" in one_line_error(out)
    assert (tmp_path / "bob.key_secret").read_bytes() == before


@pytest.mark.parametrize("name", ["../evil", ".hidden", "a b", "x" * 129, ""])
def test_a_name_that_is_no_principal_name_is_refused(tmp_path, name):
    out = run_cli("keys", "generate", name, "--dir", str(tmp_path))
    assert out.returncode == 2 and "is not a key name" in one_line_error(out)
    assert list(tmp_path.iterdir()) == []
