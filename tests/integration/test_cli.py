"""The `zbroker` command line, run as a user runs it, against a real broker."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from support import BrokerProcess, RawClient, free_port, one_line_error, run_cli

pytestmark = pytest.mark.timeout(90)


def zb(*args: str, bootstrap: str | None = None, input: bytes | None = None, timeout: float = 60, cwd=None):
    return run_cli(*args, bootstrap=bootstrap, input=input, timeout=timeout, cwd=cwd)


def test_topics_create_list_describe_alter_delete(broker):
    b = broker.bootstrap
    out = zb("topics", "create", "orders", "--partitions", "4", "--config", "retention_ms=3600000", bootstrap=b)
    assert out.returncode == 0, out.stderr
    assert zb("topics", "list", bootstrap=b).stdout.decode().split() == ["orders"]
    desc = zb("topics", "describe", "orders", bootstrap=b).stdout.decode()
    assert "partitions: 4" in desc
    assert "retention_ms = 3600000  (override)" in desc and "segment_bytes = 1073741824\n" in desc
    assert "unclean_leader_election = false\n" in desc and "cleanup_policy = delete\n" in desc
    assert zb("topics", "alter", "orders", "--config", "segment_ms=1000", bootstrap=b).returncode == 0
    assert "segment_ms = 1000  (override)" in zb("topics", "describe", "orders", bootstrap=b).stdout.decode()
    assert zb("topics", "delete", "orders", bootstrap=b).returncode == 0
    assert zb("topics", "list", bootstrap=b).stdout.decode().split() == []


def test_produce_lines_then_consume_them_with_keys_and_offsets(broker):
    b = broker.bootstrap
    zb("topics", "create", "t", "--partitions", "1", bootstrap=b)
    lines = b"".join(b"k%d:value %d\n" % (i, i) for i in range(50))
    out = zb("produce", "t", "--key-separator", ":", bootstrap=b, input=lines)
    assert out.returncode == 0, out.stderr
    assert "produced 50 record(s)" in out.stderr.decode()
    out = zb("consume", "t", "--from-beginning", "--max-messages", "50", "--print-key", "--print-offset", bootstrap=b)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [f"0:{i}\tk{i}\tvalue {i}" for i in range(50)]


def test_consume_one_partition_from_an_offset_and_stop_when_idle(broker):
    b = broker.bootstrap
    zb("topics", "create", "t", "--partitions", "2", bootstrap=b)
    zb("produce", "t", "--partition", "1", bootstrap=b, input=b"a\nb\nc\n")
    out = zb("consume", "t", "--partition", "1", "--offset", "1", "--timeout-ms", "1500", bootstrap=b)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["b", "c"]


def test_equal_keys_share_a_partition(broker):
    b = broker.bootstrap
    zb("topics", "create", "t", "--partitions", "3", bootstrap=b)
    keyed = b"".join(b"same:%d\n" % i for i in range(30))
    zb("produce", "t", "--key-separator", ":", bootstrap=b, input=keyed)
    out = zb("consume", "t", "--from-beginning", "--max-messages", "30", "--print-offset", bootstrap=b)
    assert len({line.split(":")[0] for line in out.stdout.decode().splitlines()}) == 1


def test_errors_are_one_line_without_traceback(broker, tmp_path):
    b = broker.bootstrap
    out = zb("topics", "describe", "missing", bootstrap=b)
    assert out.returncode == 1 and "missing" in one_line_error(out)
    zb("topics", "create", "dup", bootstrap=b)
    out = zb("topics", "create", "dup", bootstrap=b)
    assert out.returncode == 1 and "already exists" in one_line_error(out)
    out = zb("topics", "create", "x", "--config", "retention_ms=soon", bootstrap=b)
    assert out.returncode == 1 and "retention_ms" in one_line_error(out)
    out = zb("topics", "create", "x", "--config", "nonsense", bootstrap=b)
    assert out.returncode == 2 and "KEY=VALUE" in one_line_error(out)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[broker]]\nid = 1\nport = 'x'\n")
    out = zb("serve", "--config", str(bad))
    assert out.returncode == 2 and one_line_error(out) == f"error: {bad}: broker[0].port: must be an integer from 1 to 65535, got 'x'"


def test_no_broker_is_one_line_not_a_hang(tmp_path):
    out = zb("topics", "list", bootstrap=f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    one_line_error(out)


def test_serve_without_config_uses_the_documented_defaults(tmp_path):
    for port in (9555, 9092):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"something already listens on 127.0.0.1:{port}")
    proc = BrokerProcess(tmp_path / "zbroker-data", port=9555)
    args = [sys.executable, "-m", "zbroker", "serve"]
    proc.proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait_ready()
        header, _ = RawClient("127.0.0.1:9555").call("create_topic", topic="t")
        assert header["error"] == 0
        assert (tmp_path / "zbroker-data" / "t-0").is_dir() and (tmp_path / "zbroker-data" / "t-2").is_dir()
        with socket.create_connection(("127.0.0.1", 9092), timeout=5):
            pass  # and the Kafka front door on its default port
        assert proc.stop() == 0
    finally:
        proc.close()
