"""The Kafka front door: Apache Kafka's protocol over TCP, onto the same services.

- :mod:`.framer` -- size-prefixed requests in, replies out in request order (sans-IO);
- :mod:`.codec` -- headers and bodies with kio's schemas, responses built from dicts;
- :mod:`.router` -- the API-key table: decode, authorize, run, encode, count;
- ``handlers/`` -- one module per API key with its version range.

:class:`KafkaDoor` makes a :class:`~.router.KafkaConnection` for each TCP connection
the server's listener accepts.
"""

from __future__ import annotations

from zbroker.frontends.kafka.handlers import ROUTES
from zbroker.frontends.kafka.router import KafkaConnection, KafkaRouter
from zbroker.metrics import RequestMetrics
from zbroker.security import AllowAll, Authorizer


class KafkaDoor:
    """The Kafka front door of one broker's services."""

    def __init__(self, app, metrics: RequestMetrics, authorizer: Authorizer | None = None) -> None:
        self.app = app
        self.router = KafkaRouter(app, ROUTES, authorizer or getattr(app, "authorizer", None) or AllowAll(), metrics)
        self.max_request_bytes = app.config.setting("max_request_bytes")

    def connection(self, conn_id, peer: str, transport) -> KafkaConnection:
        return KafkaConnection(self.router, ("kafka", conn_id), peer, transport, self.max_request_bytes,
                               clock=getattr(self.app, "clock", None))
