"""A mirror's source side: a client of the other cluster, in a thread of its own.

A ``[[mirror]]`` reads another cluster as any client would, with the tested client
libraries (as Kafka's MirrorMaker uses Kafka's clients; :mod:`zbroker.net.mirror_readers`):
``zbroker://`` through :class:`clients.Consumer` (manual ``assign``/``seek``, no group: the
source needs to grant only read and describe) and :class:`clients.Admin`; ``kafka://``
through confluent-kafka (nothing committed).  It authenticates like any client:
``source_config`` goes to librdkafka (``security.protocol``, ``sasl.*``, ``ssl.*``); the
CURVE keys (``curve_server_key``, ``curve_secret_key_file``) to the native client.

The thread and the broker's loop share two queues::

    loop  --add(positions) / pause / resume / remove / refresh() / close()-->  thread   (commands, small)
    loop  <--("topics", ...) ("records", ...) ("error", msg)--  thread   (bounded: the thread
                                        blocks while it holds QUEUE_EVENTS events or QUEUE_BYTES)

and a socketpair: after queuing an event the thread writes a byte (unless one is already
unread), which wakes the loop (the read end is watched like any listener's socket); the
loop then calls ``on_wake``, and the mirror takes events while it has room
(:mod:`zbroker.frontends.bridge.mirror` defines the events).  A partition the mirror pauses
(its backlog is full) is no longer read: from the call on, none of its records are queued,
and when it is resumed it is read again from just after the last record queued.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections import deque
from typing import Callable

from zbroker.net.mirror_readers import POLL_S, KafkaReader, ZbrokerReader

log = logging.getLogger(__name__)

#: events (record batches mostly) queued between the thread and the loop at most
QUEUE_EVENTS = 16
#: ... and at most about this many bytes of records (one event more than that is let through)
QUEUE_BYTES = 8 << 20
#: pause after a failure before the thread tries again
RETRY_S = 1.0
#: how long a broker that shuts down waits for its mirrors' source threads (their clients closed), in all
JOIN_S = 5.0


class MirrorSource:
    """The loop's handle on one mirror's source thread (a Listener of the event loop).

    Args:
        config: the :class:`~zbroker.bridge_config.MirrorConfig`.
        loop: the broker's :class:`~zbroker.net.loop.EventLoop`: the wake socket is watched
            from here until :meth:`close`.
        reader: ``reader(config)`` -> what reads the source (``topics()``, ``add(positions)``,
            ``pause(tps)``, ``remove(tps)``, ``poll(stop)`` -> events, ``close()``); by default the one for the
            config's scheme.
    """

    def __init__(self, config, loop, reader: Callable | None = None) -> None:
        self.config = config
        # what reads the source, made in the thread (tests pass their own)
        self._make_reader = reader or (KafkaReader if config.scheme == "kafka" else ZbrokerReader)
        self.loop = loop
        self.on_wake: Callable[[], None] | None = None
        self._events: deque = deque()  # (event, size)
        self._queued_bytes = 0
        self._room = threading.Condition()  # guards _events, _queued_bytes, _paused
        self._paused: set[tuple[str, int]] = set()
        # the thread's: per partition read, the offset after the last record queued (or where it
        # was added); and those whose records were dropped: none queued until read again from _next
        self._next: dict[tuple[str, int], int] = {}
        self._reseek: set[tuple[str, int]] = set()
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._signalled = False
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        loop.watch(self, self._rsock)
        self._thread = threading.Thread(target=self._run, name=f"mirror-{config.name}", daemon=True)
        self._thread.start()

    # -- the loop's side -------------------------------------------------------------------

    def sockets(self) -> list:
        return [self._rsock]

    def on_readable(self, sock) -> None:
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._signalled = False  # after draining: a byte written from now on wakes the loop again
        if self.on_wake is not None:
            self.on_wake()

    def add(self, positions: dict[tuple[str, int], int]) -> None:
        """Read these partitions too, each from its offset (-2: the log start)."""
        self._commands.put(("add", dict(positions)))

    def refresh(self) -> None:
        """List the matching topics again (answered by a ``topics`` event)."""
        self._commands.put(("refresh",))

    def pause(self, tps) -> None:
        """Stop reading these partitions: none of their records is queued from now on."""
        with self._room:
            self._paused |= set(tps)
        self._commands.put(("pause", list(tps)))

    def resume(self, tps) -> None:
        """Read paused partitions again, each from just after the last record queued."""
        with self._room:
            self._paused -= set(tps)
        self._commands.put(("resume", list(tps)))

    def remove(self, tps) -> None:
        """Stop reading these partitions and forget them (their topic is gone from the source)."""
        with self._room:
            self._paused -= set(tps)
        self._commands.put(("remove", list(tps)))

    def take(self, limit: int) -> list[tuple]:
        out = []
        with self._room:
            while self._events and len(out) < limit:
                event, size = self._events.popleft()
                self._queued_bytes -= size
                out.append(event)
            if out:
                self._room.notify_all()
        return out

    def queued(self) -> tuple[int, int]:
        """Events and bytes queued for the loop."""
        with self._room:
            return len(self._events), self._queued_bytes

    def close(self) -> None:
        """Stop the thread (it closes its clients within about a request timeout) and the wake socket."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._room:
            self._room.notify_all()
        self.loop.unwatch(self._rsock)
        self._rsock.close()
        self._wsock.close()

    def alive(self) -> bool:
        """Whether the thread still runs (it ends soon after :meth:`close`)."""
        return self._thread.is_alive()

    def join(self, timeout: float = JOIN_S) -> bool:
        """Wait for the thread to end (after :meth:`close`); returns whether it did."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("mirror %s: its source thread did not end within %g s", self.config.name, timeout)
            return False
        return True

    # -- the thread ---------------------------------------------------------------------------

    def _emit(self, event: tuple) -> bool:
        """Queue ``event`` for the loop once there is room; False: stopping.  The records of a
        paused partition are dropped here, and so are all its later ones until it is read
        again from :attr:`_next` (a resume): what is queued has no gap."""
        size = _event_size(event)
        with self._room:
            while not self._stop.is_set() and (len(self._events) >= QUEUE_EVENTS
                                               or (self._events and self._queued_bytes + size > QUEUE_BYTES)):
                self._room.wait(POLL_S)
            if self._stop.is_set():
                return False
            if event[0] == "records":
                tp = (event[1], event[2])
                if tp in self._paused or tp in self._reseek:
                    self._reseek.add(tp)
                    return True
                self._next[tp] = event[3][-1][0] + 1
            self._events.append((event, size))
            self._queued_bytes += size
        if not self._signalled:
            self._signalled = True
            try:
                self._wsock.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # bytes unread already wake the loop
            except OSError:
                return False  # closed: stopping
        return True

    def _command(self, reader, command: tuple) -> None:
        """One command, in the thread (raises if the source fails: it is tried again)."""
        kind, arg = command
        if kind == "add":
            reader.add(arg)
            self._next.update(arg)
            self._reseek.difference_update(arg)
        elif kind == "pause":
            reader.pause(arg)
        elif kind == "resume":
            positions = {tp: self._next[tp] for tp in arg if tp in self._next}
            reader.add(positions)
            self._reseek.difference_update(positions)
        elif kind == "remove":
            reader.remove(arg)
            for tp in arg:
                self._next.pop(tp, None)
                self._reseek.discard(tp)

    def _run(self) -> None:
        reader = None
        commands: list[tuple] = []  # to do, in the order asked
        refresh = False  # a listing asked for (several asked meanwhile are one)
        while not self._stop.is_set():
            try:
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if command[0] == "refresh":
                        refresh = True
                    else:
                        commands.append(command)
                if reader is None:
                    reader = self._make_reader(self.config)
                while commands:
                    self._command(reader, commands[0])
                    commands.pop(0)  # only once done: a failed command is tried again, positions are not lost
                if refresh:
                    refresh = False  # a failed listing waits for the next refresh
                    self._emit(("topics", reader.topics()))
                for event in reader.poll(self._stop):  # between commands, always: a listing slower than
                    if not self._emit(event):          # refresh_ms must not starve the reading
                        break
            except Exception as exc:  # the source is down, refuses us, ...: say so, try again
                log.debug("mirror %s: source failed", self.config.name, exc_info=True)
                self._emit(("error", f"source {self.config.source}: {type(exc).__name__}: {exc}"))
                self._stop.wait(RETRY_S)
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.debug("mirror %s: closing the source's clients failed", self.config.name, exc_info=True)


def _event_size(event: tuple) -> int:
    """About what an event holds in memory: the records' keys and values, 64 bytes more each."""
    if event[0] != "records":
        return 256
    return sum(64 + len(r[2] or b"") + len(r[3] or b"") for r in event[3])
