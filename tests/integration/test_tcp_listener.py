"""The plain TCP listener on the event loop: output bounded per connection, input paused."""

from __future__ import annotations

import socket
import time

import pytest

from support import free_port
from zbroker.net.loop import EventLoop
from zbroker.net.tcp_listener import TcpListener

pytestmark = pytest.mark.timeout(30)

REPLY = b"x" * (64 * 1024)
LIMIT = 1 << 20


def clock() -> int:
    return time.monotonic_ns() // 1_000_000


class Echo64k:
    """A protocol that answers every byte it receives with 64 KiB."""

    def __init__(self, conn_id, peer, transport) -> None:
        self.transport = transport
        self.received = 0
        self.lost = False

    def data_received(self, data: bytes, now_ms: int) -> None:
        self.received += len(data)
        self.transport.write([REPLY] * len(data))

    def connection_lost(self) -> None:
        self.lost = True


class Once:
    """A timer that stops the loop after one poll."""

    def __init__(self, loop) -> None:
        self.loop = loop

    def next_timer_ms(self, now_ms: int) -> int:
        return 5

    def tick(self, now_ms: int) -> None:
        self.loop.stop()


def turn(loop: EventLoop) -> None:
    loop.stopped = False
    loop.run()


def test_a_client_that_does_not_read_is_paused_with_its_output_bounded_then_resumed():
    protocols: list[Echo64k] = []
    loop = EventLoop(clock)
    loop.add_timer(Once(loop))
    listener = TcpListener(loop, "127.0.0.1", free_port(),
                           lambda *args: protocols.append(Echo64k(*args)) or protocols[-1], clock, max_buffered_bytes=LIMIT)
    loop.add_listener(listener)
    client = socket.create_connection(listener.address, timeout=10)
    try:
        while not protocols:
            turn(loop)
        proto = protocols[0]
        # one byte at a time, each asking for 64 KiB that the client does not read
        sent = 0
        deadline = time.monotonic() + 15
        while not proto.transport._paused_by_output and time.monotonic() < deadline:
            client.send(b"?")
            sent += 1
            turn(loop)
        assert proto.transport._paused_by_output, "the listener never paused the connection"
        for _ in range(50):  # more requests arrive; none is read while paused
            client.send(b"?")
            sent += 1
            turn(loop)
        assert proto.received < sent
        assert proto.transport.buffered <= LIMIT + len(REPLY)  # the limit, plus at most one reply
        # the client reads: the listener resumes and answers every byte, in full
        expected, got = sent * len(REPLY), 0
        client.setblocking(False)
        while got < expected and time.monotonic() < deadline + 10:
            try:
                got += len(client.recv(1 << 20))
            except BlockingIOError:
                pass
            turn(loop)
        assert (got, proto.received, proto.lost) == (expected, sent, False)
    finally:
        client.close()
        loop.close()


def test_an_ipv6_address_is_listened_on():
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6; the listener's IPv6 path cannot be checked")
    loop = EventLoop(clock)
    try:
        listener = TcpListener(loop, "[::1]", free_port(), lambda *args: None, clock, max_buffered_bytes=LIMIT)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert listener.server.family == socket.AF_INET6 and listener.address[0] == "::1"
        with socket.create_connection(("::1", listener.address[1]), timeout=5):
            pass
    finally:
        listener.close()
