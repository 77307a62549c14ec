"""`zbroker cluster up|down|status CONFIG`, run as a user runs it, with real broker processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from support import RawClient, cluster_secret, free_port, wait_until
from zbroker.cli.cluster import is_our_broker, pid_alive

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]

ZBROKER = [sys.executable, "-m", "zbroker"]


def zb(*args: str, timeout: float = 50) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ZBROKER_DEBUG", None)
    proc = subprocess.run([*ZBROKER, *args], capture_output=True, timeout=timeout, env=env, cwd=REPO)
    proc.out = proc.stdout.decode()  # type: ignore[attr-defined]
    proc.err = proc.stderr.decode()  # type: ignore[attr-defined]
    return proc


def write_config(tmp_path: Path, brokers: int = 1, name: str = "test") -> tuple[Path, list[dict]]:
    entries = []
    text = f'[security]\ncluster_secret = "{cluster_secret()}"\n\n'
    text += f'[cluster]\nname = "{name}"\nheartbeat_ms = 100\nsession_timeout_ms = 1000\n\n'
    for i in range(1, brokers + 1):
        port, gossip, peer = free_port(), free_port(), free_port()
        entry = {"id": i, "port": port, "gossip_port": gossip, "data_dir": tmp_path / "data" / str(i)}
        entries.append(entry)
        text += (f'[[broker]]\nid = {i}\nhost = "127.0.0.1"\nport = {port}\ngossip_port = {gossip}\npeer_port = {peer}\n'
                 f'data_dir = "data/{i}"\n\n')
    text += f"[topic_defaults]\npartitions = 2\nreplication_factor = {brokers}\nmin_insync_replicas = 1\n"
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path, entries


def pid_of(entry: dict) -> int | None:
    try:
        return int((entry["data_dir"] / "broker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


@pytest.fixture
def cleanup():
    """Collects broker entries; at the end SIGKILLs every broker whose pid file is still there."""
    entries: list[dict] = []
    try:
        yield entries
    finally:
        for entry in entries:
            pid = pid_of(entry)
            if pid is not None and is_our_broker(pid, entry["id"]):
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(pid), 10, what=f"pid {pid} to die")


def metadata(address: str, timeout: float = 5.0) -> dict:
    client = RawClient(address)
    try:
        header, _ = client.call("metadata", topics=None, timeout=timeout)
        return header
    finally:
        client.close()


def one_line_error(proc) -> str:
    assert "Traceback" not in proc.err, proc.err
    lines = [line for line in proc.err.splitlines() if line.strip()]
    assert len(lines) == 1, proc.err
    return lines[0]


def test_up_status_down_one_broker(tmp_path, cleanup):
    config, entries = write_config(tmp_path, brokers=1)
    cleanup.extend(entries)
    (b,) = entries
    address = f"127.0.0.1:{b['port']}"

    up = zb("cluster", "up", str(config))
    assert up.returncode == 0, up.err
    m = re.fullmatch(rf"broker 1 started pid (\d+) on {re.escape(address)} \(log: (.+)\)\n", up.out)
    assert m, up.out
    pid = int(m.group(1))
    assert Path(m.group(2)) == b["data_dir"] / "broker.log" and Path(m.group(2)).exists()
    assert pid_of(b) == pid and is_our_broker(pid, 1)
    assert metadata(address)["cluster_name"] == "test"

    again = zb("cluster", "up", str(config))
    assert again.returncode == 0, again.err
    assert again.out.startswith(f"broker 1 already running pid {pid} on {address}"), again.out
    assert pid_of(b) == pid

    st = zb("cluster", "status", str(config))
    assert st.returncode == 0, st.err
    lines = st.out.splitlines()
    assert lines[0].split() == ["BROKER", "ADDRESS", "PID", "STATE", "CONTROLLER", "EPOCH", "TOPICS"]
    assert lines[1].split() == ["1", address, str(pid), "up", "1", "1", "0"]
    assert lines[2] == "controller: broker 1 (epoch 1)"

    down = zb("cluster", "down", str(config))
    assert down.returncode == 0, down.err
    assert down.out == f"broker 1 stopped (pid {pid})\n"
    assert not pid_alive(pid)
    assert not (b["data_dir"] / "broker.pid").exists()
    assert "stopped" in (b["data_dir"] / "broker.log").read_text()

    down = zb("cluster", "down", str(config))
    assert (down.returncode, down.out) == (0, "broker 1 not running\n"), down.err

    st = zb("cluster", "status", str(config), "--timeout-s", "0.5")
    assert st.returncode == 1
    assert st.out.splitlines()[1].split() == ["1", address, "-", "down", "-", "-", "-"]
    assert "controller: unknown (no broker answered)" in st.out
    assert one_line_error(st) == "error: 1 of 1 broker(s) did not answer: 1"


def test_up_after_down_restarts_and_keeps_data(tmp_path, cleanup):
    config, entries = write_config(tmp_path, brokers=1)
    cleanup.extend(entries)
    address = f"127.0.0.1:{entries[0]['port']}"
    assert zb("cluster", "up", str(config)).returncode == 0
    client = RawClient(address)
    try:
        header, _ = client.call("create_topic", topic="kept", partitions=1)
        assert header["error"] == 0, header
    finally:
        client.close()
    assert zb("cluster", "down", str(config)).returncode == 0
    up = zb("cluster", "up", str(config))
    assert up.returncode == 0 and "started" in up.out, up.err
    st = zb("cluster", "status", str(config))
    assert st.returncode == 0 and st.out.splitlines()[1].split()[-1] == "1", st.out


def test_down_removes_stale_and_reused_pid_files_without_signalling(tmp_path):
    config, (b,) = write_config(tmp_path, brokers=1)
    b["data_dir"].mkdir(parents=True)
    pidfile = b["data_dir"] / "broker.pid"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    down = zb("cluster", "down", str(config))
    assert down.returncode == 0, down.err
    assert down.out == f"broker 1 not running (removed stale pid file, pid {dead.pid})\n"
    assert not pidfile.exists()

    # a live process that is not a zbroker broker (the pid was reused): never signalled
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        pidfile.write_text(f"{other.pid}\n")
        down = zb("cluster", "down", str(config))
        assert down.returncode == 0, down.err
        assert down.out == f"broker 1 not running (removed stale pid file, pid {other.pid})\n"
        assert other.poll() is None and not pidfile.exists()
    finally:
        other.kill()
        other.wait(10)

    pidfile.write_text("garbage\n")
    down = zb("cluster", "down", str(config))
    assert (down.returncode, down.out) == (0, "broker 1 not running (removed unreadable pid file)\n")


def test_down_sigkills_a_broker_that_ignores_sigterm(tmp_path):
    config, (b,) = write_config(tmp_path, brokers=1)
    b["data_dir"].mkdir(parents=True)
    # Looks like `zbroker serve --broker-id 1` to the pid-reuse guard, but ignores SIGTERM.
    code = "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); sys.stdin.read()"
    fake = subprocess.Popen([sys.executable, "-c", code, "zbroker", "serve", "--broker-id", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert fake.stdout.readline() == b"ready\n"
        (b["data_dir"] / "broker.pid").write_text(f"{fake.pid}\n")
        down = zb("cluster", "down", str(config), "--timeout-s", "0.3")
        assert down.returncode == 0, down.err
        assert down.out == f"broker 1 did not stop within 0.3s after SIGTERM; killed (SIGKILL, pid {fake.pid})\n"
        assert fake.wait(10) == -signal.SIGKILL
        assert not (b["data_dir"] / "broker.pid").exists()
    finally:
        fake.kill()
        fake.wait(10)


def test_up_reports_a_broker_that_dies_during_startup(tmp_path, cleanup):
    config, entries = write_config(tmp_path, brokers=1)
    cleanup.extend(entries)
    blocker = zmq.Context.instance().socket(zmq.ROUTER)
    blocker.setsockopt(zmq.LINGER, 0)
    blocker.bind(f"tcp://127.0.0.1:{entries[0]['port']}")  # the broker's port is taken
    try:
        up = zb("cluster", "up", str(config))
    finally:
        blocker.close(linger=0)
    assert up.returncode == 1
    assert "Traceback" not in up.err
    assert "broker 1 exited with code" in up.err and "during startup; last lines of" in up.err
    assert "Address already in use" in up.err  # the broker's own log line
    assert up.err.rstrip().endswith("error: broker 1 failed to start")
    assert not (entries[0]["data_dir"] / "broker.pid").exists()


def _serve_processes_for(config: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                args = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in args and str(config.resolve()).encode() in args and pid_alive(int(d.name)):
                pids.append(int(d.name))
    return pids


def test_up_stops_the_brokers_it_started_when_one_fails(tmp_path, cleanup):
    config, entries = write_config(tmp_path, brokers=2)
    cleanup.extend(entries)
    blocker = zmq.Context.instance().socket(zmq.ROUTER)
    blocker.setsockopt(zmq.LINGER, 0)
    blocker.bind(f"tcp://127.0.0.1:{entries[1]['port']}")  # broker 2 cannot listen
    try:
        up = zb("cluster", "up", str(config))
    finally:
        blocker.close(linger=0)
    assert up.returncode == 1, up.out
    assert "Traceback" not in up.err
    assert re.search(r"^broker [12] exited with code \d+ during startup", up.err, re.M), up.err
    assert re.search(r"^error: broker [12] failed to start; stopped broker\(s\) [12] started with it$", up.err, re.M), up.err
    assert not any((e["data_dir"] / "broker.pid").exists() for e in entries)
    assert _serve_processes_for(config) == []


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, command):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[broker]]\nid = 1\nport = "95x"\n')
    out = zb("cluster", command, str(bad))
    assert out.returncode == 2
    line = one_line_error(out)
    assert str(bad) in line and "broker[0].port" in line, line
    assert out.out == ""

    missing = zb("cluster", command, str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "nope.toml: no such config file" in one_line_error(missing)


def test_status_shows_under_replicated_partitions_and_disagreeing_controllers(tmp_path, monkeypatch):
    """The table's logic, fed with made-up metadata answers (no brokers needed)."""
    from click.testing import CliRunner

    from zbroker.cli import cluster as cluster_cli

    config, entries = write_config(tmp_path, brokers=3)

    def part(n, replicas, isr):
        return {"partition": n, "error": 0, "leader": replicas[0], "replicas": replicas, "isr": isr, "leader_epoch": 0}

    topics = [
        {"topic": "a", "error": 0, "internal": False, "partitions": [part(0, [1, 2, 3], [1, 2]), part(1, [2, 3, 1], [2, 3, 1])]},
        {"topic": "__cluster_metadata", "error": 0, "internal": True, "partitions": [part(0, [1, 2, 3], [1, 2, 3])]},
    ]
    answers = {
        1: {"error": 0, "controller": 1, "controller_epoch": 4, "topics": topics},
        2: {"error": 0, "controller": 2, "controller_epoch": 5, "topics": topics[1:]},
    }
    monkeypatch.setattr(cluster_cli, "query_metadata", lambda entries, timeout_s, topics=None, **_: answers)
    result = CliRunner().invoke(cluster_cli.cluster, ["status", str(config)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].split() == ["BROKER", "ADDRESS", "PID", "STATE", "CONTROLLER", "EPOCH", "TOPICS", "UNDER-REPLICATED"]
    assert lines[1].split()[2:] == ["-", "up", "1", "4", "1", "1"]
    assert lines[2].split()[2:] == ["-", "up", "2", "5", "0", "0"]
    assert lines[3].split()[2:] == ["-", "down", "-", "-", "-", "-"]
    assert "controllers disagree: broker 1 says 1 (epoch 4), broker 2 says 2 (epoch 5)" in result.output
    assert "1 of 3 broker(s) did not answer: 3" in result.output


def test_shipped_cluster_3_config():
    from zbroker.config import load_config

    cfg = load_config(REPO / "configs" / "cluster-3.toml")
    assert cfg.name == "local3"
    assert [(b.id, b.host, b.port, b.gossip_port) for b in cfg.brokers] == [
        (1, "127.0.0.1", 9555, 9556), (2, "127.0.0.1", 9565, 9566), (3, "127.0.0.1", 9575, 9576)]
    assert [Path(b.data_dir).resolve() for b in cfg.brokers] == [
        (REPO / "zbroker-data" / "cluster-3" / str(i)).resolve() for i in (1, 2, 3)]
    assert (cfg.default_partitions(), cfg.default_replication_factor(), cfg.topic_defaults["min_insync_replicas"]) == (6, 3, 2)


def test_three_broker_cluster_up_status_down(tmp_path, cleanup):
    config, entries = write_config(tmp_path, brokers=3)
    cleanup.extend(entries)

    up = zb("cluster", "up", str(config), "--wait-s", "30")
    assert up.returncode == 0, up.out + up.err
    assert [line.split()[:3] for line in up.out.splitlines()] == [["broker", str(i), "started"] for i in (1, 2, 3)]
    pids = [pid_of(e) for e in entries]
    assert all(pid is not None and is_our_broker(pid, e["id"]) for pid, e in zip(pids, entries))

    # the election may take a moment after every broker answers: poll status until one controller is agreed
    def agreed():
        st = zb("cluster", "status", str(config))
        if st.returncode != 0:
            return None
        rows = [line.split() for line in st.out.splitlines()[1:4]]
        summary = st.out.splitlines()[4]
        if all(r[3] == "up" for r in rows) and re.fullmatch(r"controller: broker [123] \(epoch \d+\)", summary):
            return rows, summary
        return None

    rows, summary = wait_until(agreed, 30, interval=0.2, what="an agreed controller")
    controller = summary.split()[2]
    assert all(r[4] == controller for r in rows)

    down = zb("cluster", "down", str(config))
    assert down.returncode == 0, down.err
    assert sorted(down.out.splitlines()) == sorted(f"broker {e['id']} stopped (pid {p})" for e, p in zip(entries, pids))
    assert not any(pid_alive(p) for p in pids)
    assert not any((e["data_dir"] / "broker.pid").exists() for e in entries)

    st = zb("cluster", "status", str(config), "--timeout-s", "0.5")
    assert st.returncode == 1
    assert [line.split()[3] for line in st.out.splitlines()[1:4]] == ["down"] * 3
