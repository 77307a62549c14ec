"""`zbroker cluster up|down|status CONFIG`: run, stop and inspect a local cluster.

Every ``[[broker]]`` of the config file runs on this machine as a detached
``python -m zbroker serve --config CONFIG --broker-id N`` process.  Each
broker's ``data_dir`` holds two files of ours:

``broker.pid``
    the pid of the running broker, written by ``up``, removed by ``down``.
``broker.log``
    the broker's stdout and stderr, appended to across runs.

A pid is only trusted (and only ever signalled) if the process is alive, is
not a zombie, and its ``/proc/<pid>/cmdline`` is a ``zbroker ... serve`` with
the same ``--broker-id``: a pid file left behind by a crash whose number has
since been reused by another program is treated as stale and removed.

Readiness and status use a raw DEALER socket and a ``metadata`` request
(docs/protocol.md §4.1), so they do not depend on the client library's retry
behaviour.  With ``[security] curve = true`` clients need a key, so they ask each
broker on its inter-broker port (``peer_port``) with that broker's own key pair
(its ``secret_key_file``: whoever runs the brokers has it).  All waiting is polling
against a deadline.

``up`` refuses a config whose brokers could not authenticate each other (no
``cluster_secret`` and no CURVE keys: :meth:`ClusterConfig.inter_broker_problem`) before
starting anything.

Registered on the main group by ``zbroker/cli/__init__.py`` (``cli.add_command(cluster.cluster)``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from zbroker.cli.common import Fail
from zbroker.cli.output import echo_table
from zbroker.config import BrokerEntry, ClusterConfig, ConfigError, load_config

PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
LOG_TAIL_LINES = 20
POLL_S = 0.05


# -- pid files and processes ---------------------------------------------------------


def pid_path(entry: BrokerEntry) -> Path:
    return Path(entry.data_dir) / PID_FILE


def log_path(entry: BrokerEntry) -> Path:
    return Path(entry.data_dir) / LOG_FILE


def read_pid(entry: BrokerEntry) -> int | None:
    """The pid in the broker's pid file, or None (no file, or not a number)."""
    try:
        text = pid_path(entry).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def remove_pid_file(entry: BrokerEntry) -> None:
    try:
        pid_path(entry).unlink()
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a dead child nobody has reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone, unless there is no /proc at all
    except OSError:
        return True
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])


def is_our_broker(pid: int, broker_id: int) -> bool:
    """True if ``pid`` is alive and is ``zbroker serve`` for ``broker_id`` (guards against pid reuse)."""
    if not pid_alive(pid):
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc: trust the pid file
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not any("zbroker" in a for a in args) or "serve" not in args:
        return False
    if "--broker-id" in args:
        i = args.index("--broker-id")
        if i + 1 >= len(args) or args[i + 1] != str(broker_id):
            return False
    return True


def running_pid(entry: BrokerEntry) -> tuple[int | None, int | None]:
    """(pid of the live broker or None, stale pid found in the pid file or None)."""
    pid = read_pid(entry)
    if pid is None:
        return None, None
    if is_our_broker(pid, entry.id):
        return pid, None
    return None, pid


def log_tail(path: Path, start: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after byte ``start``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    text = data.decode(errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) if text else "(log is empty)"


# -- talking to brokers ----------------------------------------------------------------


def _endpoint(sock, entry: BrokerEntry, config: ClusterConfig | None) -> str:
    """Where to ask ``entry``: its client port, or with ``[security] curve = true`` its
    inter-broker port as a CURVE client with the broker's own key pair."""
    if config is None or not config.security.curve:
        return f"tcp://{entry.host}:{entry.port}"
    from zbroker.net.curve_keys import broker_keys

    keys = broker_keys(config, entry.id)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys.public, keys.secret, keys.public
    return f"tcp://{entry.host}:{entry.peer_port}"


def query_metadata(entries: list[BrokerEntry], timeout_s: float, topics: list[str] | None = None,
                   give_up=None, resend_s: float = 1.0, config: ClusterConfig | None = None) -> dict[int, dict[str, Any]]:
    """Ask every broker for metadata in parallel; return {broker id: response header}.

    Polls until every broker answered or ``timeout_s`` passed.  ``give_up``, if
    given, is called each round and may raise to abort the wait early.  With a
    ``config`` whose ``[security] curve`` is on, each broker is asked on its
    ``peer_port`` with its own key pair.
    """
    import msgpack
    import zmq

    ctx = zmq.Context.instance()
    socks: dict[Any, BrokerEntry] = {}
    answers: dict[int, dict[str, Any]] = {}
    poller = zmq.Poller()
    try:
        for entry in entries:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            socks[sock] = entry
            sock.connect(_endpoint(sock, entry, config))
            poller.register(sock, zmq.POLLIN)
        request = msgpack.packb({"v": 1, "type": "metadata", "cid": 1, "topics": topics}, use_bin_type=True)
        deadline = time.monotonic() + timeout_s
        next_send = 0.0
        while len(answers) < len(socks):
            now = time.monotonic()
            if give_up is not None:
                give_up(set(answers))
            if now >= deadline:
                break
            if now >= next_send:  # ZeroMQ queues until connected; resending covers a broker that dropped it
                for sock, entry in socks.items():
                    if entry.id not in answers:
                        sock.send(request, zmq.NOBLOCK)
                next_send = now + resend_s
            wait_ms = max(1, int(min(deadline, next_send, now + 0.2) * 1000 - now * 1000))
            for sock, _ in poller.poll(wait_ms):
                frames = sock.recv_multipart()
                try:
                    header = msgpack.unpackb(frames[0], raw=False)
                except Exception:  # noqa: BLE001 - a garbled answer still proves something listens
                    header = {"error": -1, "error_message": "unreadable response"}
                answers[socks[sock].id] = header if isinstance(header, dict) else {"error": -1}
                poller.unregister(sock)
    finally:
        for sock in socks:
            sock.close(linger=0)
    return answers


# -- commands --------------------------------------------------------------------------


@click.group()
def cluster() -> None:
    """Run, stop and inspect a local multi-broker cluster described by a config file."""


def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The brokers must run the same zbroker as this command, wherever it was imported from.
    root = str(Path(__file__).resolve().parents[2])  # the directory holding zbroker/ (this is zbroker/cli/cluster.py)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@cluster.command("up")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--wait-s", type=click.FloatRange(0, min_open=True), default=20.0, show_default=True,
              help="How long to wait for every broker to answer a metadata request.")
def up(config_path: str, wait_s: float) -> None:
    """Start every broker of CONFIG in the background and wait until each answers.

    Each broker logs to <data_dir>/broker.log; its pid is in <data_dir>/broker.pid.
    Brokers already running are left alone.  If a broker exits while starting,
    its log's last lines are shown and the brokers this command started are
    stopped again (exit 1); brokers that merely do not answer within --wait-s
    are left running (exit 1).
    """
    config = load_config(config_path)
    problem = config.inter_broker_problem()
    if problem:
        raise ConfigError(problem)
    config_abs = str(Path(config_path).resolve())
    started: dict[int, tuple[subprocess.Popen, int]] = {}  # id -> (process, log offset at start)
    pids: dict[int, int] = {}
    lines: dict[int, str] = {}
    for entry in config.brokers:
        pid, stale = running_pid(entry)
        log = log_path(entry)
        if pid is not None:
            pids[entry.id] = pid
            lines[entry.id] = f"broker {entry.id} already running pid {pid} on {entry.address} (log: {log})"
            continue
        if stale is not None:
            remove_pid_file(entry)
        Path(entry.data_dir).mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            offset = fh.tell()
            proc = subprocess.Popen(
                [sys.executable, "-m", "zbroker", "serve", "--config", config_abs, "--broker-id", str(entry.id)],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=_child_env(),
            )
        pid_path(entry).write_text(f"{proc.pid}\n")
        started[entry.id] = (proc, offset)
        pids[entry.id] = proc.pid
        lines[entry.id] = f"broker {entry.id} started pid {proc.pid} on {entry.address} (log: {log})"

    by_id = {e.id: e for e in config.brokers}

    def check_exits(_answered: set[int]) -> None:
        for broker_id, (proc, offset) in started.items():
            code = proc.poll()
            if code is not None:
                _startup_failed(config, by_id[broker_id], code, offset, started)

    answers = query_metadata(list(config.brokers), wait_s, topics=[], give_up=check_exits, config=config)
    check_exits(set(answers))  # a broker that died right after another one answered in its place
    silent = [e for e in config.brokers if e.id not in answers]
    for entry in config.brokers:
        if entry.id in answers:
            click.echo(lines[entry.id])
    if silent:
        for entry in silent:
            click.echo(f"broker {entry.id} pid {pids[entry.id]} on {entry.address}: no answer after {wait_s:g}s; "
                       f"last lines of {log_path(entry)}:", err=True)
            click.echo(_indent(log_tail(log_path(entry), started.get(entry.id, (None, 0))[1])), err=True)
        ids = ", ".join(str(e.id) for e in silent)
        raise Fail(f"broker(s) {ids} did not answer within {wait_s:g}s (still running; "
                   f"`zbroker cluster down {config_path}` stops them)")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _startup_failed(config: ClusterConfig, entry: BrokerEntry, code: int, offset: int,
                    started: dict[int, tuple[subprocess.Popen, int]]) -> None:
    """Report a broker that exited while starting, stop the others this command started, exit 1."""
    remove_pid_file(entry)
    log = log_path(entry)
    click.echo(f"broker {entry.id} exited with code {code} during startup; last lines of {log}:", err=True)
    click.echo(_indent(log_tail(log, offset)), err=True)
    by_id = {e.id: e for e in config.brokers}
    others = []
    for broker_id, (proc, _) in started.items():
        if broker_id == entry.id:
            continue
        others.append(str(broker_id))
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        remove_pid_file(by_id[broker_id])
    hint = f"; stopped broker(s) {', '.join(others)} started with it" if others else ""
    raise Fail(f"broker {entry.id} failed to start{hint}")


@cluster.command("down")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--timeout-s", type=click.FloatRange(0), default=15.0, show_default=True,
              help="How long each broker gets to stop after SIGTERM before it is sent SIGKILL.")
def down(config_path: str, timeout_s: float) -> None:
    """Stop every broker of CONFIG: SIGTERM, then SIGKILL after --timeout-s."""
    config = load_config(config_path)
    stopping: dict[int, int] = {}
    for entry in config.brokers:
        pid, stale = running_pid(entry)
        if pid is None:
            if stale is not None:
                remove_pid_file(entry)
                click.echo(f"broker {entry.id} not running (removed stale pid file, pid {stale})")
            elif pid_path(entry).exists():
                remove_pid_file(entry)
                click.echo(f"broker {entry.id} not running (removed unreadable pid file)")
            else:
                click.echo(f"broker {entry.id} not running")
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            remove_pid_file(entry)
            click.echo(f"broker {entry.id} not running (removed stale pid file, pid {pid})")
            continue
        stopping[entry.id] = pid

    by_id = {e.id: e for e in config.brokers}
    deadline = time.monotonic() + timeout_s
    pending = dict(stopping)
    stubborn: list[int] = []
    while pending:
        for broker_id, pid in list(pending.items()):
            if not pid_alive(pid):
                del pending[broker_id]
                remove_pid_file(by_id[broker_id])
                click.echo(f"broker {broker_id} stopped (pid {pid})")
        if pending and time.monotonic() >= deadline:
            stubborn = list(pending)
            break
        if pending:
            time.sleep(POLL_S)

    failed = []
    for broker_id in stubborn:
        pid = pending[broker_id]
        if is_our_broker(pid, broker_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_deadline = time.monotonic() + 5.0
        while pid_alive(pid) and time.monotonic() < kill_deadline:
            time.sleep(POLL_S)
        if pid_alive(pid):
            failed.append(broker_id)
            click.echo(f"broker {broker_id} (pid {pid}) survived SIGKILL", err=True)
            continue
        remove_pid_file(by_id[broker_id])
        click.echo(f"broker {broker_id} did not stop within {timeout_s:g}s after SIGTERM; killed (SIGKILL, pid {pid})")
    if failed:
        raise Fail(f"broker(s) {', '.join(map(str, failed))} could not be stopped")


def _under_replicated(header: dict[str, Any]) -> int:
    count = 0
    for topic in header.get("topics") or []:
        for part in topic.get("partitions") or []:
            if len(part.get("isr") or []) < len(part.get("replicas") or []):
                count += 1
    return count


@cluster.command("status")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--timeout-s", type=click.FloatRange(0, min_open=True), default=2.0, show_default=True,
              help="How long to wait for the brokers' answers.")
def status(config_path: str, timeout_s: float) -> None:
    """Show each broker of CONFIG: pid, whether it answers, the controller it sees, its topics.

    Exit code 0 if every broker answered, 1 otherwise.
    """
    config = load_config(config_path)
    answers = query_metadata(list(config.brokers), timeout_s, topics=None, config=config)
    under = {bid: _under_replicated(h) for bid, h in answers.items() if not h.get("error")}
    show_under = any(under.values())
    head = ["BROKER", "ADDRESS", "PID", "STATE", "CONTROLLER", "EPOCH", "TOPICS"] + (["UNDER-REPLICATED"] if show_under else [])
    rows = [head]
    views: dict[int, tuple[Any, Any]] = {}
    for entry in config.brokers:
        pid, _stale = running_pid(entry)
        header = answers.get(entry.id)
        row = [str(entry.id), entry.address, str(pid) if pid is not None else "-"]
        if header is None:
            row += ["no answer" if pid is not None else "down", "-", "-", "-"] + (["-"] if show_under else [])
        elif header.get("error"):
            row += [f"error {header.get('error')}", "-", "-", "-"] + (["-"] if show_under else [])
        else:
            controller, epoch = header.get("controller", -1), header.get("controller_epoch", "-")
            views[entry.id] = (controller, epoch)
            topics = [t for t in header.get("topics") or [] if not t.get("internal")]
            row += ["up", "-" if controller in (None, -1) else str(controller), str(epoch), str(len(topics))]
            if show_under:
                row.append(str(under.get(entry.id, 0)))
        rows.append(row)
    echo_table(rows)

    distinct = set(views.values())
    if not views:
        click.echo("controller: unknown (no broker answered)")
    elif len(distinct) == 1:
        controller, epoch = distinct.pop()
        who = "none" if controller in (None, -1) else f"broker {controller}"
        click.echo(f"controller: {who} (epoch {epoch})")
    else:
        click.echo("controllers disagree: " + ", ".join(
            f"broker {bid} says {'none' if c in (None, -1) else c} (epoch {e})" for bid, (c, e) in sorted(views.items())))
    missing = [e.id for e in config.brokers if e.id not in answers]
    if missing:
        raise Fail(f"{len(missing)} of {len(config.brokers)} broker(s) did not answer: "
                   + ", ".join(map(str, missing)))
