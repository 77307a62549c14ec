"""Helpers for the egress bridge's integration tests: a one-broker cluster with ``[[bridge]]``
tables, and plain ZeroMQ applications in their own processes.

The applications are a script that imports only ``zmq`` (:data:`APP`): a SUB or PULL socket
that connects to a bridge's endpoint and writes each message it receives as one line of
hex frames to a file, flushed at once, until it is killed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import ClusterProcesses, wait_until

APP = r"""
import json, sys, time
import zmq
opts = json.loads(sys.argv[1])
ctx = zmq.Context()
sock = ctx.socket(zmq.SUB if opts["type"] == "SUB" else zmq.PULL)
sock.setsockopt(zmq.LINGER, 0)
sock.setsockopt(zmq.RCVHWM, opts.get("rcvhwm", 1000))
if opts.get("curve"):
    public, secret, server = opts["curve"]
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public.encode(), secret.encode(), server.encode()
if opts.get("curve_server"):
    sock.curve_server, sock.curve_secretkey = True, opts["curve_server"].encode()
for prefix in opts.get("subscribe", []):
    sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
if opts.get("bind"):
    sock.bind(opts["endpoint"])
else:
    sock.connect(opts["endpoint"])
delay = opts.get("delay_ms", 0) / 1000
with open(opts["out"], "a") as out:
    out.write("READY\n")
    out.flush()
    while True:
        frames = sock.recv_multipart()
        out.write(" ".join(f.hex() for f in frames) + "\n")
        out.flush()
        if delay:
            time.sleep(delay)
"""


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def bridge_tables(bridges: list[dict]) -> str:
    return "\n".join("[[bridge]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in b.items()) for b in bridges)


def cluster_with(root: Path, bridges: list[dict], curve: bool = False, partitions: int = 1, n: int = 1,
                 **settings) -> ClusterProcesses:
    """A cluster of ``n`` brokers whose config has ``bridges`` (not started); ``settings``: more
    :class:`ClusterProcesses` arguments."""
    c = ClusterProcesses(root, n=n, curve=curve, partitions=partitions, **settings)
    c.config.write_text(c.config.read_text() + "\n" + bridge_tables(bridges))
    return c


def status(c: ClusterProcesses) -> dict[str, dict]:
    """``bridge_status`` of broker 1: bridge name -> status."""
    client = c.brokers[1].raw_client()
    try:
        header, _ = client.call("bridge_status", timeout=5)
    finally:
        client.close()
    return {b["name"]: b for b in header["bridges"]}


def wait_status(c: ClusterProcesses, name: str, check, what: str, timeout: float = 30) -> dict:
    def ready():
        try:
            s = status(c).get(name)
        except TimeoutError:
            return None
        return s if s is not None and check(s) else None
    return wait_until(ready, timeout=timeout, interval=0.05, what=what)


class App:
    """A plain ZeroMQ SUB or PULL application in its own process (see :data:`APP`)."""

    def __init__(self, out: Path, type: str, endpoint: str, subscribe: list[str] | None = None,
                 curve: tuple[bytes, bytes, bytes] | None = None, curve_server: bytes | None = None, **options) -> None:
        """``options``: ``bind`` (bind instead of connect), ``delay_ms`` (after each message),
        ``rcvhwm``; ``curve`` (public, secret, server key) makes it a CURVE client,
        ``curve_server`` (its secret key) a CURVE server."""
        self.out = out
        opts = {"type": type, "endpoint": endpoint, "out": str(out), "subscribe": subscribe or [], **options}
        if curve is not None:
            opts["curve"] = [k.decode() for k in curve]
        if curve_server is not None:
            opts["curve_server"] = curve_server.decode()
        self.proc = subprocess.Popen([sys.executable, "-c", APP, json.dumps(opts)], stderr=subprocess.PIPE)
        wait_until(lambda: out.exists() and out.read_text().startswith("READY"), timeout=15, what=f"the {type} app to start")

    def messages(self) -> list[list[bytes]]:
        lines = self.out.read_text().splitlines()[1:]
        return [[bytes.fromhex(f) for f in line.split(" ")] for line in lines if line]

    def values(self) -> list[bytes]:
        return [m[-1] for m in self.messages()]

    def wait_values(self, count: int, timeout: float = 30) -> list[bytes]:
        wait_until(lambda: len(self.messages()) >= count, timeout=timeout, what=f"{count} messages in {self.out.name}")
        return self.values()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

