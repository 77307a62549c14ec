"""ZeroMQ listeners: the request ROUTERs, the DEALERs to other brokers, the gossip PUB/SUB.

- :class:`RouterListener` -- a ROUTER for requests.  Two of them per broker: on ``port``
  for clients (CURVE when ``[security] curve = true``, ZAP domain ``client``), and in a
  cluster on ``peer_port`` for the other brokers (always CURVE, ZAP domain ``peer``: only
  broker keys get in).  ROUTER_MANDATORY (a reply to a vanished peer raises instead of
  vanishing silently; it is logged and dropped), ROUTER_HANDOVER (a reconnecting client
  with the same identity takes over), bounded send and receive queues, MAXMSGSIZE =
  ``max_request_bytes``.  On a CURVE socket each message's ZAP User-Id (who the handshake
  proved the sender is, :mod:`zbroker.net.zap`) is handed over with it.  Replies are
  bounded per connection in bytes, not only in messages (ZeroMQ's high-water marks count
  messages): each reply is sent zero-copy with a tracker, and the bytes of a peer's
  replies ZeroMQ still holds (queued, not yet written to its TCP socket) are counted.  A
  reply that would take a peer that already has replies queued over
  ``max_queued_reply_bytes`` is dropped with a log line, as one over the high-water mark
  is: a peer that does not read its replies holds at most that much of the broker's
  memory, plus one reply.
- :class:`PeerDealers` -- one DEALER per other broker, a CURVE client of its ``peer_port``
  with this broker's key pair: Raft messages, follower fetches and forwarded requests
  out, answers back.  ``IMMEDIATE`` so nothing queues for a peer that is down.
- :class:`Gossip` -- PUB on ``gossip_port`` (this broker's heartbeat; a CURVE server, ZAP
  domain ``gossip``: only brokers may subscribe), SUB to every peer's (a CURVE client
  that checks each peer's public key: a beat comes from a broker).  Beats may be lost;
  they carry sequence numbers.

Every send is ``DONTWAIT``: a send that would block (the peer does not read and its
queue is full) drops that message with a log line, so one slow peer never blocks the loop.
Those log lines are rate-limited (:mod:`zbroker.ratelimit`).

Every socket has ZMQ_MAXMSGSIZE.  A CURVE handshake's commands count against it too:
the server reads an INITIATE of about 270 bytes (HELLO is 200) and the client a WELCOME of
168, so a bound under ~300 bytes makes every handshake fail silently (measured with
libzmq 4.3.5: a PUB with 270 admitted no subscriber, 280 did).  The gossip sockets carry
beats of ~100 bytes and subscriptions of a few: :data:`GOSSIP_MAX_BYTES` (64 KiB) leaves
room for both and for beats that grow.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import zmq

from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

BURST = 256  # messages handled from one socket before timers and other sockets get a turn
REPLY_OVERHEAD = 1024  # bytes counted per queued reply besides its frames (ZeroMQ and tracker bookkeeping)
# Replies smaller than this are not tracked (tracking costs ~20 us a reply): they are bounded by
# the peer's send high-water mark instead, 10,000 x 4 KiB = 40 MiB at most per connection.
TRACK_MIN_BYTES = 4096
GOSSIP_MAX_BYTES = 64 << 10  # see the module docstring
Frames = list[bytes]


@dataclass(frozen=True)
class CurveKeys:
    """A CURVE socket's key pair (Z85) and, on a server socket, its ZAP domain."""

    public: bytes
    secret: bytes
    domain: str | None = None

    def serve(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server whose clients the ZAP handler checks in ``domain``."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, (self.domain or "").encode())

    def client(self, sock: zmq.Socket, server_key: bytes) -> None:
        """Make ``sock``'s next connect a CURVE client of the server whose public key is ``server_key``."""
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)


def _drain(sock: zmq.Socket, handle: Callable[[Frames], None]) -> None:
    for _ in range(BURST):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            handle(frames)
        except Exception:
            log.exception("error handling a message; the broker keeps serving")


def _drain_with_user_id(sock: zmq.Socket, handle: Callable[[Frames, str | None], None]) -> None:
    """Like :func:`_drain`, with each message's ZAP User-Id (read off its first frame)."""
    for _ in range(BURST):
        try:
            first = sock.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        frames = [first.bytes]
        while sock.getsockopt(zmq.RCVMORE):
            frames.append(sock.recv())
        try:
            user = first.get("User-Id")
        except zmq.ZMQError:
            user = None
        try:
            handle(frames, user)
        except Exception:
            log.exception("error handling a message; the broker keeps serving")


class QueuedReplies:
    """Bytes of replies handed to ZeroMQ, per peer, that ZeroMQ has not released yet.

    A reply's tracker is done once ZeroMQ has written the reply to the socket (or dropped
    it with its peer).  A peer's replies leave in order, so done ones are popped from the
    front: O(1) amortised per reply.  Peers with nothing queued are forgotten, also those
    never heard from again: every peer is swept once the map has doubled since the last
    sweep, which keeps it to the peers with replies queued, amortised O(1) per reply.
    """

    def __init__(self) -> None:
        self._replies: dict[bytes, deque[tuple[zmq.MessageTracker, int]]] = {}
        self._bytes: dict[bytes, int] = {}
        self._sweep_at = 64

    def held(self, conn: bytes) -> int:
        """Bytes still queued for ``conn`` (after forgetting the replies ZeroMQ released)."""
        replies = self._replies.get(conn)
        if replies is None:
            return 0
        while replies and replies[0][0].done:
            self._bytes[conn] -= replies.popleft()[1]
        if not replies:
            del self._replies[conn], self._bytes[conn]
            return 0
        return self._bytes[conn]

    def add(self, conn: bytes, tracker: zmq.MessageTracker, size: int) -> None:
        if tracker.done:
            return
        self._replies.setdefault(conn, deque()).append((tracker, size))
        self._bytes[conn] = self._bytes.get(conn, 0) + size
        if len(self._replies) > self._sweep_at:
            for peer in list(self._replies):
                self.held(peer)
            self._sweep_at = max(64, 2 * len(self._replies))

    def peers(self) -> int:
        return len(self._replies)


class RouterListener:
    """A ROUTER for requests: ``on_request(routing id, frames, user id)``; :meth:`send` answers.

    With ``curve`` the socket is a CURVE server and ``user id`` is each message's ZAP
    User-Id; without, it is None."""

    def __init__(self, ctx: zmq.Context, endpoint: str, max_message_bytes: int,
                 on_request: Callable[[bytes, Frames, str | None], None], max_queued_reply_bytes: int = 64 << 20,
                 curve: CurveKeys | None = None) -> None:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        if curve is not None:
            curve.serve(sock)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        self.sock = sock
        self.curve = curve is not None
        self._on_request = on_request
        self.max_queued_reply_bytes = max_queued_reply_bytes
        self.queued = QueuedReplies()
        self.drop_log = RateLimitedLog(log, burst=10, window_s=10.0)  # per kind; the rest is counted

    def sockets(self) -> list[zmq.Socket]:
        return [self.sock]

    def on_readable(self, sock: zmq.Socket) -> None:
        if self.curve:
            _drain_with_user_id(sock, self._message)
        else:
            _drain(sock, self._message)

    def _message(self, frames: Frames, user: str | None = None) -> None:
        if len(frames) < 2:
            self.drop_log.log(time.monotonic(), "empty", logging.WARNING, "dropped a message with no frames after the routing id")
            return
        self._on_request(frames[0], frames[1:], user)

    def send(self, conn: bytes, frames: Frames) -> None:
        """Send a reply now, or drop it with a log line: never raises (a reply may be sent
        from inside another request's handling, which one peer's trouble must not fail).

        A reply is dropped if the peer's queue is full (the high-water mark), or if the
        peer already has replies queued and this one would take it over
        ``max_queued_reply_bytes``."""
        size = sum(len(f) for f in frames) + REPLY_OVERHEAD
        held = self.queued.held(conn)
        if held and held + size > self.max_queued_reply_bytes:
            self.drop_log.log(time.monotonic(), "reply_bytes", logging.WARNING,
                         "dropped a reply of %d bytes to peer=%s: it has %d bytes of replies unread (max_queued_reply_bytes=%d)",
                         size, conn.hex(), held, self.max_queued_reply_bytes)
            return
        try:
            if size - REPLY_OVERHEAD < TRACK_MIN_BYTES:
                self.sock.send_multipart([conn, *frames], zmq.DONTWAIT, copy=False)
                return
            # The tracker of the last frame, sent zero-copy, is done only once ZeroMQ released the
            # whole message.  (send_multipart's own tracker is the last frame's, and pyzmq copies a
            # frame under 64 KiB and hands back a tracker that is done at once: a reply ending in a
            # small or empty frame would never be counted.)
            last = zmq.Frame(frames[-1], copy=False, track=True)
            self.sock.send_multipart([conn, *frames[:-1], last], zmq.DONTWAIT, copy=False)
            tracker = last.tracker
        except zmq.Again:
            self.drop_log.log(time.monotonic(), "reply_hwm", logging.WARNING, "dropped a reply to peer=%s: its send queue is full",
                         conn.hex())
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self.drop_log.log(time.monotonic(), "reply_gone", logging.INFO, "dropped a reply to peer=%s: it disconnected",
                             conn.hex())
            else:
                log.error("dropped a reply to peer=%s: %s", conn.hex(), exc)
        else:
            self.queued.add(conn, tracker, size)

    def close(self) -> None:
        self.sock.close(linger=0)


class PeerDealers:
    """One DEALER per other broker, a CURVE client of its inter-broker ROUTER
    (``peers``: broker id -> (endpoint, its public key)); answers go to ``on_reply(frames)``."""

    def __init__(self, ctx: zmq.Context, identity: bytes, peers: dict[int, tuple[str, bytes]], max_message_bytes: int,
                 on_reply: Callable[[Frames], None], keys: CurveKeys) -> None:
        self.dealers: dict[int, zmq.Socket] = {}
        for peer_id, (endpoint, server_key) in peers.items():
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.ROUTING_ID, identity)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.setsockopt(zmq.SNDHWM, 1000)
            dealer.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            dealer.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
            keys.client(dealer, server_key)
            dealer.connect(endpoint)
            self.dealers[peer_id] = dealer
        self._on_reply = on_reply

    def sockets(self) -> list[zmq.Socket]:
        return list(self.dealers.values())

    def on_readable(self, sock: zmq.Socket) -> None:
        _drain(sock, self._on_reply)

    def send(self, broker_id: int, frames: Frames) -> None:
        dealer = self.dealers.get(broker_id)
        if dealer is None:
            return
        try:
            dealer.send_multipart(frames, zmq.DONTWAIT)
        except zmq.Again:
            log.debug("dropped a message to broker %s: not connected or queue full", broker_id)

    def close(self) -> None:
        for dealer in self.dealers.values():
            dealer.close(linger=0)


class Gossip:
    """PUB this broker's heartbeat every ``interval_ms`` (a timer); SUB the peers' into ``on_beat``.

    Both ends are CURVE: the PUB a server (ZAP domain in ``keys``), the SUB a client of
    each peer's PUB (``peers``: (endpoint, its public key))."""

    def __init__(self, ctx: zmq.Context, bind: str, peers: list[tuple[str, bytes]], interval_ms: int, beat: Callable[[], bytes],
                 on_beat: Callable[[bytes], None], keys: CurveKeys) -> None:
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100)
        self.pub.setsockopt(zmq.MAXMSGSIZE, GOSSIP_MAX_BYTES)
        keys.serve(self.pub)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 1000)
        self.sub.setsockopt(zmq.MAXMSGSIZE, GOSSIP_MAX_BYTES)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            self.pub.bind(bind)
        except zmq.ZMQError:
            self.close()
            raise
        for endpoint, server_key in peers:
            keys.client(self.sub, server_key)  # a connect takes the socket's options as they are now
            self.sub.connect(endpoint)
        self.interval_ms = interval_ms
        self._beat = beat
        self._on_beat = on_beat
        self._next_beat = 0

    def sockets(self) -> list[zmq.Socket]:
        return [self.sub]

    def on_readable(self, sock: zmq.Socket) -> None:
        _drain(sock, lambda frames: self._on_beat(frames[0]))

    def next_timer_ms(self, now_ms: int) -> int:
        return max(0, self._next_beat - now_ms)

    def tick(self, now_ms: int) -> None:
        if now_ms < self._next_beat:
            return
        self._next_beat = now_ms + self.interval_ms
        try:
            self.pub.send(self._beat(), zmq.DONTWAIT)
        except zmq.Again:
            pass  # heartbeats may be lost; the next one follows

    def close(self) -> None:
        self.pub.close(linger=0)
        self.sub.close(linger=0)
