"""CreateAcls (key 30): add ACL bindings, through the controller.

Each creation is mapped to zbroker's binding (:mod:`..acls`: Kafka's codes, and what has
no zbroker equivalent is INVALID_REQUEST for that creation alone); the valid ones are
committed in one metadata-log change and answered once it is committed (or each with
the commit's error).  Needs ALTER on the cluster: else CLUSTER_AUTHORIZATION_FAILED for
every creation.
"""

from __future__ import annotations

from zbroker.control.security_meta import acl_record
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import RequestError
from zbroker.frontends.kafka import acls
from zbroker.frontends.kafka.gather import gather
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation

API_KEY = 30
VERSIONS = (1, 3)


def create_acls(app, ctx, request, version, now_ms):
    outcomes: list[RequestError | None] = []
    valid = []
    for c in request.creations:
        try:
            valid.append(acls.binding(c.resource_type, c.resource_name, c.resource_pattern_type, c.principal, c.host,
                                      c.operation, c.permission_type))
            outcomes.append(None)
        except RequestError as exc:
            outcomes.append(exc)
    records = [acl_record(b) for b in dict.fromkeys(valid)]
    calls = [("commit", lambda: app.admin.alter_security(ctx, AlterSecurity(records), now_ms))] if records else []

    def answer(settled) -> dict:
        commit = settled.get("commit")
        return {"results": [{"error_code": e.code if e else (commit.error_code if commit else 0),
                             "error_message": e.message if e else (commit.error_message if commit else None)}
                            for e in outcomes]}

    return gather(calls, answer)


def _error(request, version, code, message):
    return {"results": [{"error_code": code, "error_message": message} for _ in ([] if request is None else request.creations)]}


ROUTE = KafkaRoute(API_KEY, "CreateAcls", VERSIONS, create_acls, error=_error,
                   access=lambda request: [(Operation.ALTER, CLUSTER)])
