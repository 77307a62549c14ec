"""Security state in the metadata log: SCRAM credentials, ACLs and client quotas.

Like topics, these are records of ``__cluster_metadata``, proposed by the controller and
applied on every broker in log order, so every broker answers from the same state and it
survives any failover.  Records set whole values (never increments), so applying one
twice is harmless.

- ``scram_credential``: ``name``, ``mechanism`` (SCRAM-SHA-256 or SCRAM-SHA-512),
  ``salt``, ``iterations``, ``stored_key``, ``server_key`` (RFC 5802: the password itself
  is never stored, nor anything a client could log in with).
- ``remove_scram_credential``: ``name``, ``mechanism`` (None: every mechanism of that user).
- ``acl`` / ``remove_acl``: the fields of :class:`AclBinding`.
- ``quota``: ``principal`` (``User:NAME``, or :data:`DEFAULT_QUOTA_PRINCIPAL` for everyone
  without one of their own), ``produce_bytes_per_s``, ``fetch_bytes_per_s`` (None: no
  bound); both None removes the entry.

:func:`check_record` is what the controller runs on every record before proposing it:
a malformed one is refused with a message naming the field, and never reaches the log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCRAM_CREDENTIAL_RECORD = "scram_credential"
REMOVE_SCRAM_CREDENTIAL_RECORD = "remove_scram_credential"
ACL_RECORD = "acl"
REMOVE_ACL_RECORD = "remove_acl"
QUOTA_RECORD = "quota"
SECURITY_RECORDS = frozenset({SCRAM_CREDENTIAL_RECORD, REMOVE_SCRAM_CREDENTIAL_RECORD, ACL_RECORD, REMOVE_ACL_RECORD,
                              QUOTA_RECORD})

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MIN_SCRAM_ITERATIONS = 4096  # RFC 7677's floor, Kafka's too
MAX_SCRAM_ITERATIONS = 1 << 20
ACL_RESOURCE_TYPES = ("topic", "group", "cluster")
ACL_OPERATIONS = ("read", "write", "create", "delete", "alter", "describe", "all")
ACL_PATTERNS = ("literal", "prefixed")
ACL_PERMISSIONS = ("allow", "deny")
#: The quota principal that applies to every principal without a quota of its own.
DEFAULT_QUOTA_PRINCIPAL = "<default>"
MAX_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class ScramCredential:
    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class AclBinding:
    """One ACL: ``permission`` (allow/deny) for ``principal`` to do ``operation`` on the
    resources of ``resource_type`` whose name equals (literal) or starts with (prefixed)
    ``name``; a literal ``*`` matches every name.  ``principal`` may be ``User:*``.
    ``host`` is the client address it applies to (``*``: any)."""

    principal: str
    resource_type: str
    name: str
    pattern: str = "literal"
    operation: str = "all"
    permission: str = "allow"
    host: str = "*"


@dataclass(slots=True)
class QuotaEntry:
    produce_bytes_per_s: float | None = None
    fetch_bytes_per_s: float | None = None


@dataclass
class SecurityImage:
    """The security part of the metadata image.

    Attributes:
        users: user name -> mechanism -> credential.
        acls: every ACL binding.
        quotas: principal (or :data:`DEFAULT_QUOTA_PRINCIPAL`) -> its byte-rate bounds.
        version: bumped by every applied record (authorizers cache against it).
    """

    users: dict[str, dict[str, ScramCredential]] = field(default_factory=dict)
    acls: set[AclBinding] = field(default_factory=set)
    quotas: dict[str, QuotaEntry] = field(default_factory=dict)
    version: int = 0

    def clear(self) -> None:
        self.users.clear()
        self.acls.clear()
        self.quotas.clear()
        self.version += 1


def scram_credential_record(name: str, cred: ScramCredential) -> dict:
    return {"type": SCRAM_CREDENTIAL_RECORD, "name": name, **asdict(cred)}


def acl_record(binding: AclBinding, remove: bool = False) -> dict:
    return {"type": REMOVE_ACL_RECORD if remove else ACL_RECORD, **asdict(binding)}


def quota_record(principal: str, entry: QuotaEntry) -> dict:
    return {"type": QUOTA_RECORD, "principal": principal, **asdict(entry)}


def security_records(image: SecurityImage) -> list[dict]:
    """Records that rebuild ``image`` from empty (for a metadata snapshot)."""
    records = [scram_credential_record(name, cred) for name, creds in sorted(image.users.items())
               for cred in creds.values()]
    records += [acl_record(b) for b in sorted(image.acls, key=astuple_key)]
    records += [quota_record(p, q) for p, q in sorted(image.quotas.items())]
    return records


def astuple_key(binding: AclBinding) -> tuple:
    return (binding.principal, binding.resource_type, binding.name, binding.pattern, binding.operation,
            binding.permission, binding.host)


def apply_security_record(image: SecurityImage, record: dict) -> None:
    """Apply one committed security record."""
    kind = record["type"]
    if kind == SCRAM_CREDENTIAL_RECORD:
        cred = ScramCredential(record["mechanism"], bytes(record["salt"]), int(record["iterations"]),
                               bytes(record["stored_key"]), bytes(record["server_key"]))
        image.users.setdefault(record["name"], {})[cred.mechanism] = cred
    elif kind == REMOVE_SCRAM_CREDENTIAL_RECORD:
        creds = image.users.get(record["name"], {})
        if record.get("mechanism") is None:
            creds.clear()
        else:
            creds.pop(record["mechanism"], None)
        if not creds:
            image.users.pop(record["name"], None)
    elif kind == ACL_RECORD:
        image.acls.add(_binding(record))
    elif kind == REMOVE_ACL_RECORD:
        image.acls.discard(_binding(record))
    elif kind == QUOTA_RECORD:
        entry = QuotaEntry(record.get("produce_bytes_per_s"), record.get("fetch_bytes_per_s"))
        if entry.produce_bytes_per_s is None and entry.fetch_bytes_per_s is None:
            image.quotas.pop(record["principal"], None)
        else:
            image.quotas[record["principal"]] = entry
    else:
        raise ValueError(f"not a security record: {kind!r}")
    image.version += 1


def _binding(record: dict) -> AclBinding:
    return AclBinding(record["principal"], record["resource_type"], record["name"], record["pattern"],
                      record["operation"], record["permission"], record.get("host", "*"))


# -- checking records before they are proposed ----------------------------------------------

def _name(value: Any, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty) or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{what} must be a {'' if allow_empty else 'non-empty '}string of at most "
                         f"{MAX_NAME_CHARS} characters, got {value!r:.80}")
    return value


def _choice(value: Any, what: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{what} must be one of {', '.join(options)}, got {value!r:.80}")
    return value


def check_principal(value: Any, what: str = "principal", wildcard: bool = False) -> str:
    """``User:NAME`` (or ``Bridge:NAME``); ``User:*`` too if ``wildcard``."""
    text = _name(value, what)
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("User", "Bridge") or not name or (name == "*" and not wildcard):
        raise ValueError(f"{what} must look like User:NAME{' or User:*' if wildcard else ''}, got {text!r:.80}")
    return text


def _bytes(value: Any, what: str, lo: int, hi: int) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or not lo <= len(value) <= hi:
        raise ValueError(f"{what} must be {lo} to {hi} bytes")
    return bytes(value)


def _rate(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 2**53:
        raise ValueError(f"{what} must be a number of bytes per second from 1 to 2**53, or none, got {value!r:.80}")
    return value


def check_record(record: Any) -> dict:
    """Check one security record as a client's request built it.

    Raises:
        ValueError: naming the field that is wrong.
    """
    if not isinstance(record, dict):
        raise ValueError("a security record must be a map")
    kind = record.get("type")
    if kind == SCRAM_CREDENTIAL_RECORD:
        _name(record.get("name"), "user name")
        _choice(record.get("mechanism"), "mechanism", SCRAM_MECHANISMS)
        _bytes(record.get("salt"), "salt", 16, 1024)
        it = record.get("iterations")
        if isinstance(it, bool) or not isinstance(it, int) or not MIN_SCRAM_ITERATIONS <= it <= MAX_SCRAM_ITERATIONS:
            raise ValueError(f"iterations must be an integer from {MIN_SCRAM_ITERATIONS} to {MAX_SCRAM_ITERATIONS}, got {it!r:.80}")
        size = 32 if record["mechanism"] == "SCRAM-SHA-256" else 64
        _bytes(record.get("stored_key"), "stored_key", size, size)
        _bytes(record.get("server_key"), "server_key", size, size)
    elif kind == REMOVE_SCRAM_CREDENTIAL_RECORD:
        _name(record.get("name"), "user name")
        if record.get("mechanism") is not None:
            _choice(record.get("mechanism"), "mechanism", SCRAM_MECHANISMS)
    elif kind in (ACL_RECORD, REMOVE_ACL_RECORD):
        check_principal(record.get("principal"), wildcard=True)
        resource_type = _choice(record.get("resource_type"), "resource_type", ACL_RESOURCE_TYPES)
        name = _name(record.get("name"), "resource name")
        if resource_type == "cluster" and name != "cluster":
            raise ValueError(f"the cluster resource is named 'cluster', got {name!r:.80}")
        _choice(record.get("pattern"), "pattern", ACL_PATTERNS)
        _choice(record.get("operation"), "operation", ACL_OPERATIONS)
        _choice(record.get("permission"), "permission", ACL_PERMISSIONS)
        _name(record.get("host", "*"), "host")
    elif kind == QUOTA_RECORD:
        principal = record.get("principal")
        if principal != DEFAULT_QUOTA_PRINCIPAL:
            check_principal(principal)
        _rate(record.get("produce_bytes_per_s"), "produce_bytes_per_s")
        _rate(record.get("fetch_bytes_per_s"), "fetch_bytes_per_s")
    else:
        raise ValueError(f"not a security record type: {kind!r:.80}")
    return record
