"""`zbroker serve` refuses a config or data_dir it cannot work with: one line naming the key
(and the file and broker), exit code 2, no traceback, before anything binds."""

from __future__ import annotations

import pytest

from support import BrokerProcess, free_port, one_line_error, run_cli

pytestmark = pytest.mark.timeout(60)


def test_a_data_dir_under_a_regular_file_is_named_with_the_broker_and_file(tmp_path):
    (tmp_path / "plain").write_text("not a directory")
    config = tmp_path / "c.toml"
    config.write_text(f'[[broker]]\nid = 7\nport = {free_port()}\ndata_dir = "plain/data"\n')
    out = run_cli("serve", "--config", str(config))
    assert out.returncode == 2
    assert one_line_error(out) == (f"error: {config}: broker[0].data_dir: cannot create "
                                   f"'{tmp_path / 'plain' / 'data'}' (broker id 7): Not a directory")


def test_a_data_dir_given_on_the_command_line_is_named_too(tmp_path):
    (tmp_path / "plain").write_text("")
    out = run_cli("serve", "--data-dir", str(tmp_path / "plain"), "--listen", f"127.0.0.1:{free_port()}", "--kafka-listen", "none")
    assert out.returncode == 2
    line = one_line_error(out)
    assert line.startswith("error: broker[0].data_dir: cannot create ")
    assert "(from --data-dir) (broker id 1): it exists and is not a directory" in line


def test_a_broker_process_with_a_bad_data_dir_exits_with_one_line(tmp_path):
    (tmp_path / "d").write_text("a file where the data directory should be")
    broker = BrokerProcess(tmp_path / "d")
    try:
        broker.start(wait=False)
        assert broker.proc.wait(30) == 2
        lines = [line for line in broker.log_text().splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in broker.log_text(tail=None)
        assert lines[0].startswith("error: broker[0].data_dir: ") and str(tmp_path / "d") in lines[0]
    finally:
        broker.close()


def test_a_rule_across_keys_stops_serve_with_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f"[cluster]\nheartbeat_ms = 300\nsession_timeout_ms = 500\n[[broker]]\nid = 1\nport = {free_port()}\n")
    out = run_cli("serve", "--config", str(config))
    assert out.returncode == 2
    assert one_line_error(out).startswith(f"error: {config}: cluster.heartbeat_ms=300, cluster.session_timeout_ms=500: ")


def test_a_data_dir_that_exists_but_cannot_be_written_is_named(tmp_path):
    # root ignores permission bits: /proc/self is a directory nobody can create files in
    out = run_cli("serve", "--data-dir", "/proc/self", "--listen", f"127.0.0.1:{free_port()}", "--kafka-listen", "none")
    assert out.returncode == 2
    assert one_line_error(out).startswith("error: broker[0].data_dir: cannot write '/proc/self' (from --data-dir) (broker id 1): ")
