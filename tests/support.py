"""Test helpers: real broker processes on loopback, and a raw protocol client.

A :class:`BrokerProcess` runs ``python -m zbroker serve`` on a free port with
its own data dir, waits for readiness by polling a metadata request with a
deadline (never a bare sleep), and is always killed by the fixture that made it.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq
import zmq.auth

READY_TIMEOUT_S = 20.0


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port that is free now and was never handed out before in this process.

    Ports come from below the kernel's ephemeral range: a port taken from inside it (bind to
    port 0) can be picked again by the kernel for the next bind-to-0 or for any outgoing
    connection before the broker binds it, which made two brokers of one test cluster share a
    port. Below the range only an explicit bind can take it, and ``_handed_out`` rules out
    handing one port to two brokers.
    """
    rng = random.Random()
    low = max(1024, _ephemeral_low() - 12000)
    high = _ephemeral_low() - 1
    for _ in range(1000):
        port = rng.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}..{high}")


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cluster_secret() -> str:
    """A fresh ``[security] cluster_secret`` (brokers of a multi-broker config need one)."""
    return secrets.token_urlsafe(32)


def key_pair(directory: Path, name: str) -> tuple[Path, bytes, bytes]:
    """``zbroker keys generate NAME``'s files in ``directory``: (secret file, public, secret)."""
    directory.mkdir(parents=True, exist_ok=True)
    _public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    public, secret = zmq.auth.load_certificate(secret_file)
    return Path(secret_file), public, secret


class RawClient:
    """A bare DEALER speaking the wire protocol, for protocol-level tests; with ``curve`` =
    (public, secret, server public key) a CURVE client."""

    _cids = itertools.count(1)

    def __init__(self, address: str, ctx: zmq.Context | None = None, curve: tuple[bytes, bytes, bytes] | None = None,
                 identity: bytes | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(f"tcp://{address}")

    def send(self, header: dict | bytes, *payloads: bytes, flags: int = 0) -> int:
        if isinstance(header, dict):
            header = dict(header)
            header.setdefault("v", 1)
            header.setdefault("cid", next(self._cids))
            cid = header["cid"]
            header = msgpack.packb(header, use_bin_type=True)
        else:
            cid = -1
        self.sock.send_multipart([header, *payloads], flags)
        return cid

    def recv(self, timeout: float = 5.0) -> tuple[dict, list[bytes]]:
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply within {timeout}s")
        frames = self.sock.recv_multipart()
        return msgpack.unpackb(frames[0], raw=False), frames[1:]

    def call(self, type_: str, payloads: tuple[bytes, ...] = (), timeout: float = 5.0, **fields) -> tuple[dict, list[bytes]]:
        cid = self.send({"type": type_, **fields}, *payloads)
        header, frames = self.recv(timeout)
        assert header["cid"] == cid, (header, cid)
        return header, frames

    def close(self) -> None:
        self.sock.close(linger=0)


class BrokerProcess:
    """A broker in a child process; ``bootstrap`` is its HOST:PORT, ``kafka_bootstrap`` its
    Kafka front door's (started without a config file, it gets a free port for each)."""

    def __init__(self, data_dir: Path, port: int | None = None, config: Path | None = None, extra_args: list[str] | None = None,
                 kafka_port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.kafka_port = kafka_port or free_port()
        self.config = config
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-broker.log"
        self.curve: tuple[bytes, bytes, bytes] | None = None  # a client key pair and this broker's public key

    def raw_client(self) -> RawClient:
        """A RawClient of this broker's client port (with a client key when it speaks CURVE)."""
        return RawClient(self.bootstrap, curve=self.curve)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self, wait: bool = True) -> BrokerProcess:
        if getattr(self, "use_config_only", False):
            args = [sys.executable, "-m", "zbroker", "serve", "--config", str(self.config)]
        else:
            args = [sys.executable, "-m", "zbroker", "serve", "--data-dir", str(self.data_dir), "--listen", self.bootstrap]
            args += ["--kafka-listen", self.kafka_bootstrap]
            if self.config:
                args += ["--config", str(self.config)]
        args += self.extra_args
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        client = self.raw_client()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"broker exited with {self.proc.returncode}; log:\n{self.log_text()}")
                client.send({"type": "metadata", "topics": []})
                try:
                    client.recv(timeout=0.2)
                    return
                except TimeoutError:
                    continue
            raise TimeoutError(f"broker on {self.bootstrap} not ready after {timeout}s; log:\n{self.log_text()}")
        finally:
            client.close()

    def log_text(self, tail: int | None = 5000) -> str:
        """The broker's log: its last ``tail`` characters (for failure messages), or all of it."""
        try:
            text = self.log_path.read_text(errors="replace")
            return text if tail is None else text[-tail:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no checkpoint."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode

    def restart(self) -> BrokerProcess:
        self.kill()
        return self.start()

    def close(self) -> None:
        self.kill()
        if getattr(self, "_log", None):
            self._log.close()


def running_broker(tmp_path: Path, config_text: str):
    """A generator for a fixture: a single broker from the config file ``config_text``, killed
    at the end."""
    config = tmp_path / "broker.toml"
    config.write_text(config_text)
    proc = BrokerProcess(tmp_path / "data", config=config)
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


class ClusterProcesses:
    """N brokers from one generated config file, on free loopback ports, fast timings; with
    ``kafka=True`` each broker also has a Kafka listener (``kafka_bootstrap``).

    Brokers authenticate each other with a fresh ``cluster_secret``; with ``curve=True``
    they have their own key pairs instead (``keys/brokerN.key_secret``), clients need a key in
    ``authorized_keys_dir`` (``keys/clients``), and the client ``admin`` has one
    (:meth:`client_options`, :meth:`add_client_key`)."""

    def __init__(self, root: Path, n: int = 3, heartbeat_ms: int = 100, session_timeout_ms: int = 1500,
                 election_timeout_ms: int = 500, replication_factor: int = 1, name: str = "test",
                 min_insync_replicas: int = 1, replica_lag_ms: int = 10_000, partitions: int = 3,
                 cluster_settings: dict | None = None, kafka: bool = False, curve: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.root / "cluster.toml"
        self.secret = cluster_secret()
        self.curve = curve
        self.keys_dir = self.root / "keys"
        self.clients_dir = self.keys_dir / "clients"
        self.client_keys: dict[str, tuple[Path, bytes, bytes]] = {}
        self.broker_publics: dict[int, bytes] = {}
        security = ["[security]", f'cluster_secret = "{self.secret}"']
        if curve:
            # security on: ACLs are enforced, and the harness's own client is a super user
            security += ["curve = true", f'authorized_keys_dir = "{self.clients_dir}"', 'super_users = ["User:admin"]']
            self.add_client_key("admin")
        lines = [*security, "",
            "[cluster]",
            f'name = "{name}"',
            f"heartbeat_ms = {heartbeat_ms}",
            f"session_timeout_ms = {session_timeout_ms}",
            f"election_timeout_ms = {election_timeout_ms}",
            f"replica_lag_ms = {replica_lag_ms}",
            "flush_check_ms = 200",
            *(f"{k} = {v}" for k, v in (cluster_settings or {}).items()),
            "",
            "[topic_defaults]",
            f"partitions = {partitions}",
            f"replication_factor = {replication_factor}",
            f"min_insync_replicas = {min_insync_replicas}",
            "",
        ]
        self.brokers: dict[int, BrokerProcess] = {}
        for i in range(1, n + 1):
            port, gossip, peer = free_port(), free_port(), free_port()
            data = self.root / f"b{i}"
            lines += ["[[broker]]", f"id = {i}", 'host = "127.0.0.1"', f"port = {port}", f"gossip_port = {gossip}",
                      f"peer_port = {peer}", f'data_dir = "{data}"']
            if curve:
                secret_file, public, _ = key_pair(self.keys_dir, f"broker{i}")
                self.broker_publics[i] = public
                lines += [f'secret_key_file = "{secret_file}"', f'public_key = "{public.decode()}"']
            kafka_port = free_port() if kafka else None
            lines += [f"kafka_port = {kafka_port}", ""] if kafka else [""]
            proc = BrokerProcess(data, port=port, config=self.config, extra_args=["--broker-id", str(i)], kafka_port=kafka_port)
            proc.use_config_only = True
            proc.peer_port = peer
            if curve:
                _, admin_public, admin_secret = self.client_keys["admin"]
                proc.curve = (admin_public, admin_secret, public)
            self.brokers[i] = proc
        self.config.write_text("\n".join(lines))

    def add_client_key(self, name: str) -> tuple[Path, bytes, bytes]:
        """A client key pair whose public key goes into authorized_keys_dir (principal User:NAME);
        returns (secret file, public, secret)."""
        secret_file, public, secret = key_pair(self.keys_dir, name)
        self.clients_dir.mkdir(parents=True, exist_ok=True)
        (self.keys_dir / f"{name}.key").replace(self.clients_dir / f"{name}.key")
        self.client_keys[name] = (secret_file, public, secret)
        return secret_file, public, secret

    def client_options(self, name: str = "admin", broker_id: int = 1) -> dict:
        """Keyword arguments for Producer/Consumer/Admin (nothing without curve)."""
        if not self.curve:
            return {}
        return {"curve_secret_key_file": str(self.client_keys[name][0]), "curve_server_key": self.broker_publics[broker_id].decode()}

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(b.kafka_bootstrap for b in self.brokers.values())

    def start(self) -> ClusterProcesses:
        for b in self.brokers.values():
            b.start(wait=False)
        for b in self.brokers.values():
            b.wait_ready()
        return self

    def metadata(self, broker_id: int, timeout: float = 1.0) -> dict | None:
        """Broker ``broker_id``'s answer to a metadata request (None if it does not answer)."""
        client = self.brokers[broker_id].raw_client()
        try:
            header, _ = client.call("metadata", timeout=timeout)
            return header
        except TimeoutError:
            return None
        finally:
            client.close()

    def controllers(self, ids=None) -> dict[int, tuple[int, int] | None]:
        """{broker: (controller, epoch)} as each live broker reports it."""
        out = {}
        for i in ids or self.brokers:
            if self.brokers[i].alive():
                meta = self.metadata(i)
                out[i] = (meta["controller"], meta["controller_epoch"]) if meta else None
        return out

    def agreed_controller(self, ids=None) -> tuple[int, int] | None:
        """(controller, epoch) if every asked broker reports the same, elected one."""
        seen = set(self.controllers(ids).values())
        if len(seen) == 1:
            (value,) = seen
            if value is not None and value[0] >= 0:
                return value
        return None

    def close(self) -> None:
        for b in self.brokers.values():
            if b.proc is not None and b.proc.poll() is None:
                try:
                    os.kill(b.proc.pid, signal.SIGCONT)
                except OSError:
                    pass
            b.close()


def running_cluster(root: Path, **settings):
    """A generator for a fixture: :class:`ClusterProcesses` (``settings`` as its arguments),
    started with an agreed controller, closed at the end."""
    cluster = ClusterProcesses(root, **settings)
    try:
        cluster.start()
        wait_until(cluster.agreed_controller, timeout=15, what="a controller")
        yield cluster
    finally:
        cluster.close()


def run_cli(*args: str, bootstrap: str | None = None, input: bytes | None = None, timeout: float = 60, cwd=None):
    """Run ``python -m zbroker ARGS`` as a user would; returns the CompletedProcess."""
    env = dict(os.environ)
    env.pop("ZBROKER_DEBUG", None)
    env.pop("ZBROKER_BOOTSTRAP", None)
    if bootstrap:
        env["ZBROKER_BOOTSTRAP"] = bootstrap
    return subprocess.run([sys.executable, "-m", "zbroker", *args], input=input, capture_output=True, timeout=timeout,
                          env=env, cwd=cwd)


def one_line_error(proc) -> str:
    """The single line a failed CLI command printed on stderr (no traceback)."""
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]
