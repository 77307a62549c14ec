"""DescribeCluster (key 60): the cluster id, the controller and the brokers.

Brokers are listed at their Kafka address (as Metadata lists them, see
:func:`.metadata.kafka_brokers`); a broker this one does not see alive is fenced in
Kafka's terms: left out, or listed with ``is_fenced`` if the request asks for fenced
brokers (v2).  ``controller_id`` is the broker that is zbroker's controller (-1 while
none is elected).  zbroker's controllers are its brokers, so a request for controller
endpoints (v1+ ``endpoint_type`` 2) is MISMATCHED_ENDPOINT_TYPE, as a Kafka broker answers.
"""

from __future__ import annotations

from zbroker.frontends.kafka.handlers.metadata import kafka_brokers
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation

API_KEY = 60
VERSIONS = (0, 2)
BROKERS_ENDPOINT = 1
CONTROLLERS_ENDPOINT = 2
MISMATCHED_ENDPOINT_TYPE = 114
UNSUPPORTED_ENDPOINT_TYPE = 115


def describe_cluster(app, ctx, request, version, now_ms):
    endpoint_type = getattr(request, "endpoint_type", BROKERS_ENDPOINT)
    if endpoint_type != BROKERS_ENDPOINT:
        code = MISMATCHED_ENDPOINT_TYPE if endpoint_type == CONTROLLERS_ENDPOINT else UNSUPPORTED_ENDPOINT_TYPE
        return {"error_code": code, "error_message": f"this is a broker endpoint; endpoint type {endpoint_type} is not served here",
                "endpoint_type": endpoint_type, "cluster_id": app.config.name}
    live = app.control.live_brokers(now_ms)
    fenced_too = bool(getattr(request, "include_fenced_brokers", False))
    brokers = [{"broker_id": b["node_id"], "host": b["host"], "port": b["port"], "rack": b["rack"],
                "is_fenced": b["node_id"] not in live}
               for b in kafka_brokers(app) if fenced_too or b["node_id"] in live]
    return {"cluster_id": app.config.name, "controller_id": app.control.controller, "brokers": brokers,
            "endpoint_type": BROKERS_ENDPOINT}


ROUTE = KafkaRoute(API_KEY, "DescribeCluster", VERSIONS, describe_cluster,
                   access=lambda request: [(Operation.DESCRIBE, CLUSTER)])
