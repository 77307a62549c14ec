"""The TCP listener's TLS and deadlines on a real loop and real sockets: a TLS client is served,
plaintext and garbage on the TLS port close only their own connection, and connections that
do not finish their handshake (or what their protocol asked for) in time are closed."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import trustme

from support import free_port
from tests.integration.test_tcp_listener import Once, clock
from zbroker.net.loop import EventLoop
from zbroker.net.tcp_listener import TcpListener, server_tls_context

pytestmark = pytest.mark.timeout(30)


class Upper:
    """Answers what it receives in upper case; may ask for a deadline when made."""

    deadline_ms: int | None = None

    def __init__(self, conn_id, peer, transport) -> None:
        self.transport = transport
        self.lost = False
        if self.deadline_ms is not None:
            transport.set_deadline(self.deadline_ms, "the test's deadline")

    def data_received(self, data: bytes, now_ms: int) -> None:
        if data == b"done":
            self.transport.clear_deadline()
        self.transport.write([data.upper()])

    def connection_lost(self) -> None:
        self.lost = True


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    folder = tmp_path_factory.mktemp("pki")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server_tls_context(str(folder / "cert.pem"), str(folder / "key.pem")), client


class Harness:
    def __init__(self, tls=None, handshake_timeout_ms: int = 10_000, protocol=Upper, **options) -> None:
        self.protocols: list = []
        self.loop = EventLoop(clock)
        self.loop.add_timer(Once(self.loop))
        self.listener = TcpListener(self.loop, "127.0.0.1", free_port(),
                                    lambda *a: self.protocols.append(protocol(*a)) or self.protocols[-1], clock,
                                    max_buffered_bytes=1 << 20, tls=tls, handshake_timeout_ms=handshake_timeout_ms,
                                    **options)
        self.loop.add_listener(self.listener)
        self.loop.add_timer(self.listener)

    def turn(self) -> None:
        self.loop.stopped = False
        self.loop.run()

    def until(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            self.turn()
        raise AssertionError("condition not reached")

    def close(self) -> None:
        self.loop.close()


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, ssl.SSLError):
        return True


def tls_client(h: Harness, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(h.listener.address, timeout=5)
    raw.setblocking(False)
    client = context.wrap_socket(raw, server_hostname="127.0.0.1", do_handshake_on_connect=False)

    def handshaken():
        try:
            client.do_handshake()
            return True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False

    h.until(handshaken)
    return client


def exchange(h: Harness, client, data: bytes, answer_size: int | None = None) -> bytes:
    """Send ``data``; what comes back once ``answer_size`` bytes (default: as many) are in."""
    client.send(data)
    got = b""

    def answered():
        nonlocal got
        try:
            got += client.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        return len(got) >= (len(data) if answer_size is None else answer_size)

    h.until(answered)
    return got


def test_plaintext_and_garbage_on_the_tls_port_close_only_their_connection(pki):
    server_context, client_context = pki
    h = Harness(tls=server_context)
    good = tls_client(h, client_context)
    bad = []
    try:
        for junk in (b"\x00\x00\x00\x0a\x00\x12\x00\x03\x00\x00\x00\x01\xff\xff", b"GET / HTTP/1.0\r\n\r\n" * 10):
            sock = socket.create_connection(h.listener.address, timeout=5)
            sock.setblocking(False)
            bad.append(sock)
            sock.sendall(junk)
            h.until(lambda: closed_by_peer(sock))
        assert len(h.protocols) == 1  # protocols are made only after a handshake
        assert exchange(h, good, b"still here") == b"STILL HERE"
        assert good.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        good.close()
        for sock in bad:
            sock.close()
        h.close()


def test_a_client_that_does_not_finish_its_handshake_is_closed_at_the_deadline(pki):
    h = Harness(tls=pki[0], handshake_timeout_ms=300)
    idle = socket.create_connection(h.listener.address, timeout=5)
    idle.setblocking(False)
    started = time.monotonic()
    try:
        h.until(lambda: closed_by_peer(idle))
        assert 0.25 <= time.monotonic() - started < 5
        assert not h.listener.connections and not h.protocols
    finally:
        idle.close()
        h.close()


def test_a_protocols_deadline_closes_the_connection_unless_cleared():
    class Deadlined(Upper):
        deadline_ms = 300

    h = Harness(protocol=Deadlined)
    late = socket.create_connection(h.listener.address, timeout=5)
    done = socket.create_connection(h.listener.address, timeout=5)
    for sock in (late, done):
        sock.setblocking(False)
    try:
        h.until(lambda: len(h.protocols) == 2)
        done.sendall(b"done")
        assert h.until(lambda: _recv(done)) == b"DONE"
        h.until(lambda: closed_by_peer(late))
        end = time.monotonic() + 0.4  # well past the deadline: the cleared one stays open
        h.until(lambda: time.monotonic() > end)
        assert [p.lost for p in h.protocols] == [True, False] and len(h.listener.connections) == 1
        done.sendall(b"x")
        assert h.until(lambda: _recv(done)) == b"X"
    finally:
        late.close()
        done.close()
        h.close()


def _recv(sock) -> bytes:
    try:
        return sock.recv(100)
    except BlockingIOError:
        return b""


def test_handshakes_in_progress_are_bounded_and_counted_back_down(pki):
    h = Harness(tls=pki[0], handshake_timeout_ms=300)
    h.listener.max_handshakes = 1
    first = socket.create_connection(h.listener.address, timeout=5)
    second = socket.create_connection(h.listener.address, timeout=5)
    for sock in (first, second):
        sock.setblocking(False)
    try:
        h.until(lambda: closed_by_peer(second))  # refused while the first one's handshake is pending
        assert h.listener.handshaking == 1
        h.until(lambda: closed_by_peer(first))  # its deadline
        assert h.listener.handshaking == 0
        good = tls_client(h, pki[1])  # room again
        assert exchange(h, good, b"ok") == b"OK"
        assert h.listener.handshaking == 0  # a finished handshake is no longer counted
        good.close()
    finally:
        first.close()
        second.close()
        h.close()
