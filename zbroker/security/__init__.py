"""Authorization: one authorizer that every front door's router calls.

Each request is checked before its handler runs: the router asks
:meth:`Authorizer.authorize` with the request's context, the operation and each
resource the request touches.  Today every request is allowed
(:class:`AllowAll`); ACLs in the metadata log plug in here without touching a
handler.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from zbroker.context import RequestContext
from zbroker.errors import ErrorCode, RequestError


class Operation(enum.Enum):
    READ = "read"
    WRITE = "write"
    CREATE = "create"
    DELETE = "delete"
    ALTER = "alter"
    DESCRIBE = "describe"
    CLUSTER_ACTION = "cluster_action"  # broker-to-broker only


class ResourceType(enum.Enum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True)
class Resource:
    type: ResourceType
    name: str = ""


CLUSTER = Resource(ResourceType.CLUSTER, "cluster")


def topic(name: str) -> Resource:
    return Resource(ResourceType.TOPIC, name)


def group(name: str) -> Resource:
    return Resource(ResourceType.GROUP, name)


class Authorizer(Protocol):
    def authorize(self, ctx: RequestContext, operation: Operation, resource: Resource) -> bool:
        """Whether ``ctx.principal`` may do ``operation`` on ``resource``."""


class AllowAll:
    """Everything is allowed (security off); the seam ACLs replace."""

    def authorize(self, ctx: RequestContext, operation: Operation, resource: Resource) -> bool:
        return True


#: The error a refusal answers, by the kind of resource refused (Kafka's codes).
DENIED = {
    ResourceType.TOPIC: ErrorCode.TOPIC_AUTHORIZATION_FAILED,
    ResourceType.GROUP: ErrorCode.GROUP_AUTHORIZATION_FAILED,
    ResourceType.CLUSTER: ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
}


def check_access(authorizer: Authorizer, ctx: RequestContext, pairs) -> None:
    """Ask ``authorizer`` for each ``(operation, resource)`` of a request; every front door's
    router calls this.

    Raises:
        RequestError: the first refusal, with :data:`DENIED`'s code for its resource.
    """
    for operation, resource in pairs:
        if not authorizer.authorize(ctx, operation, resource):
            raise RequestError(DENIED[resource.type], f"{ctx.principal} may not {operation.value} "
                                                      f"{resource.type.value} {resource.name!r}")
