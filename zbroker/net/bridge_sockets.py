"""Ingest bridges' sockets: one plain ZeroMQ socket per bridge, read by the broker's loop.

:class:`IngestSocket` owns the socket of one ``[[bridge]]`` of kind

- ``pull``: binds (or connects to) the endpoint; PUSH applications send to it;
- ``sub``: connects to an application's PUB and subscribes to each ``subscribe`` prefix;
- ``xsub``: binds; PUB applications connect to it; the subscriptions are sent as XSUB
  messages (``b"\\x01" + prefix``), which ZeroMQ repeats to every publisher that connects.

Options:

- ``pull``: ``RCVHWM`` = the bridge's ``hwm`` and a small kernel receive buffer (``RCVBUF`` =
  :data:`RCVBUF_BYTES`): what a kill -9 can lose is bounded by what is queued, so the queues
  are kept small and counted in messages;
- ``sub`` / ``xsub``: ``RCVHWM`` = ``max(hwm, LOSSY_RCVHWM)`` and the kernel's default receive
  buffer: a publisher drops silently what does not fit, so a loop stall is absorbed here;
- ``MAXMSGSIZE`` = the largest record a topic takes by default (``[topic_defaults]
  max_message_bytes``) plus :data:`FRAME_SLACK_BYTES`: ZeroMQ checks it per frame and drops
  the connection of a peer that sends a larger one (it does not tell the broker); a larger
  frame could not be stored anyway;
- CurveZMQ when
``[security] curve = true`` unless the bridge says ``curve = false``: a bound socket is a
CURVE server whose peers the ZAP handler admits in the ``bridge`` domain (the keys of
``authorized_keys_dir``), a connecting one a CURVE client of ``server_key`` with the
broker's own key pair.

ZeroMQ hands a multipart message over only once all its frames have arrived, and counts it as
one message against ``RCVHWM`` whatever its frame count: a message of very many frames is held
whole by libzmq (each frame ~64 bytes besides its data) until it is complete.  The socket then
keeps only the frames the bridge uses (the first ``keep`` and the last, see
:meth:`IngestSocket.__init__`); of the frames in between, the first is copied (it might have
been the last) and the rest are taken with ``copy=False`` and let go at once (cheaper for
large frames, ~0.1 us dearer for small ones).

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
import traceback
from typing import Any, Callable

import zmq

from zbroker.net.loop import EventLoop
from zbroker.net.zmq_listeners import CurveKeys
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

BURST = 1024  # messages taken per loop turn from a PULL socket before other sockets get a turn
LOSSY_BURST = 2048  # from a SUB/XSUB socket: drained harder, ZeroMQ's publisher side drops silently
RCVBUF_BYTES = 64 << 10  # pull: SO_RCVBUF asked for (Linux doubles it)
LOSSY_RCVHWM = 100_000  # sub/xsub: at least this many messages queued before the publisher drops
FRAME_SLACK_BYTES = 64 << 10  # MAXMSGSIZE: max_message_bytes plus this (a topic may allow a little more)
_RCVMORE = int(zmq.RCVMORE)  # a plain int: getsockopt with the enum costs ~0.4 us a call
XSUB_SUBSCRIBE = b"\x01"


class IngestSocket:
    """The socket of one ingest bridge, a loop listener (see the module docstring)."""

    def __init__(self, ctx: zmq.Context, loop: EventLoop, bridge: Any, max_message_bytes: int,
                 on_message: Callable[[list[bytes], int], None], has_room: Callable[[], bool], curve: CurveKeys | None,
                 keep: int = 0) -> None:
        """``bridge``: the bridge's config (socket, endpoint, bind, subscribe, hwm, server_key);
        ``max_message_bytes``: the cluster's default largest record (MAXMSGSIZE adds
        :data:`FRAME_SLACK_BYTES`); ``keep``: frames at index < ``keep`` are handed on as
        received, of the later ones only the last (a message of at least ``keep + 1`` frames
        reaches ``on_message`` as ``keep + 1`` frames, a shorter one whole);
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
        self.keep = max(keep, 1)  # frame 0 is always taken as it is: it is the value of a one-frame message
        self.errors = 0
        self._log = RateLimitedLog(log, burst=5, window_s=10.0)
        sock = ctx.socket(kinds[bridge.socket])
        try:
            sock.setsockopt(zmq.LINGER, 0)
            if self.lossy:
                sock.setsockopt(zmq.RCVHWM, max(bridge.hwm, LOSSY_RCVHWM))
            else:
                sock.setsockopt(zmq.RCVHWM, bridge.hwm)
                sock.setsockopt(zmq.RCVBUF, RCVBUF_BYTES)
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes + FRAME_SLACK_BYTES)
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
            if more(_RCVMORE):
                self._rest(sock, frames)
            try:
                handle(frames, now)
            except Exception:
                self.errors += 1
                self._log.log(now / 1000, "handle_error", logging.ERROR,
                              "bridge %s: error handling a message (%d so far); the broker keeps serving\n%s",
                              self.name, self.errors, traceback.format_exc())

    def _rest(self, sock: zmq.Socket, frames: list) -> None:
        """The frames after frame 0: the first ``keep`` as they are, then only the last (the
        frames between are not copied out of ZeroMQ, and are let go one by one)."""
        recv, more, keep = sock.recv, sock.getsockopt, self.keep
        while len(frames) <= keep:
            frames.append(recv())
            if not more(_RCVMORE):
                return
        last = None
        while True:  # a frame between the kept ones and the last: not used
            last = recv(copy=False)
            if not more(_RCVMORE):
                break
        frames[keep] = last.bytes  # the value

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
