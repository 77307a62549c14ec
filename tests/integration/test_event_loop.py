"""The broker's one event loop with real sockets: ZeroMQ and plain TCP listeners, timers, failures."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import zmq

from support import free_port
from zbroker.net.loop import EventLoop

pytestmark = pytest.mark.timeout(30)


def clock() -> int:
    return time.monotonic_ns() // 1_000_000


class Recorder:
    """A listener over a zmq PULL socket and a plain TCP server socket; accepted connections
    are watched and unwatched as they come and go."""

    def __init__(self, loop: EventLoop, ctx: zmq.Context, zmq_port: int, tcp_port: int) -> None:
        self.loop = loop
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(f"tcp://127.0.0.1:{zmq_port}")
        self.server = socket.create_server(("127.0.0.1", tcp_port))
        self.server.setblocking(False)
        self.got: list[bytes] = []
        self.closed = 0

    def sockets(self):
        return [self.pull, self.server]

    def on_readable(self, sock) -> None:
        if sock is self.pull:
            frame = self.pull.recv(zmq.NOBLOCK)
            if frame == b"boom":
                raise RuntimeError("a handler bug")
            self.got.append(frame)
        elif sock is self.server:
            conn, _ = self.server.accept()
            conn.setblocking(False)
            self.loop.watch(self, conn)
        else:
            data = sock.recv(1024)
            if data:
                self.got.append(data)
            else:
                self.loop.unwatch(sock)
                sock.close()
                self.closed += 1

    def close(self) -> None:
        self.pull.close(linger=0)
        self.server.close()


class StopWhen:
    """A timer that stops the loop once ``done()`` holds (or at a deadline)."""

    def __init__(self, loop: EventLoop, done, deadline_s: float = 10.0) -> None:
        self.loop, self.done, self.ticks = loop, done, 0
        self.deadline = clock() + int(deadline_s * 1000)

    def next_timer_ms(self, now_ms: int) -> int:
        return 20

    def tick(self, now_ms: int) -> None:
        self.ticks += 1
        if self.done() or now_ms >= self.deadline:
            self.loop.stop()


def test_zmq_and_plain_tcp_listeners_share_the_loop_and_a_handler_bug_does_not_stop_it():
    ctx = zmq.Context()
    loop = EventLoop(clock)
    zmq_port, tcp_port = free_port(), free_port()
    rec = Recorder(loop, ctx, zmq_port, tcp_port)
    loop.add_listener(rec)
    stop = StopWhen(loop, lambda: rec.got.count(b"zmq-2") == 1 and b"tcp-1" in rec.got and rec.closed == 1)
    loop.add_timer(stop)
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{zmq_port}")

    def clients() -> None:
        push.send(b"zmq-1")
        push.send(b"boom")  # the handler raises: logged, the loop goes on
        push.send(b"zmq-2")
        with socket.create_connection(("127.0.0.1", tcp_port)) as conn:
            conn.sendall(b"tcp-1")  # then closes: the loop sees the data, then the end

    sender = threading.Thread(target=clients)
    sender.start()
    try:
        loop.run()
    finally:
        sender.join(10)
        loop.close()
        push.close(linger=0)
        ctx.term()
    # each socket's messages in order; the two sockets interleave as they arrive
    assert [m for m in rec.got if m.startswith(b"zmq")] == [b"zmq-1", b"zmq-2"] and b"tcp-1" in rec.got
    assert rec.closed == 1  # the accepted connection was watched, then unwatched on EOF
    assert stop.ticks >= 1


def test_the_loop_sleeps_no_longer_than_the_nearest_timer():
    loop = EventLoop(clock)
    fired: list[int] = []

    class Every30:
        def __init__(self) -> None:
            self.due = clock() + 30

        def next_timer_ms(self, now_ms: int) -> int:
            return max(0, self.due - now_ms)

        def tick(self, now_ms: int) -> None:
            if now_ms >= self.due:
                fired.append(now_ms)
                self.due = now_ms + 30
                if len(fired) == 5:
                    loop.stop()

    loop.add_timer(Every30())
    started = clock()
    loop.run()
    # five 30 ms periods; with the 100 ms poll cap alone it would take 500 ms
    assert len(fired) == 5 and clock() - started < 450


class Countdown:
    """A timer with work every 10 ms; ``left`` turns of it until its work is done."""

    def __init__(self, left: int) -> None:
        self.left, self.ticks = left, 0

    def next_timer_ms(self, now_ms: int) -> int:
        return 10

    def tick(self, now_ms: int) -> None:
        self.ticks += 1
        self.left -= 1


def test_drain_goes_on_after_a_stop_until_done_or_its_deadline():
    loop = EventLoop(clock)
    work = Countdown(5)
    loop.add_timer(work)
    loop.stop()
    loop.run()  # stopped already: returns at once
    assert work.ticks == 0
    loop.drain(lambda: work.left <= 0, timeout_ms=5_000)
    assert work.left == 0 and loop.stopped  # ran exactly until done, and stays stopped
    endless = Countdown(10**9)
    loop.add_timer(endless)
    started = clock()
    loop.drain(lambda: False, timeout_ms=200)
    assert 200 <= clock() - started < 2_000 and loop.stopped
