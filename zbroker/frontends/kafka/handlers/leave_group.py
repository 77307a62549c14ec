"""LeaveGroup (key 13): classic members leave their group (it rebalances without them).

v0-v2 name one member, whose error is the answer's; v3+ name several (KIP-345: a
static member by its instance id, member id ``""`` for an admin's removal), each
answered on its own, with a top-level error only for the group (NOT_COORDINATOR, ...).
"""

from __future__ import annotations

from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.groups.classic import LeaveGroup
from zbroker.security import Operation, group

API_KEY = 13
VERSIONS = (0, 5)


def _members(request, version: int) -> list[tuple[str, str | None]]:
    if version >= 3:
        return [(m.member_id, m.group_instance_id) for m in request.members]
    return [(request.member_id, None)]


def leave_group(app, ctx, request, version, now_ms):
    members = _members(request, version)
    codes = app.groups.leave_group(ctx, LeaveGroup(request.group_id, members), now_ms)
    if version < 3:
        return {"error_code": codes[0]}
    return {"error_code": 0, "members": [{"member_id": m, "group_instance_id": i, "error_code": c}
                                         for (m, i), c in zip(members, codes)]}


def _error(request, version, code, message):
    return {"error_code": code, "members": []}


ROUTE = KafkaRoute(API_KEY, "LeaveGroup", VERSIONS, leave_group, error=_error,
                   access=lambda request: [(Operation.READ, group(request.group_id))])
