"""A broker process: the event loop, its listeners and one :class:`~zbroker.node.BrokerNode`.

This module wires I/O to the sans-IO broker and is the only place that does:

- a :class:`~zbroker.net.zmq_listeners.RouterListener` on the broker's ``port`` feeds
  requests to the node, which answers through it;
- in a cluster, :class:`~zbroker.net.zmq_listeners.PeerDealers` carry broker-to-broker
  traffic and :class:`~zbroker.net.zmq_listeners.Gossip` the heartbeats;
- the :class:`~zbroker.net.loop.EventLoop` polls them and ticks the node and the gossip
  with one clock.

SIGTERM and SIGINT stop the loop; the broker then answers parked requests, flushes every
log and writes its checkpoints before the process exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import zmq

from zbroker.config import ClusterConfig
from zbroker.frontends.kafka import KafkaDoor
from zbroker.net.loop import EventLoop, guarded
from zbroker.net.tcp_listener import TcpListener, server_tls_context
from zbroker.net.zmq_listeners import Gossip, PeerDealers, RouterListener
from zbroker.node import BrokerNode
from zbroker.protocol import broker_identity

log = logging.getLogger(__name__)


def now_ms() -> int:
    """The broker's one clock: wall time in ms (record timestamps and timers alike)."""
    return time.time_ns() // 1_000_000


class Server:
    """Runs one broker of a cluster config until stopped."""

    def __init__(self, config: ClusterConfig, broker_id: int) -> None:
        self.config = config
        self.broker_id = broker_id
        self.entry = config.broker(broker_id)
        self.loop = EventLoop(now_ms)
        self.node: BrokerNode | None = None
        self.kafka_tls = None  # the Kafka listener's ssl.SSLContext, if it speaks TLS

    def stop(self, *_args) -> None:
        self.loop.stop()

    def _listen(self, ctx: zmq.Context, node: BrokerNode) -> tuple[RouterListener, PeerDealers | None]:
        """Bind and connect every socket and register it with the loop."""
        max_bytes = self.config.setting("max_request_bytes")
        peers = [b for b in self.config.brokers if b.id != self.broker_id]
        dealers = None
        if peers:  # a single node gossips with no one
            gossip = Gossip(ctx, f"tcp://{self.entry.host}:{self.entry.gossip_port}",
                            [f"tcp://{p.host}:{p.gossip_port}" for p in peers], self.config.setting("heartbeat_ms"),
                            node.heartbeat, lambda frame: node.on_heartbeat(frame, now_ms()))
            self.loop.add_listener(gossip)
            self.loop.add_timer(gossip)  # after the node's: a beat tells of the turn's state
            dealers = PeerDealers(ctx, broker_identity(self.broker_id), {p.id: f"tcp://{p.host}:{p.port}" for p in peers},
                                  max_bytes, lambda frames: node.on_peer_reply(frames, now_ms()))
            self.loop.add_listener(dealers)
        router = RouterListener(ctx, f"tcp://{self.entry.host}:{self.entry.port}", max_bytes,
                                lambda conn, frames: node.handle(conn, frames, now_ms()),
                                self.config.setting("max_queued_reply_bytes"))
        self.loop.add_listener(router)
        if self.entry.kafka_port:
            door = KafkaDoor(node.app, node.metrics, node.app.authorizer)
            tls = self.kafka_tls
            if tls is None and "PLAIN" in door.sasl_mechanisms:
                log.warning("the Kafka listener offers SASL PLAIN without TLS: passwords cross the network in the clear "
                            "(set kafka_tls_cert_file and kafka_tls_key_file, or offer only SCRAM)")
            kafka = TcpListener(self.loop, self.entry.kafka_advertised_host, self.entry.kafka_port, door.connection, now_ms,
                                self.config.setting("max_queued_reply_bytes"), tls=tls)
            self.loop.add_listener(kafka)
            self.loop.add_timer(kafka)  # connection deadlines: TLS handshakes, SASL authentication
        return router, dealers

    def _kafka_protocol(self) -> str:
        """The Kafka listener's security protocol, as Kafka clients name it."""
        sasl = self.config.security.kafka_sasl
        tls = self.entry.kafka_tls_cert_file is not None
        name = ("SASL_SSL" if tls else "SASL_PLAINTEXT") if sasl else ("SSL" if tls else "PLAINTEXT")
        return f"{name} {','.join(sasl)}" if sasl else name

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; then shut down cleanly."""
        # a TLS certificate that cannot be loaded fails the start before any work is done
        if self.entry.kafka_port and self.entry.kafka_tls_cert_file:
            self.kafka_tls = server_tls_context(self.entry.kafka_tls_cert_file, self.entry.kafka_tls_key_file)
        # load (recover every partition) first, then listen: nothing queues up meanwhile,
        # and no peer's heartbeat is stamped with a time long after it was sent
        node = self.node = BrokerNode(self.config, self.broker_id, now_ms(), clock=now_ms)
        self.loop.add_timer(node)
        try:
            router, dealers = self._listen(zmq.Context.instance(), node)
        except (zmq.ZMQError, OSError) as exc:
            node.close(now_ms())
            self.loop.close()
            kafka = f" / Kafka {self.entry.kafka_advertised_host}:{self.entry.kafka_port}" if self.entry.kafka_port else ""
            raise OSError(f"cannot listen on {self.entry.address} / gossip port {self.entry.gossip_port}{kafka}: {exc}") from None
        node.connect(router.send, dealers.send if dealers is not None else None)
        log.info("broker %s listening on %s%s%s data_dir=%s pid=%s", self.broker_id, self.entry.address,
                 f" gossip={self.entry.gossip_port}" if dealers is not None else "",
                 f" kafka={self.entry.kafka_advertised_host}:{self.entry.kafka_port} ({self._kafka_protocol()})"
                 if self.entry.kafka_port else "",
                 self.entry.data_dir, os.getpid())
        try:
            self.loop.run()
        finally:
            guarded(node.close, now_ms())
            self.loop.close()
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
