"""DescribeAcls (key 29): the ACL bindings a filter matches, grouped by resource pattern.

Answered from this broker's metadata image.  The filter's codes are mapped by
:mod:`..acls` (ANY matches anything; MATCH every binding that applies to a resource of
that name); a code zbroker has no equivalent for is INVALID_REQUEST.  Needs DESCRIBE on
the cluster: else CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from zbroker.frontends.kafka import acls
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation
from zbroker.security.acl import filter_bindings

API_KEY = 29
VERSIONS = (1, 3)


def describe_acls(app, ctx, request, version, now_ms):
    f = acls.acl_filter(request.resource_type_filter, request.resource_name_filter, request.pattern_type_filter,
                        request.principal_filter, request.host_filter, request.operation, request.permission_type)
    resources: dict[tuple, list] = {}
    for b in filter_bindings(app.control.image.security.acls, f):
        fields = acls.kafka_fields(b)
        key = (fields["resource_type"], fields["resource_name"], fields["pattern_type"])
        resources.setdefault(key, []).append({k: fields[k] for k in ("principal", "host", "operation", "permission_type")})
    return {"error_code": 0, "error_message": None,
            "resources": [{"resource_type": t, "resource_name": n, "pattern_type": p, "acls": entries}
                          for (t, n, p), entries in resources.items()]}


def _error(request, version, code, message):
    return {"error_code": code, "error_message": message, "resources": []}


ROUTE = KafkaRoute(API_KEY, "DescribeAcls", VERSIONS, describe_acls, error=_error,
                   access=lambda request: [(Operation.DESCRIBE, CLUSTER)])
