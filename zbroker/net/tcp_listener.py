"""A TCP listener on the event loop, for stream protocols (Kafka's), in plain TCP or TLS.

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
- a peer that closes, or a socket error, ends the connection; the protocol is told;
- deadlines: a protocol may ask for its connection to be closed unless it clears the
  deadline in time (``set_deadline``, ``clear_deadline``: a client that must authenticate
  first); the listener is a timer of the loop and closes what is overdue;
- closing after a last answer (``close_after_write``): the protocol gets no more input and
  the socket is closed once the output is written; with ``linger`` (an answer the client
  must read, such as a refused login) it is not closed then but *lingers*: input is read
  and discarded, and the socket is closed when the client closes its side, after
  :data:`MAX_LINGER_BYTES` of input, or ``linger_ms`` after ``close_after_write``, whichever
  comes first.  A close right after the answer puts the answer and the end of the stream
  in the client's socket together, and some clients (kafka-python 3.0: the bytes read in
  the same call as the end are dropped) then report a lost connection instead of the
  answer; a client that reads the answer closes first.  A lingering connection counts
  against ``max_connections``.

TLS (a listener given an ``ssl.SSLContext``, :func:`server_tls_context`): each connection
runs a :class:`TlsSession`, Python's ``ssl.SSLObject`` over two ``MemoryBIO``: sans-IO, in
the same loop, no thread.  Ciphertext read from the socket goes in, plaintext comes out
to the protocol; what the protocol writes is encrypted into the same output queue (its
bound counts ciphertext).  The protocol is made only once the handshake is done, which
must happen within ``handshake_timeout_ms`` and :data:`MAX_HANDSHAKE_BYTES` of input, with
at most :data:`MAX_TLS_HANDSHAKES` in progress at once (more connections are closed at once);
bytes that are not TLS (a plaintext Kafka client, garbage) fail the handshake and close
that connection alone, with a rate-limited log line.  TLS 1.2 is the minimum; the
broker does not ask for client certificates and refuses renegotiation.
"""

from __future__ import annotations

import enum
import errno
import heapq
import itertools
import logging
import socket
import ssl
import time
from collections import deque
from typing import Callable

from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
READ_BURST = 8
ACCEPT_BURST = 64
_WOULD_BLOCK = (BlockingIOError, InterruptedError)
#: Time a TLS client has to finish its handshake.
TLS_HANDSHAKE_TIMEOUT_MS = 10_000
#: Ciphertext a client may send before its handshake is done (a ClientHello is ~0.5 KB).
MAX_HANDSHAKE_BYTES = 64 * 1024
#: TLS handshakes in progress at once per listener (one holds ~47 KB): beyond it, new
#: connections are closed at once, so half-open handshakes cannot hold much memory.
MAX_TLS_HANDSHAKES = 1000
#: How long a connection closed after an answer the client must read (``close_after_write``
#: with ``linger``) stays open at most, for the client to read that answer and close first.
LINGER_MS = 2_000
#: Input a lingering connection reads and discards before it is closed at once.
MAX_LINGER_BYTES = 64 * 1024
_NO_DEADLINE_MS = 3_600_000


class TlsError(Exception):
    """The peer's bytes are not TLS we accept (a failed handshake, a bad record)."""


class TlsState(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"  # failed, or the peer sent close_notify


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for the Kafka listener: TLS 1.2 or newer, Python's default ciphers,
    no client certificates asked, no renegotiation.

    Raises:
        OSError: naming the file that cannot be read or does not hold a certificate chain
            and its key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise OSError(f"cannot load the Kafka listener's TLS certificate {cert_file} and key {key_file}: {exc}") from None
    return context


class TlsSession:
    """The server side of one TLS connection, sans-IO: ciphertext in, plaintext out.

    :meth:`receive` takes what the socket read and returns the plaintext it completes;
    :meth:`send` encrypts; :meth:`outgoing` is the ciphertext to write (handshake
    messages, encrypted data, alerts).  States: HANDSHAKE -> OPEN -> CLOSED; a failure
    raises :class:`TlsError` and closes the session.
    """

    def __init__(self, context: ssl.SSLContext, max_handshake_bytes: int = MAX_HANDSHAKE_BYTES) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.state = TlsState.HANDSHAKE
        self.max_handshake_bytes = max_handshake_bytes
        self._handshake_bytes = 0

    @property
    def version(self) -> str | None:
        return self._tls.version()

    def receive(self, data: bytes) -> bytes:
        """Ciphertext from the peer; returns the plaintext now readable (b"" while the
        handshake goes on).

        Raises:
            TlsError: a failed handshake, a bad record, or input after CLOSED.
        """
        if self.state is TlsState.CLOSED:
            raise TlsError("the TLS session is closed")
        self._incoming.write(data)
        if self.state is TlsState.HANDSHAKE:
            self._handshake_bytes += len(data)
            if self._handshake_bytes > self.max_handshake_bytes:
                raise self._failed(f"more than {self.max_handshake_bytes} bytes without finishing the TLS handshake")
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            except ssl.SSLError as exc:
                raise self._failed(f"TLS handshake failed: {exc.reason or exc}") from None
            self.state = TlsState.OPEN
        chunks = []
        while True:
            try:
                chunk = self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:
                raise self._failed(f"bad TLS record: {exc.reason or exc}") from None
            if not chunk:  # close_notify (Python's read answers b"" for it): the peer is done
                self.state = TlsState.CLOSED
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, chunks) -> None:
        """Encrypt ``chunks`` (plaintext) into :meth:`outgoing`."""
        if self.state is not TlsState.OPEN:
            raise TlsError(f"cannot send in TLS state {self.state.value}")
        for chunk in chunks:
            if chunk:
                self._tls.write(chunk)

    def outgoing(self) -> bytes:
        """Ciphertext to write to the peer (b"" if none)."""
        return self._outgoing.read()

    def _failed(self, why: str) -> TlsError:
        self.state = TlsState.CLOSED
        return TlsError(why)


class TcpTransport:
    """One accepted connection's socket, as its protocol sees it."""

    def __init__(self, listener: "TcpListener", sock: socket.socket, peer: str, tls: TlsSession | None = None) -> None:
        self.listener = listener
        self.sock = sock
        self.peer = peer  # HOST:PORT of the client, for log lines
        self.tls = tls
        self.out: deque[memoryview] = deque()
        self.buffered = 0
        self.closed = False
        self.protocol = None
        self.deadline: tuple[int, str | None] | None = None  # (token in the listener's heap, why; None: no log)
        self._paused_by_protocol = False
        self._paused_by_output = False
        self._closing = False
        self.lingering = False  # closing: reading and discarding input until the client closes
        self.discarded = 0  # bytes read and discarded while lingering

    # -- what the protocol calls -------------------------------------------------

    def write(self, chunks: list[bytes]) -> None:
        if self.closed or self._closing:  # close_after_write: what was written before it is all
            return
        if self.tls is not None:
            try:
                self.tls.send(chunks)
            except TlsError:
                self.listener.drop(self)
                return
            chunks = [self.tls.outgoing()]
        self._queue(chunks)

    def set_deadline(self, delay_ms: int, why: str) -> None:
        """Close this connection in ``delay_ms`` (logging ``why``) unless :meth:`clear_deadline`."""
        self.listener.set_deadline(self, delay_ms, why)

    def clear_deadline(self) -> None:
        if not self.lingering:  # a lingering connection's bound stays
            self.deadline = None

    def close(self) -> None:
        self.listener.drop(self)

    def _queue(self, chunks) -> None:
        for chunk in chunks:
            if chunk:
                self.out.append(memoryview(chunk))
                self.buffered += len(chunk)
        self._flush()

    def close_after_write(self, linger: bool = False) -> None:
        """Give the protocol no more input and write nothing more; close once the output
        queued so far is written.  With ``linger`` (that output ends with an answer the
        client must read): close when the client closes its side instead, or after
        ``linger_ms`` or :data:`MAX_LINGER_BYTES` of input, reading and discarding its
        input until then (see the module's docstring)."""
        if self.closed or self._closing:
            return
        self._closing = True
        self._paused_by_protocol = True
        if linger:
            self.lingering = True
            self.tls = None  # its output is encrypted and queued already; it reads no more
            self.listener.set_deadline(self, self.listener.linger_ms, None)
        if not self.out and not self.lingering:
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
        if self._closing and not self.out and not self.lingering:
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
            reading = self.lingering or not (self._paused_by_protocol or self._paused_by_output)
            self.listener.loop.want_io(self.sock, read=reading, write=bool(self.out))


class TcpListener:
    """Accepts TCP connections on ``host:port`` and runs a protocol object per connection
    (over TLS if ``tls`` is a server context).  Register it with the loop as a listener and
    as a timer (deadlines)."""

    def __init__(self, loop, host: str, port: int, make_protocol: Callable, clock: Callable[[], int],
                 max_buffered_bytes: int, max_connections: int = 10_000, tls: ssl.SSLContext | None = None,
                 handshake_timeout_ms: int = TLS_HANDSHAKE_TIMEOUT_MS, linger_ms: int = LINGER_MS) -> None:
        self.loop = loop
        self.make_protocol = make_protocol
        self.clock = clock
        self.max_buffered_bytes = max_buffered_bytes
        self.max_connections = max_connections
        self.tls = tls
        self.handshake_timeout_ms = handshake_timeout_ms
        self.linger_ms = linger_ms
        self.max_handshakes = MAX_TLS_HANDSHAKES
        self.handshaking = 0  # connections whose TLS handshake is in progress
        self._deadlines: list[tuple[int, int, TcpTransport]] = []  # heap: (due ms, token, transport)
        self._tokens = itertools.count()
        self.bad_input_log = RateLimitedLog(log, burst=10, window_s=10.0)
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
        if transport.lingering:
            self._discard(transport)
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
            if transport.tls is not None:
                data = self._decrypt(transport, data)
            if data:
                transport.protocol.data_received(data, self.clock())
            if transport.closed or transport._paused_by_protocol or transport._paused_by_output:
                return
            if len(data) < READ_SIZE:
                return

    def _discard(self, transport: TcpTransport) -> None:
        """Read and drop what a lingering connection sends; close it at its end, a read
        error, or past :data:`MAX_LINGER_BYTES`."""
        for _ in range(READ_BURST):
            try:
                data = transport.sock.recv(READ_SIZE)
            except _WOULD_BLOCK:
                return
            except OSError:
                self.drop(transport)
                return
            transport.discarded += len(data)
            if not data or transport.discarded > MAX_LINGER_BYTES:
                self.drop(transport)
                return

    def _decrypt(self, transport: TcpTransport, data: bytes) -> bytes:
        """Ciphertext read from a TLS connection -> the plaintext for its protocol (the
        protocol is made when the handshake completes)."""
        tls = transport.tls
        try:
            plain = tls.receive(data)
        except TlsError as exc:
            self.bad_input_log.log(time.monotonic(), "tls", logging.INFO, "closing Kafka connection from %s: %s",
                                   transport.peer, exc)
            transport._queue([tls.outgoing()])  # the alert, if any, as far as the socket takes it at once
            self.drop(transport)
            return b""
        transport._queue([tls.outgoing()])
        if transport.closed:
            return b""
        if transport.protocol is None and tls.state is not TlsState.HANDSHAKE:
            self.handshaking -= 1
            transport.clear_deadline()
            transport.protocol = self.make_protocol(next(self._ids), transport.peer, transport)
        if tls.state is TlsState.CLOSED:  # close_notify: deliver what came before it, then end
            if plain and transport.protocol is not None:
                transport.protocol.data_received(plain, self.clock())
            self.drop(transport)
            return b""
        return plain

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
            if self.tls is not None and self.handshaking >= self.max_handshakes:
                self.bad_input_log.log(time.monotonic(), "handshakes", logging.WARNING,
                                       "refusing a Kafka connection from %s: %d TLS handshakes in progress", addr,
                                       self.handshaking)
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"{addr[0]}:{addr[1]}"
            transport = TcpTransport(self, sock, peer, TlsSession(self.tls) if self.tls is not None else None)
            self.connections[sock.fileno()] = transport
            self.loop.watch(self, sock)
            if transport.tls is None:
                transport.protocol = self.make_protocol(next(self._ids), peer, transport)
            else:
                self.handshaking += 1
                transport.set_deadline(self.handshake_timeout_ms,
                                       f"TLS handshake not finished within {self.handshake_timeout_ms} ms")

    # -- deadlines (the loop's timer) ------------------------------------------------

    def set_deadline(self, transport: TcpTransport, delay_ms: int, why: str | None) -> None:
        token = next(self._tokens)
        transport.deadline = (token, why)
        heapq.heappush(self._deadlines, (self.clock() + delay_ms, token, transport))

    def _live_deadline(self) -> tuple[int, int, TcpTransport] | None:
        """The earliest deadline still set (entries of cleared or replaced ones are dropped)."""
        heap = self._deadlines
        while heap:
            _due, token, transport = heap[0]
            if not transport.closed and transport.deadline is not None and transport.deadline[0] == token:
                return heap[0]
            heapq.heappop(heap)
        return None

    def next_timer_ms(self, now_ms: int) -> int:
        first = self._live_deadline()
        return _NO_DEADLINE_MS if first is None else max(0, first[0] - now_ms)

    def tick(self, now_ms: int) -> None:
        """Close every connection whose deadline has passed."""
        while (first := self._live_deadline()) is not None and first[0] <= now_ms:
            heapq.heappop(self._deadlines)
            transport = first[2]
            why = transport.deadline[1]
            if why is not None:
                self.bad_input_log.log(time.monotonic(), "deadline", logging.INFO,
                                       "closing Kafka connection from %s: %s", transport.peer, why)
            self.drop(transport)

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
        transport.deadline = None
        if transport.tls is not None and transport.protocol is None:
            self.handshaking -= 1
        transport.tls = None  # an SSLObject holds buffers: let it go now
        if transport.protocol is not None:
            transport.protocol.connection_lost()

    def close(self) -> None:
        for transport in list(self.connections.values()):
            self.drop(transport)
        self.server.close()
