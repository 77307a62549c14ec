"""ACL bindings and filters, as :class:`clients.Admin` sends and returns them.

The fields are the broker's (docs/security.md, "ACLs"): ``resource_type`` ``topic``,
``group`` or ``cluster`` (whose one resource is named ``cluster``); ``pattern``
``literal`` (a literal ``*`` matches every name) or ``prefixed``; ``operation`` ``read``,
``write``, ``create``, ``delete``, ``alter``, ``describe`` or ``all``; ``permission``
``allow`` or ``deny``; ``principal`` ``User:NAME`` or ``User:*``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AclBinding:
    """One ACL: ``permission`` for ``principal`` to do ``operation`` on the resources of
    ``resource_type`` that ``name`` (with ``pattern``) matches."""

    principal: str
    resource_type: str
    name: str
    operation: str
    pattern: str = "literal"
    permission: str = "allow"
    host: str = "*"

    def fields(self) -> dict:
        return asdict(self)

    @classmethod
    def from_fields(cls, fields: dict) -> AclBinding:
        return cls(fields["principal"], fields["resource_type"], fields["name"], fields["operation"],
                   fields.get("pattern", "literal"), fields.get("permission", "allow"), fields.get("host", "*"))

    def __str__(self) -> str:
        return (f"{self.permission} {self.principal} {self.operation} {self.resource_type} {self.name!r}"
                f"{' (prefixed)' if self.pattern == 'prefixed' else ''}")


@dataclass(frozen=True)
class AclFilter:
    """Which bindings to list or remove; None matches anything.  ``pattern``: ``literal``,
    ``prefixed``, ``any`` (either, with that name) or ``match`` (every binding that applies
    to a resource named ``name``)."""

    principal: str | None = None
    resource_type: str | None = None
    name: str | None = None
    operation: str | None = None
    pattern: str = "any"
    permission: str | None = None
    host: str | None = None

    def fields(self) -> dict:
        return asdict(self)
