"""JoinGroup (key 11): a classic member joins its group's next generation.

The request becomes the coordinator's :class:`~zbroker.groups.classic.JoinGroup` and is
answered when the group's join round ends (:meth:`GroupCoordinator.join_group`); the
leader gets every member's metadata for the chosen protocol.  From v4 a new member
without an id is first answered MEMBER_ID_REQUIRED with its id (KIP-394).  v0 has no
rebalance timeout: the session timeout stands for it.  A classic member joining a
group whose members use ConsumerGroupHeartbeat (or the native protocol) is
INCONSISTENT_GROUP_PROTOCOL.  The client's host is not known to handlers: ``""``.
"""

from __future__ import annotations

from zbroker.frontends.kafka import datapath
from zbroker.frontends.kafka.codec import millis
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.groups.classic import JoinGroup, JoinResult
from zbroker.security import Operation, group

API_KEY = 11
VERSIONS = (0, 9)


def to_join(ctx, request, version: int) -> JoinGroup:
    """The coordinator's :class:`JoinGroup` of a JoinGroup request."""
    rebalance = getattr(request, "rebalance_timeout", None)
    return JoinGroup(
        group=request.group_id, member_id=request.member_id, group_instance_id=getattr(request, "group_instance_id", None),
        client_id=ctx.client_id, client_host="", protocol_type=request.protocol_type,
        protocols=[(p.name, p.metadata) for p in request.protocols], session_timeout_ms=millis(request.session_timeout),
        rebalance_timeout_ms=millis(rebalance) if rebalance is not None else 0, require_known_member_id=version >= 4,
        reason=getattr(request, "reason", None))


def answer(result: JoinResult, version: int) -> dict:
    """The response fields of a :class:`JoinResult` (protocol names are not nullable before v7)."""
    nullable = version >= 7
    return {"error_code": result.error, "generation_id": result.generation_id,
            "protocol_type": result.protocol_type if nullable else result.protocol_type or "",
            "protocol_name": result.protocol_name if nullable else result.protocol_name or "",
            "leader": result.leader, "skip_assignment": result.skip_assignment, "member_id": result.member_id,
            "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id, "metadata": m.metadata}
                        for m in result.members]}


def join_group(app, ctx, request, version, now_ms):
    result = app.groups.join_group(ctx, to_join(ctx, request, version), now_ms)
    return datapath.then(result, lambda r: answer(r, version))


def _error(request, version, code, message):
    return answer(JoinResult(code, member_id=getattr(request, "member_id", "") or ""), version)


ROUTE = KafkaRoute(API_KEY, "JoinGroup", VERSIONS, join_group, error=_error,
                   access=lambda request: [(Operation.READ, group(request.group_id))])
