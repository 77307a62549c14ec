"""A broker as a sans-IO object: its services and its front doors, frames in, frames out.

:class:`BrokerNode` joins the :class:`~zbroker.app.App` (the services) with the native
front door (:class:`~zbroker.frontends.native.router.NativeRouter` for requests: one for
the client listener, one for the inter-broker listener; :class:`~zbroker.frontends.native.peers.PeerLink`
for broker-to-broker traffic).  It touches no socket: the server loop (:mod:`zbroker.server`)
hands it what its listeners received, with the principal each listener authenticated, and
sends what it put in :attr:`outbox` (replies, ``(routing id, frames)``), :attr:`peer_replies`
(replies on the inter-broker listener) and :attr:`peer_outbox` (``(broker id, frames)``).
Unit tests drive it the same way, with time passed in.
"""

from __future__ import annotations

from typing import Callable

from zbroker.app import App
from zbroker.config import ClusterConfig
from zbroker.errors import ErrorCode
from zbroker.frontends.native.gossip import decode_heartbeat, encode_heartbeat
from zbroker.frontends.native.handlers import ROUTES
from zbroker.frontends.native.peers import PeerLink
from zbroker.frontends.native.router import NativeRouter
from zbroker.metrics import RequestMetrics
from zbroker.security import Authorizer

Frames = list[bytes]


class BrokerNode:
    """One broker: services plus the native front door, without I/O."""

    def __init__(self, config: ClusterConfig, broker_id: int, now_ms: int, clock: Callable[[], int] | None = None,
                 authorizer: Authorizer | None = None, send: Callable[[bytes, Frames], None] | None = None,
                 send_peer: Callable[[int, Frames], None] | None = None) -> None:
        """``send(routing id, frames)`` answers a client and ``send_peer(broker id, frames)``
        messages another broker; by default both append to :attr:`outbox` and
        :attr:`peer_outbox` (answers on the inter-broker listener to :attr:`peer_replies`)."""
        self.outbox: list[tuple[bytes, Frames]] = []
        self.peer_replies: list[tuple[bytes, Frames]] = []
        self.peer_outbox: list[tuple[int, Frames]] = []
        self.metrics = RequestMetrics()
        self.peers = PeerLink(send_peer or (lambda broker, frames: self.peer_outbox.append((broker, frames))))
        self.app = App(config, broker_id, now_ms, clock or (lambda: now_ms), self.peers, authorizer)
        authorizer = self.app.authorizer
        self.router = NativeRouter(self.app, ROUTES, authorizer, self.metrics,
                                   send or (lambda conn, frames: self.outbox.append((conn, frames))),
                                   config.setting("max_request_bytes"))
        self.peer_router = NativeRouter(self.app, ROUTES, authorizer, self.metrics,
                                        lambda conn, frames: self.peer_replies.append((conn, frames)),
                                        config.setting("max_request_bytes"), peer=True)

    def connect(self, send: Callable[[bytes, Frames], None], send_peer: Callable[[int, Frames], None] | None,
                reply_peer: Callable[[bytes, Frames], None] | None = None) -> None:
        """Send through these from now on (the server's listeners, bound once the node is loaded):
        ``send`` answers clients, ``send_peer`` messages other brokers, ``reply_peer`` answers them."""
        self.router.send = send
        if send_peer is not None:
            self.peers.connect(send_peer)
        if reply_peer is not None:
            self.peer_router.send = reply_peer

    # -- input -------------------------------------------------------------------

    def handle(self, conn: bytes, frames: Frames, now_ms: int, principal: str | None = None) -> None:
        """A request on the client listener from ``principal`` (None: anonymous); answers
        land in :attr:`outbox`.  Broker-to-broker requests are refused here."""
        self.router.handle(conn, frames, now_ms, principal)

    def handle_peer(self, conn: bytes, frames: Frames, now_ms: int, principal: str) -> None:
        """A request on the inter-broker listener from ``principal`` (``Broker:N``, proved by
        its CURVE key); answers land in :attr:`peer_replies`."""
        self.peer_router.handle(conn, frames, now_ms, principal)

    def refuse(self, conn: bytes, frames: Frames, now_ms: int, message: str, peer: bool = False) -> None:
        """Answer a request whose sender's key is no longer admitted, without running it."""
        (self.peer_router if peer else self.router).refuse(conn, frames, now_ms, ErrorCode.SASL_AUTHENTICATION_FAILED, message)

    def on_peer_reply(self, frames: Frames, now_ms: int) -> None:
        """An answer on one of our DEALERs to another broker."""
        self.peers.on_reply(frames, now_ms)

    def on_heartbeat(self, frame: bytes, now_ms: int) -> None:
        beat = decode_heartbeat(frame)
        if beat is not None:
            self.app.on_heartbeat(beat, now_ms)

    def heartbeat(self) -> bytes:
        return encode_heartbeat(self.app.heartbeat())

    # -- timers ------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        self.app.tick(now_ms)
        self.peers.expire(now_ms)

    def next_timer_ms(self, now_ms: int) -> int:
        """Milliseconds until :meth:`tick` has work."""
        due = self.app.next_deadline(now_ms)
        calls = self.peers.next_deadline()
        if calls is not None:
            due = min(due, calls)
        return max(0, due - now_ms)

    def close(self, now_ms: int | None = None) -> None:
        """Answer parked requests, flush every log and write checkpoints."""
        self.app.close(self.app.clock() if now_ms is None else now_ms)
