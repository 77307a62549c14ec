"""A plain TCP listener on the event loop, for stream protocols (Kafka's).

:class:`TcpListener` accepts connections on a listening socket and gives each a
:class:`TcpTransport` and a protocol object from ``make_protocol(conn_id, peer,
transport)``; the protocol gets ``data_received(bytes, now_ms)`` and
``connection_lost()``, and writes through the transport.  Sockets are non-blocking:

- input: up to :data:`READ_BURST` reads of :data:`READ_SIZE` bytes per turn of the loop,
  so one busy client does not starve the others;
- output: written at once as far as the kernel takes it, the rest kept and written when
  the socket is writable.  A connection whose unwritten output passes
  ``max_buffered_bytes`` stops being read until it drains below half of that (a client
  that does not read its replies holds at most that much of the broker's memory, plus
  one reply), and its protocol is told (``pause_writing`` / ``resume_writing``, if it has
  them) so it stops running requests whose replies would pile up; its protocol may pause
  reading too (too many requests in flight);
- a peer that closes, or a socket error, ends the connection; the protocol is told.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
READ_BURST = 8
ACCEPT_BURST = 64
_WOULD_BLOCK = (BlockingIOError, InterruptedError)


class TcpTransport:
    """One accepted connection's socket, as its protocol sees it."""

    def __init__(self, listener: "TcpListener", sock: socket.socket, peer: str) -> None:
        self.listener = listener
        self.sock = sock
        self.peer = peer  # HOST:PORT of the client, for log lines
        self.out: deque[memoryview] = deque()
        self.buffered = 0
        self.closed = False
        self.protocol = None
        self._paused_by_protocol = False
        self._paused_by_output = False
        self._closing = False

    # -- what the protocol calls -------------------------------------------------

    def write(self, chunks: list[bytes]) -> None:
        if self.closed:
            return
        for chunk in chunks:
            if chunk:
                self.out.append(memoryview(chunk))
                self.buffered += len(chunk)
        self._flush()

    def close(self) -> None:
        self.listener.drop(self)

    def close_after_write(self) -> None:
        """Read no more; close once the output queued so far is written."""
        self._closing = True
        self._paused_by_protocol = True
        if not self.out:
            self.listener.drop(self)
        else:
            self._update()

    def pause_reading(self) -> None:
        self._paused_by_protocol = True
        self._update()

    def resume_reading(self) -> None:
        self._paused_by_protocol = False
        self._update()

    # -- the loop's side ---------------------------------------------------------

    def _flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.sendmsg(list(itertools.islice(self.out, 64)))
            except _WOULD_BLOCK:
                break
            except OSError as exc:
                log.info("Kafka connection %s: write failed: %s", self.peer, exc)
                self.listener.drop(self)
                return
            self.buffered -= sent
            while sent:
                head = self.out[0]
                if len(head) <= sent:
                    sent -= len(head)
                    self.out.popleft()
                else:
                    self.out[0] = head[sent:]
                    sent = 0
        if self._closing and not self.out:
            self.listener.drop(self)
            return
        limit = self.listener.max_buffered_bytes
        was_paused = self._paused_by_output
        if self.buffered > limit:
            self._paused_by_output = True
        elif self.buffered <= limit // 2:
            self._paused_by_output = False
        self._update()
        if self._paused_by_output != was_paused and self.protocol is not None and not self.closed:
            # the protocol stops (and restarts) running requests whose replies would pile up
            hook = getattr(self.protocol, "pause_writing" if self._paused_by_output else "resume_writing", None)
            if hook is not None:
                hook()

    def _update(self) -> None:
        if not self.closed:
            self.listener.loop.want_io(self.sock, read=not (self._paused_by_protocol or self._paused_by_output),
                                       write=bool(self.out))


class TcpListener:
    """Accepts TCP connections on ``host:port`` and runs a protocol object per connection."""

    def __init__(self, loop, host: str, port: int, make_protocol: Callable, clock: Callable[[], int],
                 max_buffered_bytes: int, max_connections: int = 10_000) -> None:
        self.loop = loop
        self.make_protocol = make_protocol
        self.clock = clock
        self.max_buffered_bytes = max_buffered_bytes
        self.max_connections = max_connections
        host = host.strip("[]")  # "[::1]" names an IPv6 address as "::1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.server = socket.create_server((host, port), family=family, backlog=128, reuse_port=False)
        self.server.setblocking(False)
        self.address = self.server.getsockname()[:2]
        self.connections: dict[int, TcpTransport] = {}
        self._ids = itertools.count(1)

    def sockets(self) -> list:
        return [self.server]

    def on_readable(self, sock) -> None:
        if sock is self.server:
            self._accept()
            return
        transport = self.connections.get(sock.fileno())
        if transport is None:
            return
        for _ in range(READ_BURST):
            try:
                data = sock.recv(READ_SIZE)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                log.info("Kafka connection %s: read failed: %s", transport.peer, exc)
                self.drop(transport)
                return
            if not data:
                self.drop(transport)
                return
            transport.protocol.data_received(data, self.clock())
            if transport.closed or transport._paused_by_protocol or transport._paused_by_output:
                return
            if len(data) < READ_SIZE:
                return

    def on_writable(self, sock) -> None:
        transport = self.connections.get(sock.fileno())
        if transport is not None:
            transport._flush()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                sock, addr = self.server.accept()
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept a Kafka connection: %s", exc)
                return
            if len(self.connections) >= self.max_connections:
                log.warning("refusing a Kafka connection from %s: %d connections open", addr, len(self.connections))
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"{addr[0]}:{addr[1]}"
            transport = TcpTransport(self, sock, peer)
            self.connections[sock.fileno()] = transport
            self.loop.watch(self, sock)
            transport.protocol = self.make_protocol(next(self._ids), peer, transport)

    def drop(self, transport: TcpTransport) -> None:
        """Close one connection (idempotent)."""
        if transport.closed:
            return
        transport.closed = True
        self.loop.unwatch(transport.sock)
        self.connections.pop(transport.sock.fileno(), None)
        try:
            transport.sock.close()
        except OSError:
            pass
        transport.out.clear()
        if transport.protocol is not None:
            transport.protocol.connection_lost()

    def close(self) -> None:
        for transport in list(self.connections.values()):
            self.drop(transport)
        self.server.close()
