"""Plain ZeroMQ applications for the bridge tests, and a broker configured with bridges.

The applications are what a user already runs: a script that imports only ``zmq`` (no
zbroker), run in its own process (:func:`start_app`).  Its arguments are one JSON object:

- ``type``: ``PUSH`` or ``PUB``; ``endpoint``; ``bind``: bind or connect;
- ``frames``: the frames of message ``i``, ``{i}`` replaced by ``i`` (a list of such lists:
  message ``i`` takes the ``i % len``-th); ``count``; ``pad``: ``i`` zero-padded to this width;
  ``start``: the first ``i`` (default 0);
- ``hwm`` (SNDHWM), ``sndbuf`` (SO_SNDBUF, 0: the kernel's), ``timeout_ms`` (SNDTIMEO: a
  send that blocks this long is reported as ``BLOCKED i`` on stdout and the app exits);
- ``rate``: messages per second at most (paced every 100 messages; 0: as fast as ZeroMQ takes them);
- ``probe``: frames sent every 20 ms until a line comes on stdin (a PUB drops what it
  sends before a subscription reaches it; the test says "go" once the probe is seen);
- ``curve``: [public, secret, server key] (Z85) to be a CURVE client; ``curve_server``: a
  secret key (Z85) to be a CURVE server (no ZAP handler: every client key is admitted);
- ``progress``: print ``SENT i`` after each send (the fault test reads it).

It prints ``DONE n`` when every message was handed to ZeroMQ and closes with a linger, so
what it queued is written out before it exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import BrokerProcess, free_port, key_pair

APP = r"""
import json, sys, time, zmq
a = json.loads(sys.argv[1])
ctx = zmq.Context()
s = ctx.socket(getattr(zmq, a["type"]))
s.setsockopt(zmq.LINGER, a.get("linger_ms", 30000))
s.setsockopt(zmq.SNDHWM, a.get("hwm", 1000))
if a.get("sndbuf"):
    s.setsockopt(zmq.SNDBUF, a["sndbuf"])
if a.get("timeout_ms"):
    s.setsockopt(zmq.SNDTIMEO, a["timeout_ms"])
if a.get("curve"):
    s.curve_publickey, s.curve_secretkey, s.curve_serverkey = (k.encode() for k in a["curve"])
if a.get("curve_server"):
    s.curve_server, s.curve_secretkey = True, a["curve_server"].encode()
(s.bind if a.get("bind") else s.connect)(a["endpoint"])
if a.get("probe"):
    poller = zmq.Poller()
    poller.register(sys.stdin, zmq.POLLIN)
    while not poller.poll(20):
        s.send_multipart([f.encode() for f in a["probe"]])
    sys.stdin.readline()
shapes = a["frames"] if isinstance(a["frames"][0], list) else [a["frames"]]
shapes = [[f.encode() for f in shape] for shape in shapes]
start = a.get("start", 0)
began = time.monotonic()
for i in range(start, start + a["count"]):
    if a.get("rate") and i % 100 == 0:
        ahead = began + (i - start) / a["rate"] - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    try:
        s.send_multipart([f.replace(b"{i}", str(i).rjust(a.get("pad", 0), "0").encode()) for f in shapes[i % len(shapes)]])
    except zmq.Again:
        print("BLOCKED", i, flush=True)
        break
    if a.get("progress"):
        print("SENT", i, flush=True)
else:
    print("DONE", a["count"], flush=True)
s.close()
ctx.term()
"""


def start_app(**args) -> subprocess.Popen:
    """A plain pyzmq application (see the module docstring) in its own process."""
    return subprocess.Popen([sys.executable, "-c", APP, json.dumps(args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(app: subprocess.Popen, timeout: float = 60) -> str:
    out, err = app.communicate(timeout=timeout)
    assert app.returncode == 0, err
    return out


def stop(app: subprocess.Popen) -> None:
    if app.poll() is None:
        app.kill()
        app.wait(10)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


class BridgeBroker:
    """A single broker from a config file with ``[[bridge]]`` tables (``bridges``: dicts);
    with ``curve`` it speaks CurveZMQ with ACLs on: ``User:admin`` is a super user and
    :meth:`add_key` admits an application's key."""

    def __init__(self, root: Path, bridges: list[dict], curve: bool = False, cluster: dict | None = None,
                 partitions: int = 2) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys = self.root / "keys"
        self.clients = self.keys / "clients"
        self.curve = curve
        port = free_port()
        lines = ["[cluster]", 'name = "bridges"', "flush_check_ms = 200", *(f"{k} = {_toml(v)}" for k, v in (cluster or {}).items()),
                 "", "[topic_defaults]", f"partitions = {partitions}", ""]
        broker = ["[[broker]]", "id = 1", 'host = "127.0.0.1"', f"port = {port}", f"gossip_port = {free_port()}",
                  f"peer_port = {free_port()}", f'data_dir = "{self.root / "data"}"']
        if curve:
            self.admin = self.add_key("admin")
            secret_file, self.public, _ = key_pair(self.keys, "broker1")
            broker.append(f'secret_key_file = "{secret_file}"')
            lines = ["[security]", "curve = true", f'authorized_keys_dir = "{self.clients}"', 'super_users = ["User:admin"]',
                     "", *lines]
        lines += [*broker, ""]
        for bridge in bridges:
            lines += ["[[bridge]]", *(f"{k} = {_toml(v)}" for k, v in bridge.items()), ""]
        self.config = self.root / "broker.toml"
        self.config.write_text("\n".join(lines))
        self.proc = BrokerProcess(self.root / "data", port=port, config=self.config, extra_args=["--broker-id", "1"])
        self.proc.use_config_only = True
        if curve:
            self.proc.curve = (self.admin[1], self.admin[2], self.public)

    def add_key(self, name: str) -> tuple[Path, bytes, bytes]:
        """A key pair admitted by authorized_keys_dir: (secret file, public, secret)."""
        secret_file, public, secret = key_pair(self.keys, name)
        self.clients.mkdir(parents=True, exist_ok=True)
        (self.keys / f"{name}.key").replace(self.clients / f"{name}.key")
        return secret_file, public, secret

    def cli_options(self) -> list[str]:
        if not self.curve:
            return []
        return ["--curve-secret-key-file", str(self.admin[0]), "--curve-server-key", self.public.decode()]

    def status(self) -> dict[str, dict]:
        client = self.proc.raw_client()
        try:
            header, _ = client.call("bridge_status")
        finally:
            client.close()
        return {b["name"]: b for b in header["bridges"]}

    def start(self) -> BridgeBroker:
        self.proc.start()
        return self

    def close(self) -> None:
        self.proc.close()
