"""The broker's one event loop: a ROUTER socket, timers and signal handling.

This is the only broker module that touches ZeroMQ.  The loop:

    poll the ROUTER (timeout = next timer, at most 100 ms)
    -> receive up to a burst of messages, hand each to Broker.handle
    -> run Broker.tick (parked-request deadlines, flush policy, checkpoints)
    -> send everything in Broker.outbox with DONTWAIT

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
        self.broker: Broker | None = None

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

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; then shut down cleanly."""
        self.broker = Broker(self.config, self.broker_id, now_ms())
        try:
            self.router = self._bind()
        except zmq.ZMQError as exc:
            self.broker.close()
            raise OSError(f"cannot listen on {self.entry.address}: {exc}") from None
        log.info("broker %s listening on %s data_dir=%s pid=%s", self.broker_id, self.entry.address, self.entry.data_dir, os.getpid())
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        broker, router = self.broker, self.router
        try:
            while not self._stop:
                timeout = min(broker.next_timer_ms(now_ms()), _MAX_POLL_MS)
                events = dict(poller.poll(timeout))
                if router in events:
                    for _ in range(_BURST):
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if len(frames) < 2:
                            log.warning("dropped a message with no frames after the routing id")
                            continue
                        broker.handle(frames[0], frames[1:], now_ms())
                        if broker.outbox:
                            self._flush_outbox()
                broker.tick(now_ms())
                self._flush_outbox()
        finally:
            self._shutdown()

    def _flush_outbox(self) -> None:
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

    def _shutdown(self) -> None:
        if self.broker is not None:
            self._flush_outbox()
            self.broker.close()
        if self.router is not None:
            self.router.close(linger=0)
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
