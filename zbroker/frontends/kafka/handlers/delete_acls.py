"""DeleteAcls (key 31): remove the ACL bindings each filter matches, through the controller.

Each filter is mapped by :mod:`..acls` (a code zbroker has no equivalent for is
INVALID_REQUEST for that filter alone) and matched against this broker's metadata image;
every binding matched is removed in one metadata-log change, and each filter is answered
with the bindings it matched once the change is committed (or with the commit's error).
Needs ALTER on the cluster: else CLUSTER_AUTHORIZATION_FAILED for every filter.
"""

from __future__ import annotations

from zbroker.control.security_meta import acl_record
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import RequestError
from zbroker.frontends.kafka import acls
from zbroker.frontends.kafka.gather import gather
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation
from zbroker.security.acl import filter_bindings

API_KEY = 31
VERSIONS = (1, 3)


def delete_acls(app, ctx, request, version, now_ms):
    image = app.control.image.security
    matched: list[list | RequestError] = []
    for f in request.filters:
        try:
            matched.append(filter_bindings(image.acls, acls.acl_filter(
                f.resource_type_filter, f.resource_name_filter, f.pattern_type_filter, f.principal_filter, f.host_filter,
                f.operation, f.permission_type)))
        except RequestError as exc:
            matched.append(exc)
    doomed = dict.fromkeys(b for m in matched if isinstance(m, list) for b in m)
    records = [acl_record(b, remove=True) for b in doomed]
    calls = [("commit", lambda: app.admin.alter_security(ctx, AlterSecurity(records), now_ms))] if records else []

    def answer(settled) -> dict:
        commit = settled.get("commit")
        results = []
        for m in matched:
            if isinstance(m, RequestError):
                results.append({"error_code": m.code, "error_message": m.message, "matching_acls": []})
            elif commit is not None and commit.error_code:
                results.append({"error_code": commit.error_code, "error_message": commit.error_message, "matching_acls": []})
            else:
                results.append({"error_code": 0, "error_message": None,
                                "matching_acls": [{"error_code": 0, "error_message": None, **acls.kafka_fields(b)} for b in m]})
        return {"filter_results": results}

    return gather(calls, answer)


def _error(request, version, code, message):
    return {"filter_results": [{"error_code": code, "error_message": message, "matching_acls": []}
                               for _ in ([] if request is None else request.filters)]}


ROUTE = KafkaRoute(API_KEY, "DeleteAcls", VERSIONS, delete_acls, error=_error,
                   access=lambda request: [(Operation.ALTER, CLUSTER)])
