"""The broker's one event loop: sockets, timers and signal handling.

This is the only broker module that touches ZeroMQ.  Sockets:

- ROUTER on ``port``: clients, and other brokers' requests and Raft messages.
- PUB on ``gossip_port``: this broker's heartbeat every ``heartbeat_ms``.
- SUB connected to every peer's gossip port: their heartbeats.
- one DEALER per peer, connected to its ROUTER: Raft messages and forwarded
  admin requests out, forwarded answers back.  ``IMMEDIATE`` so nothing queues
  for a peer that is down (Raft tolerates the loss; a retry goes out later).

The loop:

    poll every socket (timeout = next timer, at most 100 ms)
    -> hand each message to the Broker (requests, heartbeats, peer replies)
    -> run Broker.tick (Raft and controller timers, parked requests, flush, checkpoints)
    -> send the outboxes with DONTWAIT; publish a heartbeat when due

Socket options: ROUTER_MANDATORY (a reply to a vanished peer raises instead of
vanishing silently; it is logged and dropped), ROUTER_HANDOVER (a reconnecting
client with the same identity takes over), bounded send/receive queues and
MAXMSGSIZE = max_request_bytes.  A send that would block (the peer does not
read and its queue is full) drops that reply with a log line: the loop never
blocks on one slow peer.

SIGTERM and SIGINT stop the loop; the broker then flushes every log and writes
its checkpoints before the process exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import zmq

from zbroker.broker import Broker
from zbroker.config import ClusterConfig
from zbroker.protocol import broker_identity, encode

log = logging.getLogger(__name__)

_BURST = 256  # messages handled before timers and sends get a turn
_MAX_POLL_MS = 100


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Server:
    """Runs one broker of a cluster config until stopped."""

    def __init__(self, config: ClusterConfig, broker_id: int) -> None:
        self.config = config
        self.broker_id = broker_id
        self.entry = config.broker(broker_id)
        self._stop = False
        self.ctx = zmq.Context.instance()
        self.router: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self.sub: zmq.Socket | None = None
        self.dealers: dict[int, zmq.Socket] = {}
        self.broker: Broker | None = None
        self._next_beat = 0

    def stop(self, *_args) -> None:
        self._stop = True

    def _bind(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.setting("max_request_bytes"))
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.bind(f"tcp://{self.entry.host}:{self.entry.port}")
        return sock

    def _peer_sockets(self) -> None:
        peers = [b for b in self.config.brokers if b.id != self.broker_id]
        if not peers:
            return  # a single node gossips with no one
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100)
        self.pub.bind(f"tcp://{self.entry.host}:{self.entry.gossip_port}")
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 1000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        for peer in peers:
            self.sub.connect(f"tcp://{peer.host}:{peer.gossip_port}")
            dealer = self.ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.ROUTING_ID, broker_identity(self.broker_id))
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.setsockopt(zmq.SNDHWM, 1000)
            dealer.setsockopt(zmq.MAXMSGSIZE, self.config.setting("max_request_bytes"))
            dealer.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
            dealer.connect(f"tcp://{peer.host}:{peer.port}")
            self.dealers[peer.id] = dealer

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; then shut down cleanly."""
        self.broker = Broker(self.config, self.broker_id, now_ms(), clock=now_ms)
        try:
            self.router = self._bind()
            self._peer_sockets()
        except zmq.ZMQError as exc:
            self.broker.close()
            raise OSError(f"cannot listen on {self.entry.address} / gossip port {self.entry.gossip_port}: {exc}") from None
        log.info("broker %s listening on %s%s data_dir=%s pid=%s", self.broker_id, self.entry.address,
                 f" gossip={self.entry.gossip_port}" if self.pub is not None else "", self.entry.data_dir, os.getpid())
        poller = zmq.Poller()
        for sock in (self.router, self.sub, *self.dealers.values()):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
        peer_of = {sock: pid for pid, sock in self.dealers.items()}
        broker, router, sub = self.broker, self.router, self.sub
        heartbeat_ms = self.config.setting("heartbeat_ms")
        try:
            while not self._stop:
                now = now_ms()
                timeout = min(broker.next_timer_ms(now), _MAX_POLL_MS)
                if self.pub is not None:
                    timeout = min(timeout, max(0, self._next_beat - now))
                events = dict(poller.poll(timeout))
                if sub is not None and sub in events:
                    self._drain(sub, lambda frames: self._guarded(broker.on_heartbeat, frames[0], now_ms()))
                for sock in events:
                    if sock in peer_of:
                        self._drain(sock, lambda frames: self._guarded(broker.on_peer_reply, frames, now_ms()))
                if router in events:
                    self._drain(router, self._on_request)
                self._guarded(broker.tick, now_ms())
                now = now_ms()
                if self.pub is not None and now >= self._next_beat:
                    self._next_beat = now + heartbeat_ms
                    self._publish(broker.heartbeat())
                self._flush_outbox()
        finally:
            self._shutdown()

    @staticmethod
    def _guarded(fn, *args) -> None:
        """Run a broker step; a failure (a bug, a disk error) is logged and the loop goes on."""
        try:
            fn(*args)
        except Exception:
            log.exception("error in %s; the broker keeps serving", getattr(fn, "__name__", fn))

    def _drain(self, sock: zmq.Socket, handle) -> None:
        for _ in range(_BURST):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(frames)
            if self.broker.outbox or self.broker.peer_outbox:
                self._flush_outbox()

    def _on_request(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            log.warning("dropped a message with no frames after the routing id")
            return
        self.broker.handle(frames[0], frames[1:], now_ms())

    def _publish(self, beat: bytes) -> None:
        try:
            self.pub.send(beat, zmq.DONTWAIT)
        except zmq.Again:
            pass  # heartbeats may be lost; the next one follows

    def _flush_outbox(self) -> None:
        if self.broker.peer_outbox:
            self._flush_peer_outbox()
        outbox = self.broker.outbox
        if not outbox:
            return
        self.broker.outbox = []
        router = self.router
        for peer, frames in outbox:
            try:
                router.send_multipart([peer, *frames], zmq.DONTWAIT, copy=False)
            except zmq.Again:
                log.warning("dropped a reply to peer=%s: its send queue is full", peer.hex())
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    log.info("dropped a reply to peer=%s: it disconnected", peer.hex())
                else:
                    raise

    def _flush_peer_outbox(self) -> None:
        outbox, self.broker.peer_outbox = self.broker.peer_outbox, []
        for dst, header, payloads in outbox:
            dealer = self.dealers.get(dst)
            if dealer is None:
                continue
            try:
                dealer.send_multipart([encode(header), *payloads], zmq.DONTWAIT)
            except zmq.Again:
                log.debug("dropped a message to broker %s: not connected or queue full", dst)

    def _shutdown(self) -> None:
        if self.broker is not None:
            self._flush_outbox()
            self.broker.close()
        for sock in (self.router, self.pub, self.sub, *self.dealers.values()):
            if sock is not None:
                sock.close(linger=0)
        log.info("broker %s stopped", self.broker_id)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(config: ClusterConfig, broker_id: int) -> None:
    """Run a broker in this process until SIGTERM or SIGINT."""
    server = Server(config, broker_id)
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    server.run()


def main(argv: list[str] | None = None) -> int:
    """``python -m zbroker.server``: the same as ``zbroker serve``."""
    from zbroker.cli import main as cli_main

    return cli_main(["serve", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
