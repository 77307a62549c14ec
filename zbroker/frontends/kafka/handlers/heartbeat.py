"""Heartbeat (key 12): a classic member says it is alive.

Answered at once by :meth:`GroupCoordinator.classic_heartbeat`: no error, or
REBALANCE_IN_PROGRESS (rejoin), ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
FENCED_INSTANCE_ID.  A KIP-848 member heartbeats with ConsumerGroupHeartbeat instead.
"""

from __future__ import annotations

from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.groups.classic import ClassicHeartbeat
from zbroker.security import Operation, group

API_KEY = 12
VERSIONS = (0, 4)


def heartbeat(app, ctx, request, version, now_ms):
    req = ClassicHeartbeat(group=request.group_id, generation_id=request.generation_id, member_id=request.member_id,
                           group_instance_id=getattr(request, "group_instance_id", None))
    return {"error_code": app.groups.classic_heartbeat(ctx, req, now_ms)}


ROUTE = KafkaRoute(API_KEY, "Heartbeat", VERSIONS, heartbeat, access=lambda request: [(Operation.READ, group(request.group_id))])
