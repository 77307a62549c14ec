"""The TCP listener's lingering close, on a real loop and real sockets in this process (the
test turns the listener's loop itself, so what the client sees is decided, not raced).

A protocol that answers and then closes with ``close_after_write(linger=True)`` (a refused
SASL login) must not put the end of the stream right behind its answer: a client that reads
both in one go may drop the answer (kafka-python 3.0 does: it reported "socket disconnected"
instead of SaslAuthenticationFailedError whenever the broker's FIN had arrived before it woke
up).  The connection stays open, its input read and dropped, until the client closes, until
``linger_ms``, or past MAX_LINGER_BYTES; it counts against ``max_connections``."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

import pytest

from tests.integration.test_tcp_listener_tls import (  # noqa: F401 (pki: a fixture)
    Harness, closed_by_peer, exchange, pki, tls_client)
from zbroker.net.tcp_listener import MAX_LINGER_BYTES

pytestmark = pytest.mark.timeout(30)

ANSWER = b"refused"


class Refuser:
    """Answers its first input with ANSWER, then closes (lingering unless ``linger`` is False),
    as the Kafka door does with a refused login; keeps what it was given."""

    linger = True

    def __init__(self, conn_id, peer, transport) -> None:
        self.transport = transport
        self.received = b""
        self.lost = False

    def data_received(self, data: bytes, now_ms: int) -> None:
        self.received += data
        self.transport.write([ANSWER])
        self.transport.close_after_write(linger=self.linger)

    def connection_lost(self) -> None:
        self.lost = True


class ClosesAtOnce(Refuser):
    linger = False


def ended(sock, within_s: float = 0.2) -> bool:
    """Whether the stream ends (or is reset) within ``within_s``; any data fails the test."""
    readable, _, _ = select.select([sock], [], [], within_s)
    if not readable:
        return False
    try:
        data = sock.recv(4096)
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except (ConnectionResetError, ssl.SSLError):
        return True
    assert data == b"", f"unexpected bytes after the answer: {data!r}"
    return True


def refused(h: Harness) -> tuple[socket.socket, Refuser]:
    """A new plain client that sent "login" and read the whole answer; the listener has done
    all it does with that (written the answer, and closed or not)."""
    made = len(h.protocols)
    client = socket.create_connection(h.listener.address, timeout=5)
    client.sendall(b"login")
    proto = h.until(lambda: len(h.protocols) > made and h.protocols[-1].received and h.protocols[-1])
    got = b""
    while len(got) < len(ANSWER):
        got += client.recv(100)
    assert got == ANSWER
    return client, proto


@contextlib.contextmanager
def refused_once(protocol=Refuser, **options):
    """A listener (``options``) whose first client sent "login" and read the whole answer:
    ``(harness, client, protocol)``; all closed at the end."""
    h = Harness(protocol=protocol, **options)
    try:
        client, proto = refused(h)
        try:
            yield h, client, proto
        finally:
            client.close()
    finally:
        h.close()


def test_the_answer_is_not_followed_by_the_end_until_the_client_closes():
    with refused_once(linger_ms=60_000) as (h, client, proto):
        h.turn()
        assert not ended(client)  # a client reading all there is gets the answer alone
        client.sendall(b"more")  # read and dropped: the protocol gets nothing after its close
        client.shutdown(socket.SHUT_WR)
        h.until(lambda: proto.lost)
        assert proto.received == b"login" and proto.transport.discarded == 4 and not h.listener.connections
        assert ended(client, 5) and client.recv(10) == b""  # an orderly end (FIN), not a reset


def test_without_linger_the_connection_closes_once_the_answer_is_written():
    with refused_once(ClosesAtOnce, linger_ms=60_000) as (_h, client, proto):
        assert proto.lost and ended(client, 5)


def test_a_client_that_does_not_close_is_closed_at_linger_ms():
    started = time.monotonic()
    with refused_once(linger_ms=300) as (h, client, proto):
        assert not proto.lost
        h.until(lambda: proto.lost)
        assert time.monotonic() - started >= 0.29  # the deadline runs from close_after_write
        assert ended(client, 5)


def test_more_than_max_linger_bytes_of_input_closes_at_once():
    with refused_once(linger_ms=60_000) as (h, client, proto):
        client.setblocking(False)
        junk = memoryview(b"x" * (MAX_LINGER_BYTES + 1))

        def pushed_until_closed():
            nonlocal junk
            if junk:
                try:
                    junk = junk[client.send(junk):]
                except (BlockingIOError, ConnectionResetError, BrokenPipeError):
                    pass
            return proto.lost

        h.until(pushed_until_closed)
        assert proto.transport.discarded > MAX_LINGER_BYTES and proto.received == b"login"


def test_a_lingering_connection_counts_against_max_connections():
    with refused_once(linger_ms=60_000, max_connections=1) as (h, first, proto):
        with socket.create_connection(h.listener.address, timeout=5) as second:
            second.setblocking(False)
            h.until(lambda: closed_by_peer(second))  # refused: the lingering one holds the only place
        first.close()
        h.until(lambda: proto.lost)
        third, _ = refused(h)  # room again
        third.close()


def test_over_tls_the_answer_is_readable_and_the_end_waits_for_the_client(pki):
    h = Harness(tls=pki[0], protocol=Refuser, linger_ms=60_000)
    client = tls_client(h, pki[1])
    try:
        assert exchange(h, client, b"login", len(ANSWER)) == ANSWER
        proto = h.protocols[0]
        h.turn()
        assert proto.received == b"login" and not ended(client)
        assert proto.transport.tls is None  # the TLS session is let go while lingering
        client.shutdown(socket.SHUT_RDWR)
        h.until(lambda: proto.lost)
        assert not h.listener.connections
    finally:
        client.close()
        h.close()
