"""The ACL authorizer: who may do what, from the ACL bindings of the metadata log.

Theory of operation.  An ACL binding (``control.security_meta.AclBinding``, committed
through the controller and applied on every broker) says: ``permission`` (allow or deny)
for ``principal`` to do ``operation`` on the resources of ``resource_type`` whose name
equals ``name`` (pattern ``literal``; a literal ``*`` matches every name) or starts with it
(``prefixed``).  :meth:`AclAuthorizer.authorize` answers one question -- may this
principal do this operation on this resource -- by Kafka's rules (``AclAuthorizer`` of
Kafka 2.x-3.x and the KRaft ``StandardAuthorizer``, which share them; Kafka's docs,
"Authorization and ACLs"):

1. a broker (``Broker:N``, authenticated as one by the front door) may do everything,
   and only brokers may do ``CLUSTER_ACTION`` (replication, Raft, ISR changes);
2. a principal of ``[security] super_users`` may do everything else;
3. the bindings that *match* are those of the principal or of ``User:*`` (everyone),
   on the resource's type, whose pattern matches the resource's name;
4. **deny wins**: a matching deny binding of the operation (or ``all``) refuses, whatever
   allows it;
5. else a matching allow binding of the operation, of ``all``, or of an operation that
   implies it allows: ``describe`` is implied by ``read``, ``write``, ``delete`` and
   ``alter`` (Kafka's ``allowOps``: "READ, WRITE, DELETE and ALTER imply DESCRIBE";
   Kafka's ``ALTER_CONFIGS`` implies ``DESCRIBE_CONFIGS``, which zbroker's ``alter`` and
   ``describe`` stand for);
6. nothing matches: **denied** (Kafka's ``allow.everyone.if.no.acl.found=false``).

Two rules of Kafka's request handlers live here, so every front door keeps them alike:

- ``create`` on the **cluster** lets a principal create any topic (Kafka's CreateTopics and
  Metadata auto-creation ask cluster CREATE, then topic CREATE).  Unlike Kafka, whose
  handlers stop at the cluster grant, a deny of ``create`` on the topic still wins;
- ``IDEMPOTENT_WRITE`` on the cluster (InitProducerId) is granted by ``write`` on the
  cluster, or to a principal that may ``write`` *some* topic (KIP-679; Kafka's
  ``Authorizer.authorizeByResourceType``).

A binding's ``host`` is the client address it applies to.  The routers do not know
client addresses, so the management requests refuse any host but ``*``; a binding with
another host (if one were committed anyway) never allows, and a deny applies on every
host: the safe reading of a rule the broker cannot check.

Cost.  Each decision is cached per ``(principal, operation, resource)`` until the
security part of the image changes (``image.security.version``: every committed
credential, ACL or quota bumps it); the cache is bounded (:data:`MAX_CACHED`).  On a
miss the bindings are looked up in an index built once per version: per resource type
and principal, literal bindings by name and prefixed bindings by prefix, so a check
costs a few dict lookups (one per distinct prefix length), whatever the number of ACLs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from zbroker.context import RequestContext
from zbroker.security import CLUSTER, AllowAll, Authorizer, Operation, Resource, ResourceType

log = logging.getLogger(__name__)

WILDCARD_PRINCIPAL = "User:*"
WILDCARD_NAME = "*"
ANY_HOST = "*"
#: Cached decisions at most; past it the cache starts again (a client naming a million
#: topics must not grow the broker's memory).
MAX_CACHED = 100_000

#: The ACL operations whose allow binding grants a requested operation (besides "all").
_GRANTED_BY = {
    Operation.READ: ("read",),
    Operation.WRITE: ("write",),
    Operation.CREATE: ("create",),
    Operation.DELETE: ("delete",),
    Operation.ALTER: ("alter",),
    Operation.DESCRIBE: ("describe", "read", "write", "delete", "alter"),
    Operation.IDEMPOTENT_WRITE: ("write",),
}


class _Entries:
    """The bindings of one (resource type, principal): literal by name, prefixed by prefix."""

    __slots__ = ("literal", "prefixed", "prefix_lengths")

    def __init__(self) -> None:
        self.literal: dict[str, list] = defaultdict(list)
        self.prefixed: dict[str, list] = defaultdict(list)
        self.prefix_lengths: tuple[int, ...] = ()

    def matching(self, name: str) -> Iterable:
        """Every binding whose pattern matches resource ``name``."""
        yield from self.literal.get(name, ())
        if name != WILDCARD_NAME:
            yield from self.literal.get(WILDCARD_NAME, ())
        for n in self.prefix_lengths:
            if n > len(name):
                break
            yield from self.prefixed.get(name[:n], ())


class AclIndex:
    """The ACL bindings of one version of the image, indexed for lookups.

    Runtime: building O(bindings); :meth:`matching` O(distinct prefix lengths + matches).
    """

    def __init__(self, bindings: Iterable) -> None:
        self.entries: dict[tuple[str, str], _Entries] = {}
        for b in bindings:
            key = (b.resource_type, b.principal)
            entries = self.entries.get(key)
            if entries is None:
                entries = self.entries[key] = _Entries()
            (entries.prefixed if b.pattern == "prefixed" else entries.literal)[b.name].append(b)
        for entries in self.entries.values():
            entries.prefix_lengths = tuple(sorted({len(p) for p in entries.prefixed}))

    def matching(self, principal: str, resource_type: str, name: str) -> list:
        out = []
        for who in (principal, WILDCARD_PRINCIPAL) if principal != WILDCARD_PRINCIPAL else (principal,):
            entries = self.entries.get((resource_type, who))
            if entries is not None:
                out.extend(entries.matching(name))
        return out

    def of_type(self, principal: str, resource_type: str) -> list:
        """Every binding of ``principal`` (or ``User:*``) on any resource of the type."""
        out = []
        for who in {principal, WILDCARD_PRINCIPAL}:
            entries = self.entries.get((resource_type, who))
            if entries is not None:
                out.extend(b for bs in entries.literal.values() for b in bs)
                out.extend(b for bs in entries.prefixed.values() for b in bs)
        return out


def _denies(binding, operation: str) -> bool:
    # a deny applies on every host: the broker does not know the client's
    return binding.permission == "deny" and binding.operation in (operation, "all")


def _allows(binding, operations: tuple[str, ...]) -> bool:
    return (binding.permission == "allow" and binding.host == ANY_HOST
            and (binding.operation == "all" or binding.operation in operations))


def decide(bindings: list, operation: Operation) -> bool | None:
    """Kafka's rule over the bindings that match a resource: False if one denies the
    operation (deny wins), True if one allows it (or an operation implying it), None if
    none says (the caller denies, or asks another resource)."""
    name = "write" if operation is Operation.IDEMPOTENT_WRITE else operation.value
    if any(_denies(b, name) for b in bindings):
        return False
    granted_by = _GRANTED_BY[operation]
    return True if any(_allows(b, granted_by) for b in bindings) else None


def any_of_type(bindings: list, operation: str) -> bool:
    """Whether ``bindings`` (a principal's on one resource type) allow ``operation`` on at
    least one resource that no deny covers: Kafka's ``authorizeByResourceType``
    (KIP-679), which InitProducerId asks for WRITE on topics."""
    deny_literal, deny_prefixed, allow = set(), set(), []
    for b in bindings:
        if _denies(b, operation):
            (deny_prefixed if b.pattern == "prefixed" else deny_literal).add(b.name)
        elif _allows(b, (operation,)):
            allow.append(b)
    if WILDCARD_NAME in deny_literal:
        return False
    for b in allow:
        if any(b.name.startswith(p) for p in deny_prefixed):
            continue  # every name this allows is denied by a prefix
        if b.pattern == "prefixed" or b.name == WILDCARD_NAME or b.name not in deny_literal:
            return True
    return False


class AclAuthorizer:
    """The authorizer of a broker with security on.

    Args:
        security: the ``[security]`` table (its ``super_users``).
        image: returns the live ``SecurityImage`` of the metadata image (``acls``,
            ``version``).
    """

    def __init__(self, security, image: Callable[[], object]) -> None:
        self.super_users = frozenset(security.super_users)
        self._image = image
        self._version: int | None = None
        self._index = AclIndex(())
        # (principal, operation, resource type) -> resource name -> decision
        self._cache: dict[tuple[str, Operation, ResourceType], dict[str, bool]] = {}
        self._cached = 0

    # -- the index and the cache ------------------------------------------------------

    def _fresh(self) -> None:
        """Drop the cache and rebuild the index if the security image moved."""
        image = self._image()
        if image.version != self._version:
            self._version = image.version
            self._index = AclIndex(image.acls)
            self._cache, self._cached = {}, 0

    def _decisions(self, principal: str, operation: Operation, resource_type: ResourceType) -> dict[str, bool]:
        """The cached decisions of (principal, operation) on resources of a type, by name."""
        key = (principal, operation, resource_type)
        decisions = self._cache.get(key)
        if decisions is None:
            decisions = self._cache[key] = {}
        return decisions

    def _remember(self, decisions: dict[str, bool], name: str, decision: bool) -> None:
        if self._cached >= MAX_CACHED:  # start again: every dict of decisions, this one too
            for cached in self._cache.values():
                cached.clear()
            self._cached = 0
        decisions[name] = decision
        self._cached += 1

    @property
    def index(self) -> AclIndex:
        self._fresh()
        return self._index

    # -- the decision -----------------------------------------------------------------

    def authorize(self, ctx: RequestContext, operation: Operation, resource: Resource) -> bool:
        """Whether ``ctx.principal`` may do ``operation`` on ``resource`` (see the module).

        Runtime: O(1) for a cached decision; else O(distinct prefix lengths + matching bindings).
        """
        principal = ctx.principal
        if is_broker(principal):
            return True
        if operation is Operation.CLUSTER_ACTION:
            return False
        if principal in self.super_users:
            return True
        self._fresh()
        decisions = self._decisions(principal, operation, resource.type)
        decision = decisions.get(resource.name)
        if decision is None:
            decision = self._decide(principal, operation, resource)
            self._remember(decisions, resource.name, decision)
        return decision

    def allowed_names(self, ctx: RequestContext, operation: Operation, resource_type: ResourceType,
                      names: Iterable[str]) -> list[str]:
        """The names of ``names`` whose resource ``ctx`` may do ``operation`` on, in order:
        :meth:`authorize` for many resources at once (a Metadata request for every topic).

        Runtime: O(names) dict lookups once cached.
        """
        principal = ctx.principal
        if is_broker(principal) or (operation is not Operation.CLUSTER_ACTION and principal in self.super_users):
            return list(names)
        if operation is Operation.CLUSTER_ACTION:
            return []
        self._fresh()
        decisions = self._decisions(principal, operation, resource_type)
        out = []
        for name in names:
            decision = decisions.get(name)
            if decision is None:
                decision = self._decide(principal, operation, Resource(resource_type, name))
                self._remember(decisions, name, decision)
            if decision:
                out.append(name)
        return out

    def _decide(self, principal: str, operation: Operation, resource: Resource) -> bool:
        index = self._index
        own = decide(index.matching(principal, resource.type.value, resource.name), operation)
        if own is not None:
            return own
        if operation is Operation.CREATE and resource.type is ResourceType.TOPIC:
            return self._decide(principal, Operation.CREATE, CLUSTER)
        if operation is Operation.IDEMPOTENT_WRITE:
            return any_of_type(index.of_type(principal, ResourceType.TOPIC.value), "write")
        return False


def is_broker(principal: str) -> bool:
    """``Broker:N`` (a broker of the cluster, as its front door authenticated it) or the
    broker's own work (``Broker:self``).  No client is ever given such a principal: ACLs
    and ``super_users`` take only ``User:`` and ``Bridge:`` principals."""
    return principal.startswith("Broker:")


#: How an :class:`AclFilter` matches a binding's pattern: ``literal`` / ``prefixed`` (that
#: pattern, that name), ``any`` (any pattern, that name) or ``match`` (every binding that
#: applies to a resource of that name: literal, literal ``*``, or a prefix of it) --
#: Kafka's PatternType LITERAL, PREFIXED, ANY and MATCH.
FILTER_PATTERNS = ("literal", "prefixed", "any", "match")


@dataclass(frozen=True, slots=True)
class AclFilter:
    """Which ACL bindings to list or delete; a None field matches anything (Kafka's
    ``AclBindingFilter``)."""

    principal: str | None = None
    resource_type: str | None = None
    name: str | None = None
    pattern: str = "any"
    operation: str | None = None
    permission: str | None = None
    host: str | None = None

    def matches(self, b) -> bool:
        for mine, theirs in ((self.principal, b.principal), (self.resource_type, b.resource_type),
                             (self.operation, b.operation), (self.permission, b.permission), (self.host, b.host)):
            if mine is not None and mine != theirs:
                return False
        if self.pattern == "match":
            return self.name is None or (b.name == self.name or b.name == WILDCARD_NAME if b.pattern == "literal"
                                         else self.name.startswith(b.name))
        if self.pattern != "any" and b.pattern != self.pattern:
            return False
        return self.name is None or b.name == self.name


def binding_problem(b) -> str | None:
    """Why a new binding is refused beyond the metadata log's own checks, or None: a host
    other than ``*`` (the routers do not know client addresses, so it could not be kept)."""
    if b.host != ANY_HOST:
        return f"host must be '*': zbroker does not check client addresses, got {b.host!r:.80}"
    return None


def filter_bindings(acls: Iterable, f: AclFilter) -> list:
    """The bindings of ``acls`` that ``f`` matches, in a stable order (by principal,
    resource, pattern, operation, permission)."""
    return sorted((b for b in acls if f.matches(b)), key=lambda b: (b.principal, b.resource_type, b.name, b.pattern,
                                                                       b.operation, b.permission, b.host))


def build_authorizer(security, image: Callable[[], object]) -> Authorizer:
    """The broker's one authorizer: :class:`AclAuthorizer` with security on (``curve`` or
    ``kafka_sasl``), :class:`AllowAll` with it off."""
    if not security.enabled:
        return AllowAll()
    log.info("ACLs enforced: what no ACL allows is denied (super_users: %s)", ", ".join(security.super_users) or "none")
    return AclAuthorizer(security, image)
