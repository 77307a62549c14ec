"""The one event loop: a zmq.Poller over every listener's sockets, and timers.

    poll every registered socket (timeout = the nearest timer, at most 100 ms)
    -> each readable socket's listener drains a burst of messages into its handler
    -> run every timer that is due
    (replies are sent by the listeners as they are produced, with DONTWAIT)

Listeners (:class:`Listener`) register their sockets; a ZeroMQ ROUTER for requests,
DEALERs to the other brokers and the gossip SUB today, a TCP listener for the Kafka
protocol and an HTTP listener next.  zmq.Poller polls ZeroMQ sockets and anything with a
``fileno()`` alike, so a plain TCP listening socket and its accepted connections register
the same way; a listener adds and removes sockets as connections come and go
(:meth:`EventLoop.watch`, :meth:`EventLoop.unwatch`).  Timers (:class:`Timer`) say when they next have
work and are ticked with the loop's one clock.  A failure in a handler or a timer is
logged and the loop goes on.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import zmq

log = logging.getLogger(__name__)

MAX_POLL_MS = 100


class Listener(Protocol):
    def sockets(self) -> list:
        """The sockets to poll for input at start (ZeroMQ sockets, or objects with ``fileno()``)."""

    def on_readable(self, sock) -> None:
        """Drain a burst of input from ``sock``."""

    def close(self) -> None: ...


class WritableListener(Listener, Protocol):
    def on_writable(self, sock) -> None:
        """``sock`` can take more output (asked for with :meth:`EventLoop.want_write`)."""


class Timer(Protocol):
    def next_timer_ms(self, now_ms: int) -> int:
        """Milliseconds until :meth:`tick` has work."""

    def tick(self, now_ms: int) -> None: ...


def guarded(fn: Callable, *args) -> None:
    """Run one step; a failure (a bug, a disk error) is logged and the loop goes on."""
    try:
        fn(*args)
    except Exception:
        log.exception("error in %s; the broker keeps serving", getattr(fn, "__qualname__", fn))


class EventLoop:
    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self._poller = zmq.Poller()
        self._owners: dict = {}  # poll key (a zmq socket, or a file descriptor) -> (socket, its listener)
        self._order: list = []  # poll keys; input is taken in registration order
        self._timers: list[Timer] = []
        self._listeners: list[Listener] = []
        self.stopped = False

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)
        for sock in listener.sockets():
            self.watch(listener, sock)

    @staticmethod
    def _key(sock):
        # zmq.Poller reports ZeroMQ sockets as themselves and anything else by file descriptor
        return sock if isinstance(sock, zmq.Socket) else sock.fileno()

    def watch(self, listener: Listener, sock) -> None:
        """Poll ``sock`` for input and hand it to ``listener`` (e.g. a new connection)."""
        key = self._key(sock)
        self._poller.register(key, zmq.POLLIN)
        self._owners[key] = (sock, listener)
        self._order.append(key)

    def want_io(self, sock, read: bool, write: bool) -> None:
        """Choose what ``sock`` (already watched) is polled for: input (``on_readable``),
        room for output (``on_writable``, for a plain socket with output pending), both or
        neither (a connection whose replies are not read pauses its input)."""
        key = self._key(sock)
        if key in self._owners:
            # flags 0 unregisters (zmq.Poller's rule); registering again brings it back
            self._poller.register(key, (zmq.POLLIN if read else 0) | (zmq.POLLOUT if write else 0))

    def unwatch(self, sock) -> None:
        """Stop polling ``sock`` (call it before closing a plain socket)."""
        key = self._key(sock)
        if self._owners.pop(key, None) is not None:
            try:
                self._poller.unregister(key)
            except KeyError:  # paused: polled for nothing
                pass
            self._order.remove(key)

    def add_timer(self, timer: Timer) -> None:
        self._timers.append(timer)

    def stop(self, *_args) -> None:
        """Ask the loop to end (safe from a signal handler: checked at least every 100 ms)."""
        self.stopped = True

    def run(self) -> None:
        """Poll and tick until :meth:`stop`."""
        while not self.stopped:
            self._turn()

    def drain(self, done: Callable[[], bool], timeout_ms: int) -> None:
        """After :meth:`run` returned: go on polling and ticking until ``done()`` or for
        ``timeout_ms``, so work under way when the stop came (a bridge's last appends and
        commits, handed to other brokers) gets its answers; another :meth:`stop` ends it."""
        end = self.clock() + timeout_ms
        self.stopped = False
        while not self.stopped and not done() and self.clock() < end:
            self._turn()
        self.stopped = True

    def _turn(self) -> None:
        """One turn: poll every socket (at most until the nearest timer), hand input to its
        listener, run the timers."""
        now = self.clock()
        timeout = MAX_POLL_MS
        for timer in self._timers:
            timeout = min(timeout, timer.next_timer_ms(now))
        events = dict(self._poller.poll(max(0, timeout)))
        for key in list(self._order):
            flags = events.get(key, 0)
            if flags & zmq.POLLOUT and key in self._owners:
                sock, listener = self._owners[key]
                guarded(listener.on_writable, sock)
            if flags & (zmq.POLLIN | zmq.POLLERR) and key in self._owners:
                sock, listener = self._owners[key]
                guarded(listener.on_readable, sock)
        for timer in self._timers:
            guarded(timer.tick, self.clock())

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()
