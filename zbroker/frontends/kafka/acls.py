"""Kafka's ACL codes <-> zbroker's ACL bindings (CreateAcls, DescribeAcls, DeleteAcls).

Kafka names resource types, pattern types, operations and permissions by number
(``org.apache.kafka.common.resource.ResourceType``, ``PatternType``,
``org.apache.kafka.common.acl.AclOperation``, ``AclPermissionType``).  zbroker's bindings
use words, and fewer of them:

======================  =================================================================
Kafka                   zbroker
======================  =================================================================
TOPIC 2, GROUP 3,       ``topic``, ``group``, ``cluster`` (Kafka's cluster resource is
CLUSTER 4               named ``kafka-cluster``; zbroker's ``cluster``: either is accepted,
                        ``kafka-cluster`` is answered)
LITERAL 3, PREFIXED 4   ``literal``, ``prefixed`` (filters: ANY 1 and MATCH 2 too)
ALL 2, READ 3, WRITE 4, the operation of the same name
CREATE 5, DELETE 6,
ALTER 7, DESCRIBE 8
DESCRIBE_CONFIGS 10     ``describe`` (zbroker does not tell config reads from other
                        describes); answered back as DESCRIBE 8
ALTER_CONFIGS 11        ``alter``; answered back as ALTER 7
IDEMPOTENT_WRITE 12     ``write`` on the cluster (what InitProducerId asks); answered back
                        as WRITE 4
ALLOW 3, DENY 2         ``allow``, ``deny``
======================  =================================================================

Anything else -- TRANSACTIONAL_ID, DELEGATION_TOKEN and USER resources, CLUSTER_ACTION
(brokers only, never granted by an ACL), CREATE_TOKENS, DESCRIBE_TOKENS,
TWO_PHASE_COMMIT, a host other than ``*`` -- is refused with INVALID_REQUEST saying so.
"""

from __future__ import annotations

from zbroker.control.security_meta import AclBinding, acl_record, check_record
from zbroker.errors import ErrorCode, RequestError
from zbroker.security.acl import AclFilter, binding_problem

ANY = 1
KAFKA_CLUSTER = "kafka-cluster"
RESOURCE_TYPES = {2: "topic", 3: "group", 4: "cluster"}
PATTERN_TYPES = {3: "literal", 4: "prefixed"}
FILTER_PATTERNS = {ANY: "any", 2: "match", **PATTERN_TYPES}
OPERATIONS = {2: "all", 3: "read", 4: "write", 5: "create", 6: "delete", 7: "alter", 8: "describe",
              10: "describe", 11: "alter", 12: "write"}
IDEMPOTENT_WRITE = 12
PERMISSIONS = {2: "deny", 3: "allow"}
_KAFKA_NAMES = {5: "TRANSACTIONAL_ID", 6: "DELEGATION_TOKEN", 7: "USER"}
_KAFKA_OPERATIONS = {9: "CLUSTER_ACTION (brokers only: no ACL grants it)", 13: "CREATE_TOKENS", 14: "DESCRIBE_TOKENS",
                     15: "TWO_PHASE_COMMIT"}
CODES = {"resource_type": {v: k for k, v in RESOURCE_TYPES.items()}, "pattern": {v: k for k, v in PATTERN_TYPES.items()},
         "operation": {v: k for k, v in list(OPERATIONS.items())[:7]}, "permission": {v: k for k, v in PERMISSIONS.items()}}


def _invalid(message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, message)


def _word(table: dict, code: int, what: str, names: dict | None = None) -> str:
    word = table.get(code)
    if word is None:
        kafka = (names or {}).get(code)
        raise _invalid(f"{what} {code}{f' ({kafka})' if kafka else ''} is not supported by zbroker")
    return word


def _name(resource_type: str, name: str | None) -> str | None:
    return "cluster" if resource_type == "cluster" and name == KAFKA_CLUSTER else name


def binding(resource_type: int, name: str, pattern: int, principal: str, host: str, operation: int,
            permission: int) -> AclBinding:
    """zbroker's binding for a CreateAcls creation, checked as the controller will check it.

    Raises:
        RequestError: INVALID_REQUEST saying what zbroker does not support or what is wrong.
    """
    kind = _word(RESOURCE_TYPES, resource_type, "resource type", _KAFKA_NAMES)
    if operation == IDEMPOTENT_WRITE and kind != "cluster":
        raise _invalid("IDEMPOTENT_WRITE is an operation on the cluster")
    b = AclBinding(principal, kind, _name(kind, name), _word(PATTERN_TYPES, pattern, "pattern type"),
                   _word(OPERATIONS, operation, "operation", _KAFKA_OPERATIONS), _word(PERMISSIONS, permission, "permission"),
                   host)
    try:
        check_record(acl_record(b))
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    problem = binding_problem(b)
    if problem:
        raise _invalid(problem)
    return b


def acl_filter(resource_type: int, name: str | None, pattern: int, principal: str | None, host: str | None,
               operation: int, permission: int) -> AclFilter:
    """zbroker's filter for a DescribeAcls or DeleteAcls filter (ANY: no condition).

    Raises:
        RequestError: INVALID_REQUEST for a code zbroker does not know (which matches nothing
            zbroker could hold, but is most likely a mistake).
    """
    kind = None if resource_type == ANY else _word(RESOURCE_TYPES, resource_type, "resource type", _KAFKA_NAMES)
    return AclFilter(principal=principal, resource_type=kind, name=_name(kind, name) if kind else name,
                     pattern=_word(FILTER_PATTERNS, pattern, "pattern type"),
                     operation=None if operation == ANY else _word(OPERATIONS, operation, "operation", _KAFKA_OPERATIONS),
                     permission=None if permission == ANY else _word(PERMISSIONS, permission, "permission"), host=host)


def kafka_fields(b) -> dict:
    """A binding in Kafka's codes (``resource_type``, ``resource_name``, ``pattern_type``,
    ``principal``, ``host``, ``operation``, ``permission_type``)."""
    return {"resource_type": CODES["resource_type"][b.resource_type],
            "resource_name": KAFKA_CLUSTER if b.resource_type == "cluster" else b.name,
            "pattern_type": CODES["pattern"][b.pattern], "principal": b.principal, "host": b.host,
            "operation": CODES["operation"][b.operation], "permission_type": CODES["permission"][b.permission]}
