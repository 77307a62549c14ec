"""DescribeGroups (key 15): members, state and assignment of groups.

Each group is described on its own.  A classic group is described as its members
joined it: the chosen protocol, and each member's metadata and assignment bytes (once
the group is Stable).  A native or KIP-848 group is described the way a classic
consumer group is, so Kafka's tools show it: protocol type ``consumer``, protocol data
the assignor's name, each member's metadata a ``ConsumerProtocolSubscription`` of its
topics and its assignment a ``ConsumerProtocolAssignment`` of its partitions.  States are Kafka's names.  A group this broker coordinates but does
not know is ``Dead`` with no error before v6 and GROUP_ID_NOT_FOUND from v6 on
(KIP-1043), as Kafka answers.  Authorized operations are not computed (the
"not requested" value).
"""

from __future__ import annotations

from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import groupmap
from zbroker.frontends.kafka.groupmap import check_group
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, group

API_KEY = 15
VERSIONS = (0, 6)
NOT_REQUESTED = -2147483648


def describe(app, ctx, group_id: str, version: int, now_ms: int) -> dict:
    """One group's answer."""
    try:
        check_group(ctx, Operation.DESCRIBE, group_id)
        g = app.groups.describe_group(ctx, group_id, now_ms)
    except RequestError as exc:
        if exc.code == ErrorCode.GROUP_ID_NOT_FOUND and version < 6:
            return _dead(group_id, 0, None)
        return _dead(group_id, exc.code, exc.message)
    classic = g.group_type == "classic"
    members = [{
        "member_id": m.member_id, "group_instance_id": m.instance_id, "client_id": m.client_id,
        "client_host": m.client_host,
        "member_metadata": m.member_metadata if classic else groupmap.encode_subscription(m.topics),
        "member_assignment": m.member_assignment if classic else groupmap.encode_assignment(m.assignment),
    } for m in g.members]
    protocol = (g.assignor or "") if classic or g.members else ""
    return {"error_code": 0, "error_message": None, "group_id": g.group, "group_state": groupmap.kafka_state(g.state),
            "protocol_type": g.protocol_type, "protocol_data": protocol, "members": members,
            "authorized_operations": NOT_REQUESTED}


def _dead(group_id: str, code: int, message: str | None) -> dict:
    return {"error_code": code, "error_message": message, "group_id": group_id, "group_state": "Dead", "protocol_type": "",
            "protocol_data": "", "members": [], "authorized_operations": NOT_REQUESTED}


def describe_groups(app, ctx, request, version, now_ms):
    return {"groups": [describe(app, ctx, g, version, now_ms) for g in request.groups]}


def _error(request, version, code, message):
    return {"groups": [_dead(g, code, message) for g in ([] if request is None else request.groups)]}


ROUTE = KafkaRoute(API_KEY, "DescribeGroups", VERSIONS, describe_groups, error=_error,
                   access=lambda request: [(Operation.DESCRIBE, group(g)) for g in request.groups],
                   per_resource=frozenset({ResourceType.GROUP}))
