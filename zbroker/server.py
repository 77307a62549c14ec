"""A broker process: the event loop, its listeners and one :class:`~zbroker.node.BrokerNode`.

This module wires I/O to the sans-IO broker and is the only place that does:

- a :class:`~zbroker.net.zmq_listeners.RouterListener` on the broker's ``port`` feeds
  clients' requests to the node, which answers through it (CURVE with ``[security]
  curve = true``: each request carries the principal its key maps to);
- in a cluster, a second RouterListener on ``peer_port`` takes the other brokers'
  requests, :class:`~zbroker.net.zmq_listeners.PeerDealers` carry this broker's to
  theirs and :class:`~zbroker.net.zmq_listeners.Gossip` the heartbeats -- all CURVE,
  always, with broker keys (:mod:`zbroker.net.curve_keys`), so no client can pose as a
  broker whatever ``[security]`` says;
- the :class:`~zbroker.net.zap.ZapHandler` admits CURVE keys; it is bound before any
  CURVE socket (without a ZAP handler libzmq admits every key);
- the bridges of this broker (``[[bridge]]`` with ``broker`` = its id): each one's socket
  (:mod:`zbroker.net.bridge_sockets` in, :mod:`zbroker.net.bridge_out` out) connected by
  callbacks to its sans-IO bridge, which reaches the cluster through a
  :class:`~zbroker.frontends.bridge.gateway.Gateway` as ``Bridge:NAME``; and the mirrors,
  which the :class:`~zbroker.frontends.bridge.host.BridgeHost` starts (source thread:
  :mod:`zbroker.net.mirror_source`) while this broker is the controller;
- the :class:`~zbroker.net.loop.EventLoop` polls them and ticks the node, the gossip and
  the bridge host with one clock.

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

from zbroker.bridge_config import BridgeConfig, MirrorConfig
from zbroker.config import ClusterConfig, ConfigError
from zbroker.frontends.bridge.egress import EgressBridge
from zbroker.frontends.bridge.gateway import Gateway
from zbroker.frontends.bridge.host import BridgeHost
from zbroker.frontends.bridge.ingest import IngestBridge
from zbroker.frontends.bridge.mirror import Mirror, group_name
from zbroker.frontends.kafka import KafkaDoor
from zbroker.net.bridge_out import EgressSocket
from zbroker.net.bridge_sockets import IngestSocket
from zbroker.net.curve_keys import BrokerKeys, KeyDir, broker_keys
from zbroker.net.loop import EventLoop, guarded
from zbroker.net.mirror_source import JOIN_S as MIRROR_JOIN_S
from zbroker.net.mirror_source import MirrorSource
from zbroker.net.tcp_listener import TcpListener, server_tls_context
from zbroker.net.zap import BRIDGE, CLIENT, GOSSIP, PEER, ZapHandler
from zbroker.net.zmq_listeners import CurveKeys, Gossip, PeerDealers, RouterListener
from zbroker.node import BrokerNode
from zbroker.protocol import broker_identity

log = logging.getLogger(__name__)

BRIDGE_DRAIN_MS = 3000  # at a stop, how long the loop goes on for the bridges' last appends and commits to be answered


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
        self.bridge_host: BridgeHost | None = None
        self._mirror_sources: list[MirrorSource] = []  # their threads are joined at shutdown

    def stop(self, *_args) -> None:
        self.loop.stop()

    def _keys(self) -> BrokerKeys:
        """The broker's CURVE keys; a config that cannot authenticate brokers is refused here,
        before anything is loaded or bound."""
        problem = self.config.inter_broker_problem()
        if problem:
            raise ConfigError(problem)
        return broker_keys(self.config, self.broker_id)

    def _listen(self, ctx: zmq.Context, node: BrokerNode, keys: BrokerKeys) -> tuple[RouterListener, RouterListener | None,
                                                                                      PeerDealers | None]:
        """Bind and connect every socket and register it with the loop."""
        max_bytes = self.config.setting("max_request_bytes")
        max_queued = self.config.setting("max_queued_reply_bytes")
        curve = self.config.security.curve
        peers = [b for b in self.config.brokers if b.id != self.broker_id]
        zap = None
        if peers or curve:  # first: a CURVE socket without a ZAP handler admits every key
            key_dir = KeyDir(self.config.security.authorized_keys_dir) if curve else None
            zap = ZapHandler(ctx, keys, key_dir, now_ms)
            zap.start()
            self.loop.add_listener(zap)
            if key_dir is not None:
                key_dir.refresh(now_ms())
        own = lambda domain=None: CurveKeys(keys.public, keys.secret, domain)  # noqa: E731
        peer_router = dealers = None
        if peers:  # a single node gossips with no one
            gossip = Gossip(ctx, f"tcp://{self.entry.host}:{self.entry.gossip_port}",
                            [(f"tcp://{p.host}:{p.gossip_port}", keys.publics[p.id]) for p in peers],
                            self.config.setting("heartbeat_ms"), node.heartbeat, lambda frame: node.on_heartbeat(frame, now_ms()),
                            own(GOSSIP))
            self.loop.add_listener(gossip)
            self.loop.add_timer(gossip)  # after the node's: a beat tells of the turn's state
            dealers = PeerDealers(ctx, broker_identity(self.broker_id),
                                  {p.id: (f"tcp://{p.host}:{p.peer_port}", keys.publics[p.id]) for p in peers},
                                  max_bytes, lambda frames: node.on_peer_reply(frames, now_ms()), own())
            self.loop.add_listener(dealers)

            def on_peer(conn: bytes, frames: list[bytes], user: str | None) -> None:
                principal = zap.principal(PEER, user)
                if principal is None:
                    node.refuse(conn, frames, now_ms(), "this key is no broker's", peer=True)
                else:
                    node.handle_peer(conn, frames, now_ms(), principal)

            peer_router = RouterListener(ctx, f"tcp://{self.entry.host}:{self.entry.peer_port}", max_bytes, on_peer, max_queued,
                                         own(PEER))
            self.loop.add_listener(peer_router)

        def on_client(conn: bytes, frames: list[bytes], user: str | None) -> None:
            if not curve:
                node.handle(conn, frames, now_ms())
                return
            principal = zap.principal(CLIENT, user)
            if principal is None:
                node.refuse(conn, frames, now_ms(), "this client's CURVE key is no longer admitted (authorized_keys_dir)")
            else:
                node.handle(conn, frames, now_ms(), principal)

        router = RouterListener(ctx, f"tcp://{self.entry.host}:{self.entry.port}", max_bytes, on_client, max_queued,
                                own(CLIENT) if curve else None)
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
        self._bridges(ctx, node, keys, zap)
        return router, peer_router, dealers

    def _bridges(self, ctx: zmq.Context, node: BrokerNode, keys: BrokerKeys, zap: ZapHandler | None) -> None:
        """The bridges this broker runs (``[[bridge]]`` with ``broker`` = this one) and the
        mirrors it runs while it is the controller, under one :class:`BridgeHost` timer."""
        control = node.app.control
        host = BridgeHost(self.broker_id, lambda: control.is_controller and control.ready, self.config.mirrors,
                          start_mirror=lambda config, now: self._mirror(node, config, now))
        node.app.bridges = host
        self.bridge_host = host
        self.loop.add_timer(host)
        self._ingest_bridges(ctx, node, keys, host)
        self._egress_bridges(ctx, node, keys, host)

    def _ingest_bridges(self, ctx: zmq.Context, node: BrokerNode, keys: BrokerKeys, host: BridgeHost) -> None:
        """Each ingest bridge this broker runs: its socket (a loop listener) feeds its
        :class:`IngestBridge`, which pauses a PULL socket while it has no room."""
        for bridge in self.config.bridges:
            if not bridge.ingest or bridge.broker != self.broker_id:
                continue
            ingest = IngestBridge(bridge, Gateway(node.app, node.peers, bridge.principal, bridge.name), now_ms(),
                                  auto_create=self.config.setting("auto_create_topics"))
            curve = CurveKeys(keys.public, keys.secret, BRIDGE) if bridge.uses_curve(self.config.security.curve) else None
            sock = IngestSocket(ctx, self.loop, bridge, self.config.topic_defaults["max_message_bytes"],
                                ingest.offer, ingest.has_room, curve, keep=ingest.min_frames - 1)
            ingest.on_room = sock.resume
            self.loop.add_listener(sock)
            host.add(ingest)

    def _egress_bridges(self, ctx: zmq.Context, node: BrokerNode, keys: BrokerKeys, host: BridgeHost) -> None:
        """Each egress bridge (socket pub or push) of this broker: its XPUB or PUSH and its
        :class:`EgressBridge`, connected by callbacks (sends one way, subscriptions the other)."""
        for config in self.config.bridges:
            if not config.ingest and config.broker == self.broker_id:
                host.add(self._egress_bridge(ctx, node, keys, config))

    def _egress_bridge(self, ctx: zmq.Context, node: BrokerNode, keys: BrokerKeys, config: BridgeConfig) -> EgressBridge:
        curve = CurveKeys(keys.public, keys.secret, BRIDGE) if config.uses_curve(self.config.security.curve) else None
        sock = EgressSocket(ctx, config.name, config.socket, config.endpoint, config.bind, config.hwm, None, curve,
                            config.server_key)
        bridge = EgressBridge(config, Gateway(node.app, node.peers, config.principal, config.name), sock.send, now_ms(),
                              nodrop=sock.set_nodrop if config.socket == "pub" else None)
        sock.on_subscribe = lambda prefix: bridge.on_subscribe(prefix, now_ms())
        sock.on_peer_gone = lambda: bridge.on_peer_gone(now_ms())
        self.loop.add_listener(sock)
        log.info("bridge %s: %s %s %s%s, topics %s from %s", config.name, config.socket,
                 "bound to" if config.bind else "connected to", config.endpoint, " (CURVE)" if curve else "",
                 ", ".join(config.topics), config.start)
        return bridge

    def _mirror(self, node: BrokerNode, config: MirrorConfig, now: int) -> Mirror:
        """Start one ``[[mirror]]`` here (the host calls it on the controller's broker): its source
        thread, whose wake socket the loop watches, and its logic, which appends through a
        gateway as ``Bridge:NAME``.  Closing the mirror stops the thread and unwatches the socket."""
        self._mirror_sources = [s for s in self._mirror_sources if s.alive()]  # those stopped earlier that ended
        source = MirrorSource(config, self.loop)
        self._mirror_sources.append(source)
        try:
            mirror = Mirror(config, Gateway(node.app, node.app.peers, config.principal, group_name(config.name)), source, now)
        except Exception:
            source.close()
            raise
        source.on_wake = lambda: mirror.pump(now_ms())
        return mirror

    def _join_mirror_sources(self) -> None:
        """At shutdown: wait (a few seconds in all) for the mirrors' source threads to close their clients."""
        deadline = time.monotonic() + MIRROR_JOIN_S
        for source in self._mirror_sources:
            source.close()
            guarded(source.join, max(0.0, deadline - time.monotonic()))
        self._mirror_sources.clear()

    def _kafka_protocol(self) -> str:
        """The Kafka listener's security protocol, as Kafka clients name it."""
        sasl = self.config.security.kafka_sasl
        tls = self.entry.kafka_tls_cert_file is not None
        name = ("SASL_SSL" if tls else "SASL_PLAINTEXT") if sasl else ("SSL" if tls else "PLAINTEXT")
        return f"{name} {','.join(sasl)}" if sasl else name

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; then shut down cleanly."""
        keys = self._keys()
        # a TLS certificate that cannot be loaded fails the start before any work is done
        if self.entry.kafka_port and self.entry.kafka_tls_cert_file:
            self.kafka_tls = server_tls_context(self.entry.kafka_tls_cert_file, self.entry.kafka_tls_key_file)
        # load (recover every partition) first, then listen: nothing queues up meanwhile,
        # and no peer's heartbeat is stamped with a time long after it was sent
        node = self.node = BrokerNode(self.config, self.broker_id, now_ms(), clock=now_ms)
        self.loop.add_timer(node)
        try:
            router, peer_router, dealers = self._listen(zmq.Context.instance(), node, keys)
        except (zmq.ZMQError, OSError) as exc:
            node.close(now_ms())
            self.loop.close()
            kafka = f" / Kafka {self.entry.kafka_advertised_host}:{self.entry.kafka_port}" if self.entry.kafka_port else ""
            raise OSError(f"cannot listen on {self.entry.address} / gossip port {self.entry.gossip_port} / peer port "
                          f"{self.entry.peer_port}{kafka}: {exc}") from None
        node.connect(router.send, dealers.send if dealers is not None else None,
                     peer_router.send if peer_router is not None else None)
        log.info("broker %s listening on %s%s%s%s data_dir=%s pid=%s", self.broker_id, self.entry.address,
                 " (CURVE)" if self.config.security.curve else "",
                 f" gossip={self.entry.gossip_port} peer={self.entry.peer_port} (CURVE)" if dealers is not None else "",
                 f" kafka={self.entry.kafka_advertised_host}:{self.entry.kafka_port} ({self._kafka_protocol()})"
                 if self.entry.kafka_port else "",
                 self.entry.data_dir, os.getpid())
        try:
            self.loop.run()
        finally:
            if self.bridge_host is not None:  # first: bridges commit their positions while the node still serves
                guarded(self.bridge_host.close, now_ms())
                guarded(self.loop.drain, self.bridge_host.settled, BRIDGE_DRAIN_MS)
                guarded(self.bridge_host.finish, now_ms())
            self._join_mirror_sources()
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
