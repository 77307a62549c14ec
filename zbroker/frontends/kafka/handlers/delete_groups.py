"""DeleteGroups (key 42): delete empty groups and their committed offsets.

Each group is deleted on its own and answered once its deletion is replicated: a group
with members is NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND, a group this
broker does not coordinate NOT_COORDINATOR (admin clients send each group to its
coordinator).
"""

from __future__ import annotations

from zbroker.errors import RequestError
from zbroker.frontends.kafka import groupmap
from zbroker.frontends.kafka.groupmap import check_group
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, group

API_KEY = 42
VERSIONS = (0, 2)


def delete_groups(app, ctx, request, version, now_ms):
    names = list(request.groups_names)
    results = [groupmap.attempt(lambda g=g: check_group(ctx, Operation.DELETE, g) or app.groups.delete_group(ctx, g, now_ms))
               for g in names]

    def build(values) -> dict:
        return {"results": [{"group_id": g, "error_code": v.code if isinstance(v, RequestError) else 0}
                            for g, v in zip(names, values)]}

    return groupmap.gather(results, build)


def _error(request, version, code, message):
    return {"results": [{"group_id": g, "error_code": code} for g in ([] if request is None else request.groups_names)]}


ROUTE = KafkaRoute(API_KEY, "DeleteGroups", VERSIONS, delete_groups, error=_error,
                   access=lambda request: [(Operation.DELETE, group(g)) for g in request.groups_names],
                   per_resource=frozenset({ResourceType.GROUP}))
