"""The client's network layer: the only module of ``clients`` that touches ZeroMQ.

Theory of operation
-------------------
Each client object (Producer, Consumer, Admin) owns one :class:`NetworkClient`,
which owns one background *network thread*.  That thread owns every socket:

* one DEALER per broker, keyed by ``"host:port"`` and created on first use,
  with ``LINGER=0``, ``IMMEDIATE=1`` (messages are only queued on a finished
  connection, so a request is never silently parked on a dead peer) and ZMTP
  heartbeats plus TCP keepalive (a dead or frozen broker is noticed);
* a socket monitor per DEALER: a disconnect fails the requests sent on it
  with :class:`ConnectionBrokenError`; a failed connect attempt fails the
  requests still waiting to be sent (they never left, so retrying them cannot
  duplicate anything);
* the read end of a pipe that user threads write one byte to when they queue
  work (coalesced: at most one byte is outstanding).

With CurveZMQ (:class:`CurveCredentials`: ``curve_secret_key_file`` and
``curve_server_key``, or ``ZBROKER_CURVE_SECRET_KEY_FILE`` and
``ZBROKER_CURVE_SERVER_KEY``) every DEALER is a CURVE client with the client's key pair.
Each broker has its own key: ``curve_server_key`` is the first (bootstrap) broker's, and
the others' come with the metadata (each broker's ``curve_key``,
:meth:`NetworkClient.learn_server_keys`).  A refused handshake (no key, an unknown key,
the wrong server key) fails the requests waiting for that connection with
:class:`~zbroker.errors.AuthenticationError` instead of leaving them to time out.

User threads call :meth:`NetworkClient.send` (callback style, any thread) or
:meth:`NetworkClient.request` (blocking).  Many requests may be in flight per
connection; responses are matched by ``cid`` in the in-flight table
(:mod:`clients.inflight`, pure data).  Every request has a deadline; missing it
fails the request with :class:`RequestTimeoutError`.  ``close()`` fails
everything pending with :class:`ClientClosedError`.

*Tasks* (the producer's sender, the consumer's fetcher) run inside the network
thread after every wake-up: ``task.run(now) -> next deadline | None``.
Callbacks also run in the network thread and must not block.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from typing import Callable

import msgpack
import zmq
from zmq.utils.monitor import parse_monitor_message

from clients.inflight import InFlight, InFlightTable
from zbroker.errors import (
    AuthenticationError,
    ClientClosedError,
    ConnectionBrokenError,
    RemoteProtocolError,
    RequestTimeoutError,
    error_from,
)
from zbroker.protocol import PROTOCOL_VERSION

log = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:9555"
_HANDSHAKE_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the broker closed the connection during the handshake",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the handshake broke the protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the broker refused this client's key",
}
_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
for _event in _HANDSHAKE_FAILED:
    _MONITOR_EVENTS |= _event
_Z85 = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
_packb = msgpack.packb
_unpackb = msgpack.unpackb

Callback = Callable[[dict | None, list, BaseException | None], None]


def parse_bootstrap(bootstrap: str | list[str] | None) -> list[str]:
    """Split ``"h:p[,h:p...]"`` (or a list) into addresses; ``None`` reads ``ZBROKER_BOOTSTRAP``.

    Raises:
        ValueError: an entry is not ``host:port``.
    """
    if bootstrap is None:
        bootstrap = os.environ.get("ZBROKER_BOOTSTRAP") or DEFAULT_BOOTSTRAP
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"bootstrap entry {item!r} is not host:port")
        out.append(f"{host}:{int(port)}")
    if not out:
        raise ValueError(f"empty bootstrap {bootstrap!r}")
    return out


class CurveCredentials:
    """A client's CurveZMQ settings: its key pair and the bootstrap broker's public key.

    Args:
        secret_key_file: ``NAME.key_secret`` as ``zbroker keys generate NAME`` writes it
            (its ``NAME.key`` is in the brokers' ``authorized_keys_dir``).
        server_key: the broker's public key: 40 characters of Z85, or the path of a file
            holding it (a ``.key`` file of zmq.auth's format).

    Raises:
        ValueError: a file cannot be read or holds no key, naming the file and the option.
    """

    def __init__(self, secret_key_file: str, server_key: str | bytes) -> None:
        import zmq.auth

        try:
            self.public, self.secret = zmq.auth.load_certificate(secret_key_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"curve_secret_key_file: cannot read a key pair from {secret_key_file!r}: {exc}") from None
        if self.secret is None:
            raise ValueError(f"curve_secret_key_file: {secret_key_file!r} holds no secret key "
                             f"(give NAME.key_secret, not NAME.key)")
        key = server_key.encode() if isinstance(server_key, str) else bytes(server_key)
        if not (len(key) == 40 and set(key) <= _Z85):
            try:
                key, _ = zmq.auth.load_certificate(os.fsdecode(key))
            except (OSError, ValueError) as exc:
                raise ValueError(f"curve_server_key: neither a public key (40 characters of Z85) nor a key file: "
                                 f"{os.fsdecode(server_key)!r}: {exc}") from None
        self.server_key = key

    @classmethod
    def resolve(cls, secret_key_file: str | None, server_key: str | bytes | None) -> CurveCredentials | None:
        """The credentials from the arguments, else from ``ZBROKER_CURVE_SECRET_KEY_FILE`` and
        ``ZBROKER_CURVE_SERVER_KEY``; None when neither is set (no CURVE).

        Raises:
            ValueError: only one of the two is set, or one cannot be read.
        """
        if secret_key_file is None and server_key is None:
            secret_key_file = os.environ.get("ZBROKER_CURVE_SECRET_KEY_FILE") or None
            server_key = os.environ.get("ZBROKER_CURVE_SERVER_KEY") or None
        if secret_key_file is None and server_key is None:
            return None
        if secret_key_file is None or server_key is None:
            missing = "curve_secret_key_file (ZBROKER_CURVE_SECRET_KEY_FILE)" if secret_key_file is None else \
                "curve_server_key (ZBROKER_CURVE_SERVER_KEY)"
            raise ValueError(f"CurveZMQ needs both curve_secret_key_file and curve_server_key: {missing} is missing")
        return cls(secret_key_file, server_key)


class _Conn:
    __slots__ = ("address", "sock", "monitor", "outbox", "connected", "pollout")

    def __init__(self, address, sock, monitor):
        self.address = address
        self.sock = sock
        self.monitor = monitor
        self.outbox: collections.deque = collections.deque()  # (pending|None, frames, on_sent)
        self.connected = False
        self.pollout = False


class _Waiter:
    __slots__ = ("event", "header", "frames", "exc")

    def __init__(self):
        self.event = threading.Event()
        self.header = None
        self.frames = None
        self.exc = None

    def __call__(self, header, frames, exc):
        self.header, self.frames, self.exc = header, frames, exc
        self.event.set()


class NetworkClient:
    """One network thread with a DEALER per broker; see the module docstring.

    Args:
        bootstrap: ``"host:port[,host:port...]"``; ``None`` reads ``ZBROKER_BOOTSTRAP``.
        client_id: sent in every request header as ``client_id`` (informational).
        request_timeout_ms: default deadline of a request.
        name: the network thread's name.
        curve_secret_key_file, curve_server_key: CurveZMQ (:class:`CurveCredentials`;
            None and None read ``ZBROKER_CURVE_SECRET_KEY_FILE`` and ``ZBROKER_CURVE_SERVER_KEY``).
    """

    def __init__(self, bootstrap=None, client_id: str | None = None, request_timeout_ms: int = 30000, name: str = "zbroker-net",
                 curve_secret_key_file: str | None = None, curve_server_key: str | bytes | None = None):
        self.bootstrap = parse_bootstrap(bootstrap)
        self.curve = CurveCredentials.resolve(curve_secret_key_file, curve_server_key)
        self._server_keys: dict[str, bytes] = {}  # address -> that broker's public key, learnt from metadata
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self._ctx = zmq.Context(io_threads=1)
        self._commands: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._wake_lock = threading.Lock()
        self._conns: dict[str, _Conn] = {}
        self._by_sock: dict = {}
        self._inflight = InFlightTable()
        self._tasks: list = []
        self._cids = itertools.count(1)
        self._closing = False
        self._closed = threading.Event()
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- any thread ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closing

    def learn_server_keys(self, keys: dict[str, str]) -> None:
        """Brokers' CURVE public keys by ``"host:port"`` (from a metadata answer); any thread."""
        if self.curve is not None:
            self._server_keys.update({address: key.encode() for address, key in keys.items()})

    def in_network_thread(self) -> bool:
        """True when called from this client's network thread."""
        return threading.current_thread() is self._thread

    def wakeup(self) -> None:
        """Make the network thread run its tasks soon (cheap; coalesced)."""
        if not self._wake_pending:
            self._wake_pending = True
            with self._wake_lock:
                if self._wake_w >= 0:
                    try:
                        os.write(self._wake_w, b"x")
                    except (BlockingIOError, OSError):
                        pass

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` in the network thread."""
        if self._closing:
            raise ClientClosedError("client is closed")
        self._commands.append(("call", fn))
        self.wakeup()

    def add_task(self, task) -> None:
        """Register ``task`` (``task.run(now) -> deadline | None``) with the network thread."""
        self.call_soon(lambda: self._tasks.append(task))

    def send(
        self,
        address: str,
        kind: str,
        fields: dict | None = None,
        frames: list | tuple = (),
        callback: Callback | None = None,
        timeout_ms: int | None = None,
        expect_response: bool = True,
        on_sent: Callable[[BaseException | None], None] | None = None,
    ) -> int:
        """Queue a request to the broker at ``address``; any thread.

        Args:
            callback: ``callback(header, frames, exc)`` run in the network thread
                with the response, or with ``exc`` set on timeout/breakage/close.
            expect_response: False for ``acks=0`` produce (no answer comes);
                ``on_sent(exc)`` then runs once ZeroMQ took the message
                (``exc`` None) or it could not be sent (``exc`` set).

        Returns:
            The request's correlation id.
        """
        cid = next(self._cids)
        header = {"v": PROTOCOL_VERSION, "type": kind, "cid": cid}
        if self.client_id is not None:
            header["client_id"] = self.client_id
        if fields:
            header.update(fields)
        timeout = (timeout_ms if timeout_ms is not None else self.request_timeout_ms) / 1000.0
        item = (address, cid, kind, header, frames, callback, timeout, expect_response, on_sent)
        if self.in_network_thread():
            self._do_send(*item)
        else:
            if self._closing:
                exc = ClientClosedError("client is closed")
                if callback is not None:
                    callback(None, [], exc)
                elif on_sent is not None:
                    on_sent(exc)
                return cid
            self._commands.append(("send", item))
            self.wakeup()
        return cid

    def request(self, address: str, kind: str, fields: dict | None = None, frames=(), timeout_ms: int | None = None, check: bool = True):
        """Send a request and block for its response (not from the network thread).

        Returns:
            ``(header, payload_frames)``.

        Raises:
            ZBrokerError: the top-level ``error`` of the response (when ``check``),
                RequestTimeoutError, ConnectionBrokenError or ClientClosedError.
        """
        if self.in_network_thread():
            raise RuntimeError("blocking request from the network thread would deadlock")
        waiter = _Waiter()
        self.send(address, kind, fields, frames, waiter, timeout_ms)
        limit = (timeout_ms if timeout_ms is not None else self.request_timeout_ms) / 1000.0 + 5.0
        if not waiter.event.wait(limit):
            raise RequestTimeoutError(f"{kind} to {address}: no answer within {limit:.1f}s")
        if waiter.exc is not None:
            raise waiter.exc
        header = waiter.header
        if check and header.get("error"):
            raise error_from(header["error"], header.get("error_message"))
        return header, waiter.frames

    def close(self, timeout: float = 5.0) -> None:
        """Stop the network thread; pending requests fail with ClientClosedError."""
        if self._closing:
            if not self.in_network_thread():
                self._closed.wait(timeout)
            return
        self._closing = True
        self._wake_pending = False
        self.wakeup()
        if not self.in_network_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("network thread did not stop within %.1fs", timeout)

    # -- network thread ------------------------------------------------------------

    def _conn(self, address: str) -> _Conn:
        conn = self._conns.get(address)
        if conn is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, 100000)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
            sock.setsockopt(zmq.HEARTBEAT_TTL, 10000)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
            if self.curve is not None:
                sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.public)
                sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve.secret)
                sock.setsockopt(zmq.CURVE_SERVERKEY, self._server_keys.get(address, self.curve.server_key))
            monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
            sock.connect(f"tcp://{address}")
            conn = _Conn(address, sock, monitor)
            self._conns[address] = conn
            self._by_sock[sock] = conn
            self._by_sock[monitor] = conn
            self._poller.register(sock, zmq.POLLIN)
            self._poller.register(monitor, zmq.POLLIN)
        return conn

    def _do_send(self, address, cid, kind, header, frames, callback, timeout, expect_response, on_sent):
        if self._closing:
            exc = ClientClosedError("client is closed")
            if callback is not None:
                self._safe(callback, None, [], exc)
            elif on_sent is not None:
                self._safe(on_sent, exc)
            return
        pending = None
        if expect_response:
            pending = self._inflight.add(cid, address, callback, time.monotonic() + timeout, kind)
        try:
            data = [_packb(header, use_bin_type=True), *frames]
        except Exception as exc:  # a caller put something unpackable in the header
            self._inflight.cancel(cid)
            if callback is not None:
                self._safe(callback, None, [], exc)
            return
        conn = self._conn(address)
        if conn.outbox:
            conn.outbox.append((pending, data, on_sent))
            return
        self._transmit(conn, pending, data, on_sent)

    def _transmit(self, conn: _Conn, pending, data, on_sent) -> bool:
        try:
            conn.sock.send_multipart(data, zmq.NOBLOCK)
        except zmq.Again:
            conn.outbox.append((pending, data, on_sent))
            if not conn.pollout:
                conn.pollout = True
                self._poller.modify(conn.sock, zmq.POLLIN | zmq.POLLOUT)
            return False
        if pending is not None:
            pending.sent = True
        if on_sent is not None:
            self._safe(on_sent, None)
        return True

    def _flush_outbox(self, conn: _Conn) -> None:
        while conn.outbox:
            pending, data, on_sent = conn.outbox[0]
            if pending is not None and pending.cancelled:
                conn.outbox.popleft()
                continue
            try:
                conn.sock.send_multipart(data, zmq.NOBLOCK)
            except zmq.Again:
                return
            conn.outbox.popleft()
            if pending is not None:
                pending.sent = True
            if on_sent is not None:
                self._safe(on_sent, None)
        if conn.pollout:
            conn.pollout = False
            self._poller.modify(conn.sock, zmq.POLLIN)

    def _fail(self, pending: InFlight, exc: BaseException) -> None:
        """Cancel ``pending`` if it is still in the table, and call it back with ``exc``."""
        if self._inflight.cancel(pending.cid) is not None:
            self._fail_removed(pending, exc)

    def _fail_removed(self, pending: InFlight, exc: BaseException) -> None:
        if pending.callback is not None:
            self._safe(pending.callback, None, [], exc)

    @staticmethod
    def _safe(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("client callback failed")

    def _on_monitor(self, conn: _Conn) -> None:
        while True:
            try:
                msg = conn.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_monitor_message(msg)["event"]
            if event in _HANDSHAKE_FAILED:
                self._refused(conn, _HANDSHAKE_FAILED[event])
            elif event == zmq.EVENT_CONNECTED:
                conn.connected = True
                log.debug("connected address=%s", conn.address)
            elif event == zmq.EVENT_DISCONNECTED:
                conn.connected = False
                log.info("connection lost address=%s", conn.address)
                for p in self._inflight.fail_address(conn.address):
                    self._fail_removed(p, ConnectionBrokenError(f"connection to {conn.address} broke with {p.kind} in flight"))
            elif event == zmq.EVENT_CONNECT_RETRIED and not conn.connected and conn.outbox:
                # Nothing in the outbox left this process: failing it cannot duplicate anything.
                items, conn.outbox = conn.outbox, collections.deque()
                for pending, _data, on_sent in items:
                    exc = ConnectionBrokenError(f"cannot connect to {conn.address}")
                    if pending is not None:
                        self._fail(pending, exc)
                    elif on_sent is not None:
                        self._safe(on_sent, exc)

    def _refused(self, conn: _Conn, why: str) -> None:
        """The broker did not admit this client: fail what waits for the connection (nothing
        left this process) and what is in flight on it, with AuthenticationError."""
        if self.curve is None:
            hint = "this client has no CURVE key: the broker may require one (curve_secret_key_file, curve_server_key)"
        else:
            hint = ("check curve_server_key (the broker's public key) and that this client's public key is in the "
                    "broker's authorized_keys_dir")
        message = f"CURVE handshake with {conn.address} failed: {why}; {hint}"
        log.warning("%s", message)
        items, conn.outbox = conn.outbox, collections.deque()
        for pending, _data, on_sent in items:
            if pending is not None:
                self._fail(pending, AuthenticationError(message))
            elif on_sent is not None:
                self._safe(on_sent, AuthenticationError(message))
        for p in self._inflight.fail_address(conn.address):
            self._fail_removed(p, AuthenticationError(message))

    def _on_readable(self, conn: _Conn) -> None:
        sock = conn.sock
        inflight = self._inflight
        for _ in range(10000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                header = _unpackb(frames[0], raw=False)
                cid = header["cid"]
            except Exception:
                log.warning("dropping undecodable response from %s", conn.address)
                continue
            pending = inflight.pop(cid)
            if pending is None:
                continue  # timed out or cancelled earlier
            if not isinstance(header, dict):
                self._safe(pending.callback, None, [], RemoteProtocolError(f"response from {conn.address} is not a map"))
                continue
            if pending.callback is not None:
                self._safe(pending.callback, header, frames[1:], None)

    def _expire(self, now: float) -> float | None:
        for p in self._inflight.expire(now):
            self._fail_removed(p, RequestTimeoutError(f"{p.kind} to {p.address}: no answer within the request timeout"))
        return self._inflight.next_deadline()

    def _drain_commands(self) -> None:
        try:
            while True:
                os.read(self._wake_r, 4096)
        except (BlockingIOError, OSError):
            pass
        self._wake_pending = False
        cmds = self._commands
        while cmds:
            what, item = cmds.popleft()
            if what == "send":
                self._do_send(*item)
            else:
                self._safe(item)

    def _run(self) -> None:
        poller = self._poller
        wake_r = self._wake_r
        by_sock = self._by_sock
        try:
            while True:
                self._drain_commands()
                if self._closing:
                    break
                now = time.monotonic()
                deadline = self._expire(now)
                for task in self._tasks:
                    try:
                        d = task.run(now)
                    except Exception:
                        log.exception("client task %r failed", task)
                        d = now + 0.1
                    if d is not None and (deadline is None or d < deadline):
                        deadline = d
                if self._commands:
                    continue
                if deadline is None:
                    timeout = 1000
                else:
                    timeout = max(0, min(1000, int((deadline - time.monotonic()) * 1000 + 0.999)))
                for sock, ev in poller.poll(timeout):
                    if sock == wake_r:
                        continue
                    conn = by_sock.get(sock)
                    if conn is None:
                        continue
                    if sock is conn.monitor:
                        self._on_monitor(conn)
                        continue
                    if ev & zmq.POLLIN:
                        self._on_readable(conn)
                    if ev & zmq.POLLOUT:
                        self._flush_outbox(conn)
        except Exception:
            log.exception("network thread crashed")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._closing = True
        exc = ClientClosedError("client is closed")
        while self._commands:
            what, item = self._commands.popleft()
            if what == "send":
                if item[5] is not None:
                    self._safe(item[5], None, [], exc)
                elif item[8] is not None:
                    self._safe(item[8], exc)
        for p in self._inflight.drain():
            self._fail_removed(p, exc)
        for task in self._tasks:
            close = getattr(task, "on_close", None)
            if close is not None:
                self._safe(close)
        for conn in self._conns.values():
            for pending, _data, on_sent in conn.outbox:
                if pending is None and on_sent is not None:
                    self._safe(on_sent, exc)
            try:
                conn.sock.disable_monitor()
            except Exception:
                pass
            for s in (conn.sock, conn.monitor):
                try:
                    s.close(linger=0)
                except Exception:
                    pass
        self._conns.clear()
        self._by_sock.clear()
        try:
            self._ctx.term()
        except Exception:
            pass
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._wake_w = -1
        self._closed.set()
