"""Ingest bridges' sockets: one plain ZeroMQ socket per bridge, read by the broker's loop.

:class:`IngestSocket` owns the socket of one ``[[bridge]]`` of kind

- ``pull``: binds (or connects to) the endpoint; PUSH applications send to it;
- ``sub``: connects to an application's PUB and subscribes to each ``subscribe`` prefix;
- ``xsub``: binds; PUB applications connect to it; the subscriptions are sent as XSUB
  messages (``b"\\x01" + prefix``), which ZeroMQ repeats to every publisher that connects.

Options: ``RCVHWM`` = the bridge's ``hwm``, a small kernel receive buffer (``RCVBUF`` =
:data:`RCVBUF_BYTES`: what a kill -9 can lose is bounded by what is queued, so the queues
are kept small and counted in messages), ``MAXMSGSIZE`` = ``max_request_bytes`` (ZeroMQ
drops the connection of a peer that sends a larger message), and CurveZMQ when
``[security] curve = true`` unless the bridge says ``curve = false``: a bound socket is a
CURVE server whose peers the ZAP handler admits in the ``bridge`` domain (the keys of
``authorized_keys_dir``), a connecting one a CURVE client of ``server_key`` with the
broker's own key pair.

Each multipart message goes to ``on_message(frames)``.  Reading follows ``has_room()``:

- ``pull``: before each message; once there is no room the socket is no longer polled
  (:meth:`EventLoop.want_io`), so messages stay in ZeroMQ's queues, the senders' sends
  block at their high-water mark, and nothing is dropped; :meth:`resume` (the bridge's
  ``on_room``) polls it again;
- ``sub`` / ``xsub``: always drained, so the publisher's side never reaches its
  high-water mark because of the broker (where PUB drops silently); the bridge counts
  what it cannot keep.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import zmq

from zbroker.net.loop import EventLoop
from zbroker.net.zmq_listeners import CurveKeys

log = logging.getLogger(__name__)

BURST = 1024  # messages taken per loop turn from a PULL socket before other sockets get a turn
LOSSY_BURST = 2048  # from a SUB/XSUB socket: drained harder, ZeroMQ's publisher side drops silently
RCVBUF_BYTES = 64 << 10  # SO_RCVBUF asked for (Linux doubles it)
_RCVMORE = int(zmq.RCVMORE)  # a plain int: getsockopt with the enum costs ~0.4 us a call
XSUB_SUBSCRIBE = b"\x01"


class IngestSocket:
    """The socket of one ingest bridge, a loop listener (see the module docstring)."""

    def __init__(self, ctx: zmq.Context, loop: EventLoop, bridge: Any, max_message_bytes: int,
                 on_message: Callable[[list[bytes], int], None], has_room: Callable[[], bool], curve: CurveKeys | None) -> None:
        """``bridge``: the bridge's config (socket, endpoint, bind, subscribe, hwm, server_key);
        ``on_message(frames, now_ms)`` (the loop's clock, read once per burst); ``curve``: the
        broker's key pair (with the ``bridge`` ZAP domain) if the socket speaks CURVE, else None."""
        kinds = {"pull": zmq.PULL, "sub": zmq.SUB, "xsub": zmq.XSUB}
        if bridge.socket not in kinds:
            raise ValueError(f"bridge {bridge.name}: socket {bridge.socket!r} is no ingest socket (pull, sub or xsub)")
        self.name = bridge.name
        self.kind = bridge.socket
        self.endpoint = bridge.endpoint
        self.lossy = bridge.socket != "pull"
        self.loop = loop
        self._on_message = on_message
        self._has_room = has_room
        self.paused = False
        sock = ctx.socket(kinds[bridge.socket])
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, bridge.hwm)
            sock.setsockopt(zmq.RCVBUF, RCVBUF_BYTES)
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            if bridge.socket == "sub":
                for prefix in bridge.subscribe:
                    sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
            if curve is not None:
                if bridge.bind:
                    curve.serve(sock)
                else:
                    curve.client(sock, bridge.server_key)
            if bridge.bind:
                sock.bind(bridge.endpoint)
            else:
                sock.connect(bridge.endpoint)
            if bridge.socket == "xsub":
                for prefix in bridge.subscribe:
                    sock.send(XSUB_SUBSCRIBE + prefix.encode())
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(f"bridge {bridge.name}: cannot {'bind' if bridge.bind else 'connect'} {bridge.socket} "
                          f"{bridge.endpoint}: {exc}") from None
        self.sock = sock
        log.info("bridge %s: %s %s %s%s hwm=%d", bridge.name, bridge.socket, "bound to" if bridge.bind else "connected to",
                 bridge.endpoint, " (CURVE)" if curve is not None else "", bridge.hwm)

    def sockets(self) -> list[zmq.Socket]:
        return [self.sock]

    def on_readable(self, sock: zmq.Socket) -> None:
        now = self.loop.clock()
        recv, more, lossy, has_room, handle = sock.recv, sock.getsockopt, self.lossy, self._has_room, self._on_message
        for _ in range(LOSSY_BURST if lossy else BURST):
            if not lossy and not has_room():
                self.pause()
                return
            try:
                frames = [recv(zmq.NOBLOCK)]
            except zmq.Again:
                return
            while more(_RCVMORE):
                frames.append(recv())
            try:
                handle(frames, now)
            except Exception:
                log.exception("bridge %s: error handling a message; the broker keeps serving", self.name)

    def pause(self) -> None:
        """Stop reading (no room): the message stays queued in ZeroMQ."""
        if not self.paused:
            self.paused = True
            self.loop.want_io(self.sock, False, False)

    def resume(self) -> None:
        """Read again (the bridge has room)."""
        if self.paused:
            self.paused = False
            self.loop.want_io(self.sock, True, False)

    def close(self) -> None:
        self.loop.unwatch(self.sock)
        self.sock.close(linger=0)
