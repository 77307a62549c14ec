"""`zbroker acl add|list|remove` against a real broker, and ACLs enforced by a real broker
with security on."""

from __future__ import annotations

import pytest

from support import BrokerProcess, free_port, one_line_error, run_cli

pytestmark = pytest.mark.timeout(120)


def acl(broker, *args):
    return run_cli("acl", *args, bootstrap=broker.bootstrap)


def test_add_list_remove_round_trip(broker):
    out = acl(broker, "add", "--principal", "User:alice", "--operation", "read", "--topic", "logs-", "--pattern", "prefixed")
    assert out.returncode == 0, out.stderr
    assert "added: allow User:alice read topic 'logs-' (prefixed)" in out.stdout.decode()
    assert acl(broker, "add", "--principal", "User:*", "--operation", "write", "--topic", "secret", "--deny").returncode == 0
    assert acl(broker, "add", "--principal", "User:ops", "--operation", "all", "--cluster").returncode == 0
    listed = acl(broker, "list").stdout.decode().splitlines()
    assert listed[0].split() == ["PERMISSION", "PRINCIPAL", "OPERATION", "RESOURCE", "NAME", "PATTERN"]
    assert [line.split() for line in listed[1:]] == [  # sorted by principal
        ["deny", "User:*", "write", "topic", "secret", "literal"],
        ["allow", "User:alice", "read", "topic", "logs-", "prefixed"],
        ["allow", "User:ops", "all", "cluster", "cluster", "literal"],
    ]
    # what applies to one topic (MATCH), and one principal's
    matching = acl(broker, "list", "--topic", "logs-app", "--pattern", "match").stdout.decode()
    assert "User:alice" in matching and "secret" not in matching
    assert "User:ops" in acl(broker, "list", "--principal", "User:ops").stdout.decode()
    removed = acl(broker, "remove", "--principal", "User:alice", "--topic", "logs-", "--pattern", "prefixed")
    assert removed.returncode == 0 and "removed: allow User:alice read topic 'logs-' (prefixed)" in removed.stdout.decode()
    assert "no ACL matched" in acl(broker, "remove", "--principal", "User:alice", "--topic", "logs-").stdout.decode()
    assert "User:alice" not in acl(broker, "list").stdout.decode()


def test_bad_bindings_are_refused_in_one_line(broker):
    out = acl(broker, "add", "--principal", "alice", "--operation", "read", "--topic", "t")
    assert out.returncode == 1 and "principal must look like User:NAME" in one_line_error(out)
    out = acl(broker, "add", "--principal", "User:a", "--operation", "read", "--topic", "t", "--group", "g")
    assert out.returncode == 2 and "give one resource" in one_line_error(out)
    out = acl(broker, "add", "--principal", "User:a", "--operation", "read")
    assert out.returncode == 2 and "missing resource" in one_line_error(out)


def test_with_security_on_what_no_acl_allows_is_refused(tmp_path):
    """Until a door authenticates clients, CLI clients are User:ANONYMOUS: refused
    everything; once User:ANONYMOUS is a super user, allowed everything."""
    def start(super_users: str) -> BrokerProcess:
        config = tmp_path / f"secure-{len(super_users)}.toml"
        config.write_text(f'[security]\nkafka_sasl = ["SCRAM-SHA-256"]\nsuper_users = [{super_users}]\n'
                          f'[[broker]]\nid = 1\nport = {free_port()}\ndata_dir = "{tmp_path / "data"}"\n')
        proc = BrokerProcess(tmp_path / "data", config=config)
        proc.use_config_only = True
        proc.port = int(config.read_text().split("port = ")[1].split()[0])
        return proc.start()

    proc = start("")
    try:
        out = acl(proc, "list")
        assert out.returncode == 1 and "ClusterAuthorizationFailed" in one_line_error(out)
        out = run_cli("topics", "create", "t", bootstrap=proc.bootstrap)
        assert out.returncode == 1 and "TopicAuthorizationFailed" in one_line_error(out)
        out = run_cli("produce", "t", bootstrap=proc.bootstrap, input=b"x\n")  # refused at once, not timing out
        assert out.returncode == 1 and "TopicAuthorizationFailed" in one_line_error(out)
    finally:
        proc.close()
    proc = start('"User:ANONYMOUS"')
    try:
        assert run_cli("topics", "create", "t", bootstrap=proc.bootstrap).returncode == 0
        assert acl(proc, "add", "--principal", "User:bob", "--operation", "read", "--topic", "t").returncode == 0
        assert "User:bob" in acl(proc, "list").stdout.decode()
    finally:
        proc.close()
