"""create_acls, describe_acls, delete_acls: ACL bindings in the metadata log.

A binding is ``{principal, resource_type, name, pattern, operation, permission, host}``
(:class:`~zbroker.control.security_meta.AclBinding`'s fields); a filter has the same
fields, each optional (absent or nil: any), with ``pattern`` one of
:data:`~zbroker.security.acl.FILTER_PATTERNS`.  Changes are committed through the
controller (``app.admin.alter_security``) and answered once committed.  Creating and
deleting need ALTER on the cluster, describing DESCRIBE on the cluster.
"""

from __future__ import annotations

from dataclasses import asdict

from zbroker import protocol as P
from zbroker.context import Completion
from zbroker.control.security_meta import AclBinding, acl_record, check_record
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.native.router import Route
from zbroker.security import CLUSTER, Operation
from zbroker.security.acl import FILTER_PATTERNS, AclFilter, binding_problem, filter_bindings


def checked_binding(fields: dict, where: str) -> AclBinding:
    """The binding of a request's map, checked as the controller will check it.

    Raises:
        RequestError: INVALID_REQUEST naming the field.
    """
    binding = AclBinding(**{k: fields[k] for k in P.SCHEMAS[P.CREATE_ACLS]["acls"].item})
    try:
        check_record(acl_record(binding))
    except ValueError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{where}: {exc}") from None
    problem = binding_problem(binding)
    if problem:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{where}: {problem}")
    return binding


def checked_filter(fields: dict, where: str) -> AclFilter:
    if fields["pattern"] not in FILTER_PATTERNS:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{where}.pattern must be one of {', '.join(FILTER_PATTERNS)}, "
                                                      f"got {P.clip(fields['pattern'])}")
    return AclFilter(**fields)


def _commit(app, ctx, bindings, remove: bool, now_ms: int, value):
    """Commit ``bindings`` (added, or removed); ``value`` once committed."""
    if not bindings:
        return value
    done = app.admin.alter_security(ctx, AlterSecurity([acl_record(b, remove) for b in bindings]), now_ms)
    if done is None:
        return value
    answer: Completion = Completion()
    done.on_done(lambda c: answer.fail(c.error) if c.error is not None else answer.complete(value))
    return answer


def create_acls(app, ctx, fields, payloads, now_ms):
    bindings = [checked_binding(b, f"acls[{i}]") for i, b in enumerate(fields["acls"])]
    return _commit(app, ctx, list(dict.fromkeys(bindings)), False, now_ms, None)


def describe_acls(app, ctx, fields, payloads, now_ms):
    return filter_bindings(app.control.image.security.acls, checked_filter(fields, "filter"))


def describe_acls_reply(bindings):
    return {"acls": [asdict(b) for b in bindings]}, []


def delete_acls(app, ctx, fields, payloads, now_ms):
    acls = app.control.image.security.acls
    matched = [filter_bindings(acls, checked_filter(f, f"filters[{i}]")) for i, f in enumerate(fields["filters"])]
    doomed = list(dict.fromkeys(b for bindings in matched for b in bindings))
    return _commit(app, ctx, doomed, True, now_ms, matched)


def delete_acls_reply(matched):
    return {"deleted": [[asdict(b) for b in bindings] for bindings in matched]}, []


_ALTER_CLUSTER = [(Operation.ALTER, CLUSTER)]

ROUTES = [
    Route(P.CREATE_ACLS, create_acls, access=lambda f: _ALTER_CLUSTER),
    Route(P.DESCRIBE_ACLS, describe_acls, describe_acls_reply, access=lambda f: [(Operation.DESCRIBE, CLUSTER)]),
    Route(P.DELETE_ACLS, delete_acls, delete_acls_reply, access=lambda f: _ALTER_CLUSTER),
]
