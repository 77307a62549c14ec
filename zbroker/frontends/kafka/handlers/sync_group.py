"""SyncGroup (key 14): a classic member gets its assignment for the generation it joined.

The leader's request carries every member's assignment (opaque bytes: a consumer's
``ConsumerProtocolAssignment``); each member's request is answered with its own once
the leader's has arrived (:meth:`GroupCoordinator.sync_group`).  v5 names the protocol
type and name on both sides (KIP-559): a mismatch is INCONSISTENT_GROUP_PROTOCOL.
"""

from __future__ import annotations

from zbroker.frontends.kafka import datapath
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.groups.classic import SyncGroup, SyncResult
from zbroker.security import Operation, group

API_KEY = 14
VERSIONS = (0, 5)


def to_sync(request) -> SyncGroup:
    """The coordinator's :class:`SyncGroup` of a SyncGroup request."""
    return SyncGroup(group=request.group_id, generation_id=request.generation_id, member_id=request.member_id,
                     group_instance_id=getattr(request, "group_instance_id", None),
                     protocol_type=getattr(request, "protocol_type", None), protocol_name=getattr(request, "protocol_name", None),
                     assignments=[(a.member_id, a.assignment) for a in request.assignments])


def answer(result: SyncResult) -> dict:
    return {"error_code": result.error, "protocol_type": result.protocol_type, "protocol_name": result.protocol_name,
            "assignment": result.assignment}


def sync_group(app, ctx, request, version, now_ms):
    return datapath.then(app.groups.sync_group(ctx, to_sync(request), now_ms), answer)


def _error(request, version, code, message):
    return answer(SyncResult(code))


ROUTE = KafkaRoute(API_KEY, "SyncGroup", VERSIONS, sync_group, error=_error,
                   access=lambda request: [(Operation.READ, group(request.group_id))])
