"""Test helpers: real broker processes on loopback, and a raw protocol client.

A :class:`BrokerProcess` runs ``python -m zbroker serve`` on a free port with
its own data dir, waits for readiness by polling a metadata request with a
deadline (never a bare sleep), and is always killed by the fixture that made it.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq

READY_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class RawClient:
    """A bare DEALER speaking the wire protocol, for protocol-level tests."""

    _cids = itertools.count(1)

    def __init__(self, address: str, ctx: zmq.Context | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://{address}")

    def send(self, header: dict | bytes, *payloads: bytes) -> int:
        if isinstance(header, dict):
            header = dict(header)
            header.setdefault("v", 1)
            header.setdefault("cid", next(self._cids))
            cid = header["cid"]
            header = msgpack.packb(header, use_bin_type=True)
        else:
            cid = -1
        self.sock.send_multipart([header, *payloads])
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
    """A broker in a child process; ``bootstrap`` is its HOST:PORT."""

    def __init__(self, data_dir: Path, port: int | None = None, config: Path | None = None, extra_args: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.config = config
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> BrokerProcess:
        args = [sys.executable, "-m", "zbroker", "serve", "--data-dir", str(self.data_dir), "--listen", self.bootstrap]
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
        client = RawClient(self.bootstrap)
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

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
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
