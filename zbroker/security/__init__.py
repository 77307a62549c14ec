"""Authorization: one authorizer that every front door's router calls.

Each request is checked before its handler runs: the router asks
:meth:`Authorizer.authorize` with the request's context, the operation and each
resource the request touches (:func:`check_access`).  With security off every
request is allowed (:class:`AllowAll`); with it on, :class:`zbroker.security.acl.AclAuthorizer`
answers from the ACLs in the metadata log (:func:`zbroker.security.acl.build_authorizer`
picks one).
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
    # Kafka's IDEMPOTENT_WRITE on the cluster (InitProducerId): granted by an ACL "write" on
    # the cluster, or to whoever may write some topic (KIP-679), see security.acl
    IDEMPOTENT_WRITE = "idempotent_write"


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


def refusal(ctx: RequestContext, operation: Operation, resource: Resource) -> RequestError:
    """The error that refuses ``operation`` on ``resource`` to ``ctx.principal``."""
    return RequestError(DENIED[resource.type], f"{ctx.principal} may not {operation.value} "
                                               f"{resource.type.value} {resource.name!r}")


def check_access(authorizer: Authorizer, ctx: RequestContext, pairs,
                 per_resource: frozenset[ResourceType] = frozenset()) -> frozenset[Resource]:
    """Ask ``authorizer`` for each ``(operation, resource)`` of a request; every front door's
    router calls this.

    ``per_resource``: the resource types whose refusal the request answers resource by
    resource (Kafka's TOPIC_AUTHORIZATION_FAILED in a Produce's partition answers, ...):
    those are returned instead of raised, for the handler to answer.

    Returns:
        the refused resources of the ``per_resource`` types (the router hands them to the
        handler as :attr:`RequestContext.refused`).

    Raises:
        RequestError: the first refusal of any other type, with :data:`DENIED`'s code.
    """
    refused = set()
    for operation, resource in pairs:
        if not authorizer.authorize(ctx, operation, resource):
            if resource.type not in per_resource:
                raise refusal(ctx, operation, resource)
            refused.add(resource)
    return frozenset(refused)


def describable_groups(authorizer: Authorizer, ctx: RequestContext, names) -> set[str]:
    """The groups of ``names`` that ``ctx`` may list: all of them with DESCRIBE on the
    cluster, else those it may DESCRIBE (Kafka's ListGroups)."""
    names = set(names)
    if isinstance(authorizer, AllowAll) or authorizer.authorize(ctx, Operation.DESCRIBE, CLUSTER):
        return names
    return {n for n in names if authorizer.authorize(ctx, Operation.DESCRIBE, group(n))}


def allowed(authorizer: Authorizer, ctx: RequestContext, operation: Operation, resources):
    """The resources of ``resources`` that ``ctx`` may do ``operation`` on (listings:
    ListGroups, a Metadata request for every topic), in order."""
    if isinstance(authorizer, AllowAll):
        return list(resources)
    return [r for r in resources if authorizer.authorize(ctx, operation, r)]


def allowed_names(authorizer: Authorizer, ctx: RequestContext, operation: Operation, resource_type: ResourceType,
                  names) -> list[str]:
    """The names of ``names`` (resources of ``resource_type``) ``ctx`` may do ``operation``
    on, in order; in bulk where the authorizer can (``allowed_names``: one dict lookup a name)."""
    if isinstance(authorizer, AllowAll):
        return list(names)
    bulk = getattr(authorizer, "allowed_names", None)
    if bulk is not None:
        return bulk(ctx, operation, resource_type, names)
    return [n for n in names if authorizer.authorize(ctx, operation, Resource(resource_type, n))]
