"""The socket of an egress bridge: an XPUB (``socket = "pub"``) or a PUSH, a loop listener.

One socket per egress bridge, bound or connected to the bridge's endpoint, with
``SNDHWM = hwm``.  It knows nothing of records: the bridge's logic
(:mod:`zbroker.frontends.bridge.egress`) calls :meth:`EgressSocket.send` with a message's
frames and gets back a handle, or None when the send would block.

- PUB is an XPUB, so the bridge sees subscriptions: with XPUB_VERBOSE each new subscriber's
  subscription is reported, also for a prefix another subscriber already has (that is what
  starts a replay).  Subscriptions go to ``on_subscribe(prefix)``; unsubscriptions and
  anything else an XSUB peer might send are read and dropped.  XPUB_NODROP: a PUB socket
  silently drops a message for a subscriber whose queue is at the high-water mark, which
  nobody could count or see; with NODROP the send fails instead (EAGAIN) and the bridge holds
  the record and offers it again -- back-pressure instead of silent loss.  The price: a
  subscriber that stops reading but stays connected holds back every subscriber of its
  topics (the state shows ``blocked``) until the bridge gives NODROP up for a while
  (:meth:`EgressSocket.set_nodrop`: ZeroMQ then drops for that full subscriber only); a dead
  one is cut off by ZMTP heartbeats (:data:`HEARTBEAT_TIMEOUT_MS`).  A message that matches no subscription goes nowhere, as
  with any PUB.
- PUSH hands each message to one PULL peer, round-robin; with no peer, or every peer's queue
  full, the send would block.  Each message's last frame is sent zero-copy with a tracker:
  the handle is that tracker, done once ZeroMQ released the message (written to the peer's
  connection, or dropped with a peer that went away), which is how far the bridge commits.
  Tracking costs ~25 us a message.  A socket monitor reports each PULL peer that disconnects
  to ``on_peer_gone()``: ZeroMQ dropped what it had queued for that peer, and the bridge
  sends again from its last commit (connections that failed their handshake -- a port scan, a
  refused key -- had nothing queued and are not reported: they cannot force re-sends).
- A PUB send's handle is :data:`SENT` (done: nothing to wait for).

Connecting bridges (``bind = false``) set IMMEDIATE: nothing is queued for a peer that is not
connected, so the bridge holds records (and shows it) instead of ZeroMQ queueing them out of
sight.  CURVE: a bound socket is a CURVE server (ZAP domain ``bridge``: the keys
of ``authorized_keys_dir`` may connect), a connecting one a CURVE client of ``server_key``,
both with the broker's key pair; none with ``curve = false`` or ``[security] curve`` off.
Every send is DONTWAIT: the loop never blocks on a bridge.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from zbroker.net.zmq_listeners import GOSSIP_MAX_BYTES, CurveKeys
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

BURST = 256  # subscription messages read per turn
#: What the socket may receive: subscriptions of a few bytes and CURVE handshakes (~300 bytes).
MAX_RECEIVE_BYTES = GOSSIP_MAX_BYTES
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 1000, 5000
#: a connection that never became a peer (no ZMTP, a refused CURVE key) ends with one of these,
#: then EVENT_DISCONNECTED: nothing was queued for it
HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH


class _Sent:
    """The handle of a send with nothing to wait for."""

    done = True


SENT = _Sent()


class EgressSocket:
    """An egress bridge's XPUB or PUSH (see the module docstring)."""

    def __init__(self, ctx: zmq.Context, name: str, kind: str, endpoint: str, bind: bool, hwm: int,
                 on_subscribe: Callable[[bytes], None] | None = None, curve: CurveKeys | None = None,
                 server_key: bytes | None = None) -> None:
        if kind not in ("pub", "push"):
            raise ValueError(f"bridge {name}: an egress socket is pub or push, not {kind!r}")
        sock = ctx.socket(zmq.XPUB if kind == "pub" else zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)  # what ZeroMQ still holds at close was not committed: it is sent again
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_RECEIVE_BYTES)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        if kind == "pub":
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            sock.setsockopt(zmq.XPUB_NODROP, 1)
        if not bind:
            sock.setsockopt(zmq.IMMEDIATE, 1)
        self.monitor = None
        if kind == "push":
            self.monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED)
            self.monitor.setsockopt(zmq.MAXMSGSIZE, MAX_RECEIVE_BYTES)
        try:
            if curve is not None:
                if bind:
                    curve.serve(sock)
                else:
                    curve.client(sock, server_key)
            if bind:
                sock.bind(endpoint)
            else:
                sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.sock = sock
            self.close()
            raise OSError(f"bridge {name}: cannot {'bind' if bind else 'connect'} {kind} socket to {endpoint}: {exc}") from None
        self.sock = sock
        self.name, self.kind, self.endpoint = name, kind, endpoint
        self.track = kind == "push"
        self.on_subscribe = on_subscribe
        self.on_peer_gone: Callable[[], None] | None = None
        self._dropping = False  # XPUB_NODROP given up (set_nodrop)
        self._failed_handshakes = 0  # seen, their disconnection not yet
        self.errors = 0
        self._log = RateLimitedLog(log, burst=5, window_s=60.0)

    # -- the loop's listener --------------------------------------------------------------

    def sockets(self) -> list[zmq.Socket]:
        return [self.sock] if self.kind == "pub" else [self.monitor]

    def on_readable(self, sock: zmq.Socket) -> None:
        if sock is self.monitor:
            self._peer_events()
            return
        for _ in range(BURST):
            try:
                message = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            more = False
            while sock.getsockopt(zmq.RCVMORE):  # an XSUB peer may send anything: read it whole, drop it
                sock.recv()
                more = True
            if not more and message[:1] == b"\x01" and self.on_subscribe is not None:
                try:
                    self.on_subscribe(message[1:])
                except Exception:
                    log.exception("bridge %s: error handling a subscription; the broker keeps serving", self.name)

    def _peer_events(self) -> None:
        gone = 0
        for _ in range(BURST):
            try:
                event = parse_monitor_message(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            if event["event"] & HANDSHAKE_FAILED:
                self._failed_handshakes += 1
            elif self._failed_handshakes:  # the end of a connection that never was a peer
                self._failed_handshakes -= 1
            else:
                gone += 1
        if gone and self.on_peer_gone is not None:
            try:
                self.on_peer_gone()
            except Exception:
                log.exception("bridge %s: error handling a disconnection; the broker keeps serving", self.name)

    def close(self) -> None:
        if self.monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.monitor.close(linger=0)
        self.sock.close(linger=0)

    # -- sending ------------------------------------------------------------------------

    def set_nodrop(self, on: bool) -> None:
        """XPUB: refuse (True) or let ZeroMQ drop (False) a message a full subscriber cannot
        take.  libzmq reads the option at each send, so it may change at any time."""
        self.sock.setsockopt(zmq.XPUB_NODROP, int(on))
        self._dropping = not on

    def send(self, frames: list[bytes]):
        """Send one message now: its handle (``.done``: ZeroMQ released it), or None if the
        send would block (or failed: logged); the caller holds the message and tries again."""
        try:
            if not self.track:
                if self._dropping:  # take in the peers' "read so far" first: a reader that keeps up is not full
                    self.sock.getsockopt(zmq.EVENTS)
                self.sock.send_multipart(frames, zmq.DONTWAIT)
                return SENT
            last = zmq.Frame(frames[-1], copy=False, track=True)
            self.sock.send_multipart([*frames[:-1], last], zmq.DONTWAIT, copy=False)
            return last.tracker
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            self.errors += 1
            self._log.log(time.monotonic(), "send", logging.ERROR, "bridge %s: send on %s failed: %s (held, tried again)",
                          self.name, self.endpoint, exc)
            return None
