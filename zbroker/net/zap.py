"""The broker's ZAP handler: which CURVE keys may connect, and as whom.

ZeroMQ asks a ZAP handler (RFC 27, over ``inproc://zeromq.zap.01``) about every CURVE
handshake on a socket with a ZAP domain.  :class:`ZapHandler` is pyzmq's
:class:`zmq.auth.Authenticator` (the base class, not the thread one) driven by the
broker's one event loop: it is a listener whose socket is the ZAP REP socket, and each
request's ``handle_zap_message`` coroutine is run to its end at once (nothing in it waits).

It must be bound (:meth:`ZapHandler.start`) before any CURVE socket: with no ZAP handler,
libzmq admits every CURVE client.

Domains (the ``zap_domain`` of each server socket):

============  =====================================  ======================================
domain        socket                                 admits
============  =====================================  ======================================
``peer``      the inter-broker ROUTER (``peer_port``)  broker keys only: ``Broker:N``
``gossip``    the gossip PUB (``gossip_port``)       broker keys only: ``Broker:N``
``client``    the client ROUTER (``port``), only     the keys of ``authorized_keys_dir``:
              with ``[security] curve = true``       ``User:NAME``
``bridge``    a bound bridge socket (pull, xsub,     the keys of ``authorized_keys_dir``
              pub, push) with CurveZMQ               (the bridge acts as ``Bridge:NAME``)
============  =====================================  ======================================

An admitted connection's User-Id is ``"<principal> <key>"``
(:func:`zbroker.net.curve_keys.user_id`); :meth:`ZapHandler.principal` turns a message's
User-Id back into its principal, and answers None once the key is no longer admitted.
"""

from __future__ import annotations

import logging
from typing import Callable

import zmq
from zmq.auth import Authenticator

from zbroker.net.curve_keys import BrokerKeys, KeyDir, split_user_id, user_id

log = logging.getLogger(__name__)

PEER, GOSSIP, CLIENT, BRIDGE = "peer", "gossip", "client", "bridge"
BURST = 64  # ZAP requests answered per loop turn before other sockets get theirs
#: ZAP requests are a few hundred bytes (RFC 27: version, id, domain, address, identity,
#: mechanism, a 32-byte key); inproc does not enforce it, set for the rule "every socket".
MAX_ZAP_BYTES = 4096


class _Keys:
    """pyzmq's credentials provider for one domain: ``callback(domain, z85 key) -> bool``."""

    def __init__(self, handler: ZapHandler, lookup: Callable[[bytes], str | None]) -> None:
        self.handler = handler
        self.lookup = lookup

    def callback(self, domain: str, key: bytes) -> bool:
        principal = self.lookup(key)
        self.handler._admitted = user_id(principal, key) if principal is not None else None
        if principal is None:
            self.handler.refused(domain, key)
        return principal is not None


class ZapHandler(Authenticator):
    """ZAP for the broker's CURVE sockets (see the module docstring); a loop listener."""

    def __init__(self, ctx: zmq.Context, keys: BrokerKeys, clients: KeyDir | None, clock: Callable[[], int]) -> None:
        super().__init__(ctx, log=logging.getLogger("zbroker.net.zap.auth"))
        self.keys = keys
        self.clients = clients
        self.clock = clock
        self._admitted: str | None = None
        self._refusals = 0
        self.configure_curve_callback(PEER, _Keys(self, keys.principal))
        self.configure_curve_callback(GOSSIP, _Keys(self, keys.principal))
        if clients is not None:
            self.configure_curve_callback(CLIENT, _Keys(self, lambda key: clients.admit(key, self.clock())))
            self.configure_curve_callback(BRIDGE, _Keys(self, lambda key: clients.admit(key, self.clock())))

    def start(self) -> None:
        super().start()
        self.zap_socket.setsockopt(zmq.MAXMSGSIZE, MAX_ZAP_BYTES)

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The User-Id of the key the domain's callback has just admitted."""
        admitted, self._admitted = self._admitted, None
        return admitted or ""

    def refused(self, domain: str, key: bytes) -> None:
        self._refusals += 1
        if self._refusals <= 10 or self._refusals % 1000 == 0:  # a flood of strangers must not flood the log
            log.warning("refused a CURVE handshake domain=%s key=%s (refusals so far: %d)", domain,
                        key.decode("ascii", "replace"), self._refusals)

    # -- the loop's listener -------------------------------------------------------

    def sockets(self) -> list[zmq.Socket]:
        return [self.zap_socket]

    def on_readable(self, sock: zmq.Socket) -> None:
        for _ in range(BURST):
            try:
                request = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            step = self.handle_zap_message(request)
            try:
                step.send(None)
            except StopIteration:
                continue
            step.close()  # nothing here awaits; a request that did is left unanswered (the handshake times out)
            log.error("a ZAP request did not complete synchronously; refused")

    def close(self) -> None:
        self.stop()

    # -- a message's principal ------------------------------------------------------

    def principal(self, domain: str, value: str | None) -> str | None:
        """The principal of a message whose ZAP User-Id is ``value``, or None if its key is
        no longer admitted on ``domain`` (removed or replaced since the handshake)."""
        parts = split_user_id(value)
        if parts is None:
            return None
        principal, key = parts
        if domain == CLIENT:
            current = self.clients.principal(key, self.clock()) if self.clients is not None else None
        else:
            current = self.keys.principal(key)
        return principal if current == principal else None
