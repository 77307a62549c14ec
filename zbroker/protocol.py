"""The native wire protocol: message types, header codec and field schemas.

No sockets here (h11's rule): bytes in, values out.  A message on the wire is
a ZeroMQ multipart message::

    frame 0      msgpack map: {"v": 1, "type": "produce", "cid": 42, <fields>}
    frame 1..n   opaque payloads (record batches), referenced by position

Requests and responses share the layout; a response repeats the request's
``type`` and ``cid`` and adds ``error`` (0 = none) and, on failure,
``error_message``.  Each request type has a schema (field -> type, required,
default, cap) that :func:`decode_request` checks, so a handler only ever sees
well-typed values of bounded size, and a bad field is answered with INVALID_REQUEST
naming it (and the cap it broke).  Values quoted back in errors are cut short
(:func:`clip`).
docs/protocol.md is the human-readable form of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from zbroker.errors import ErrorCode, RequestError  # noqa: F401  (RequestError: decode errors)

PROTOCOL_VERSION = 1

# Request types (the "type" field).  Responses carry the same string.
METADATA = "metadata"
CREATE_TOPIC = "create_topic"
DELETE_TOPIC = "delete_topic"
DESCRIBE_TOPIC = "describe_topic"
ALTER_TOPIC_CONFIG = "alter_topic_config"
PRODUCE = "produce"
FETCH = "fetch"
LIST_OFFSETS = "list_offsets"
CREATE_PARTITIONS = "create_partitions"
ALTER_ISR = "alter_isr"  # broker -> controller
INIT_PRODUCER_ID = "init_producer_id"
FIND_COORDINATOR = "find_coordinator"
GROUP_HEARTBEAT = "group_heartbeat"
OFFSET_COMMIT = "offset_commit"
OFFSET_FETCH = "offset_fetch"
LIST_GROUPS = "list_groups"
DESCRIBE_GROUP = "describe_group"
DELETE_GROUP = "delete_group"
CREATE_INTERNAL_TOPIC = "create_internal_topic"  # broker -> controller
ALTER_SECURITY = "alter_security"  # broker -> controller: security records to commit
API_VERSIONS = "api_versions"  # which request types and versions this broker serves

# Broker-to-broker Raft messages (zbroker.control.raft's types; one-way, never answered on the ROUTER).
RAFT_PRE_VOTE = "raft_pre_vote"
RAFT_PRE_VOTE_RESPONSE = "raft_pre_vote_response"
RAFT_VOTE = "raft_vote"
RAFT_VOTE_RESPONSE = "raft_vote_response"
RAFT_BEGIN_EPOCH = "raft_begin_epoch"
RAFT_FETCH = "raft_fetch"
RAFT_FETCH_RESPONSE = "raft_fetch_response"
RAFT_FETCH_SNAPSHOT = "raft_fetch_snapshot"
RAFT_FETCH_SNAPSHOT_RESPONSE = "raft_fetch_snapshot_response"

# acks on the wire, as in Kafka: 0 = no response, 1 = leader wrote it, -1 = all in-sync replicas.
ACKS_ALL = -1

# list_offsets special timestamps (Kafka's values).
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


class UndecodableFrame(Exception):
    """Frame 0 is not a msgpack map with a usable correlation id: nobody to answer."""


# -- limits ----------------------------------------------------------------------
# Every cap of a request field (docs/protocol.md, "Limits"), checked by the schema
# checker in one place: over a cap is INVALID_REQUEST naming the field and the cap.

MAX_TOPIC_CHARS = 249  # Kafka's cap on a topic name
MAX_ID_CHARS = 255  # group, member_id, instance_id, client_id, assignor and any other string
MAX_COMMIT_METADATA_CHARS = 4096  # offset_commit metadata: Kafka's offset.metadata.max.bytes
MAX_PARTITIONS = 10_000  # partitions of a fetch, list_offsets, offset_fetch; offsets of a commit; owned
MAX_BATCHES = 10_000  # batches of one produce
MAX_TOPICS = 10_000  # topics of a metadata request or a heartbeat
MAX_CONFIG_ENTRIES = 64  # keys of a create_topic / alter_topic_config / create_internal_topic config
MAX_BROKER_LIST = 256  # broker-to-broker lists: an ISR, Raft positions
MAX_ECHO_CHARS = 64  # a value from the request quoted in an error or a log line is cut to this
MAX_ERROR_MESSAGE_CHARS = 1024  # error_message is cut to this, whatever produced it


def clip(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """A short, bounded repr of a value taken from a request, for error messages and logs.

    >>> clip("x" * 100, 4)
    "'xxxx'... (100 chars)"
    """
    if isinstance(value, (str, bytes)):
        if len(value) <= limit:
            return repr(value)
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}... ({len(value)} {unit})"
    if isinstance(value, (list, dict)):
        return f"{_type_name((type(value),))} of {len(value)} items"
    text = repr(value)  # numbers, bools, nil, floats: short, except huge ints
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def clip_message(message: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """An error message cut to ``limit`` chars (the last defence: callers clip what they quote)."""
    return message if len(message) <= limit else f"{message[:limit]}... ({len(message)} chars)"


# -- schemas ---------------------------------------------------------------------

_NONE = type(None)


@dataclass(frozen=True)
class Field:
    """One field of a request.

    Attributes:
        types: the accepted Python types (bool is never an int here).
        required, default: a missing optional field gets ``default``.
        item: the schema of a list's items: a map schema or a :class:`Field`.
        cap: most chars of a string, most items of a list or map; None = the type's
            default (:data:`MAX_ID_CHARS`, :data:`MAX_PARTITIONS`).
        unique: for a list of maps, the keys whose values no two items may share.
    """

    types: tuple[type, ...]
    required: bool = True
    default: Any = None
    item: dict[str, Field] | Field | None = None
    cap: int | None = None
    unique: tuple[str, ...] | None = None


def _f(*types: type, required: bool = True, default: Any = None, item=None, cap: int | None = None,
       unique: tuple[str, ...] | None = None) -> Field:
    return Field(tuple(types), required, default, item, cap, unique)


_DEFAULT_CAPS = {str: MAX_ID_CHARS, list: MAX_PARTITIONS, dict: MAX_CONFIG_ENTRIES}
_INT = _f(int)
_TOPIC = _f(str, cap=MAX_TOPIC_CHARS)
_PAIR = _f(list, cap=2)  # [topic, partition]
_TOPIC_PARTITION = {"topic": _TOPIC, "partition": _f(int)}
_TP = ("topic", "partition")

SCHEMAS: dict[str, dict[str, Field]] = {
    METADATA: {
        "topics": _f(list, _NONE, required=False, item=_TOPIC, cap=MAX_TOPICS),
        "allow_auto_create": _f(bool, required=False, default=False),
    },
    CREATE_TOPIC: {
        "topic": _TOPIC,
        "partitions": _f(int, _NONE, required=False),
        "replication_factor": _f(int, _NONE, required=False),
        "config": _f(dict, required=False, default={}),
        "validate_only": _f(bool, required=False, default=False),
    },
    DELETE_TOPIC: {"topic": _TOPIC},
    DESCRIBE_TOPIC: {"topic": _TOPIC},
    ALTER_TOPIC_CONFIG: {"topic": _TOPIC, "config": _f(dict), "validate_only": _f(bool, required=False, default=False)},
    PRODUCE: {
        "acks": _f(int, required=False, default=1),
        "timeout_ms": _f(int, required=False, default=30000),
        # a partition may appear more than once: its batches are appended in order
        "batches": _f(list, item=_TOPIC_PARTITION, cap=MAX_BATCHES),
    },
    FETCH: {
        "max_wait_ms": _f(int, required=False, default=500),
        "min_bytes": _f(int, required=False, default=1),
        "max_bytes": _f(int, required=False, default=52428800),
        "replica_id": _f(int, required=False, default=-1),
        "partitions": _f(
            list,
            item={
                **_TOPIC_PARTITION,
                "offset": _f(int),
                "max_bytes": _f(int, required=False, default=1048576),
                "leader_epoch": _f(int, required=False, default=-1),  # followers: the epoch they follow
                "last_fetched_epoch": _f(int, required=False, default=-1),  # followers: epoch of their last record
            },
            unique=_TP,
        ),
    },
    LIST_OFFSETS: {
        # a partition may appear more than once (one entry per timestamp asked): each entry is
        # one index lookup answered on its own, so the cost is what the request carries
        "partitions": _f(list, item={**_TOPIC_PARTITION, "timestamp": _f(int)}),
    },
    CREATE_PARTITIONS: {"topic": _TOPIC, "total": _f(int), "validate_only": _f(bool, required=False, default=False)},
    INIT_PRODUCER_ID: {},
    FIND_COORDINATOR: {"group": _f(str)},
    GROUP_HEARTBEAT: {
        "group": _f(str),
        "member_id": _f(str, required=False, default=""),
        "member_epoch": _f(int),
        "instance_id": _f(str, _NONE, required=False),
        "client_id": _f(str, required=False, default=""),
        "topics": _f(list, _NONE, required=False, item=_TOPIC, cap=MAX_TOPICS),
        "owned": _f(list, _NONE, required=False, item=_PAIR),
        "assignor": _f(str, _NONE, required=False),
        "rebalance_timeout_ms": _f(int, required=False, default=300000),
        "session_timeout_ms": _f(int, required=False, default=45000),
    },
    OFFSET_COMMIT: {
        "group": _f(str),
        "member_id": _f(str, required=False, default=""),
        "member_epoch": _f(int, required=False, default=-1),
        "offsets": _f(list, item={**_TOPIC_PARTITION, "offset": _f(int),
                                  "metadata": _f(str, required=False, default="", cap=MAX_COMMIT_METADATA_CHARS)},
                      unique=_TP),
    },
    OFFSET_FETCH: {"group": _f(str), "partitions": _f(list, _NONE, required=False, item=_PAIR)},
    LIST_GROUPS: {},
    DESCRIBE_GROUP: {"group": _f(str)},
    DELETE_GROUP: {"group": _f(str)},
    CREATE_INTERNAL_TOPIC: {"topic": _TOPIC, "partitions": _f(int), "replication_factor": _f(int), "config": _f(dict)},
    ALTER_ISR: {"topic": _TOPIC, "partition": _f(int), "leader": _f(int), "leader_epoch": _f(int),
                "isr": _f(list, item=_INT, cap=MAX_BROKER_LIST)},
    ALTER_SECURITY: {"records": _f(list, item=_f(dict, cap=16), cap=1000)},
}
SCHEMAS[API_VERSIONS] = {}  # no fields: the answer lists every request type with its version range

# Client quotas (docs/protocol.md §4.15): byte rates per principal, in the metadata log.
DESCRIBE_QUOTAS = "describe_quotas"
ALTER_QUOTAS = "alter_quotas"
MAX_QUOTA_ENTRIES = 1000  # principals of one describe_quotas / alter_quotas
SCHEMAS[DESCRIBE_QUOTAS] = {"principals": _f(list, _NONE, required=False, item=_f(str), cap=MAX_QUOTA_ENTRIES)}
SCHEMAS[ALTER_QUOTAS] = {
    "entries": _f(list, cap=MAX_QUOTA_ENTRIES, unique=("principal",), item={
        "principal": _f(str),
        # Kafka's AlterClientQuotas ops: set ``key`` to ``value``, or remove it
        "ops": _f(list, cap=2, unique=("key",), item={"key": _f(str), "value": _f(int, float, _NONE, required=False),
                                                     "remove": _f(bool, required=False, default=False)}),
    }),
    "validate_only": _f(bool, required=False, default=False),
}

_RAFT = {"from": _f(int), "epoch": _f(int)}
_LOG_POSITION = {"last_epoch": _f(int), "end_offset": _f(int)}
_LEADER = {"leader": _f(int, _NONE, required=False)}
RAFT_SCHEMAS: dict[str, dict[str, Field]] = {
    RAFT_PRE_VOTE: {**_RAFT, "proposed": _f(int), **_LOG_POSITION},
    RAFT_PRE_VOTE_RESPONSE: {**_RAFT, "proposed": _f(int), "granted": _f(bool), **_LEADER},
    RAFT_VOTE: {**_RAFT, **_LOG_POSITION},
    RAFT_VOTE_RESPONSE: {**_RAFT, "granted": _f(bool), **_LEADER},
    RAFT_BEGIN_EPOCH: {**_RAFT, "leader": _f(int)},
    RAFT_FETCH: {**_RAFT, "offset": _f(int), "last_fetched_epoch": _f(int)},
    RAFT_FETCH_RESPONSE: {
        **_RAFT,
        **_LEADER,
        "error": _f(int, required=False, default=0),
        "offset": _f(int),
        "last_fetched_epoch": _f(int),
        "high_watermark": _f(int),
        "diverging": _f(list, _NONE, required=False, item=_INT, cap=MAX_BROKER_LIST),
        "snapshot": _f(list, _NONE, required=False, item=_INT, cap=MAX_BROKER_LIST),
    },
    RAFT_FETCH_SNAPSHOT: {**_RAFT, "snapshot": _f(list, item=_INT, cap=MAX_BROKER_LIST), "position": _f(int)},
    RAFT_FETCH_SNAPSHOT_RESPONSE: {
        **_RAFT,
        **_LEADER,
        "error": _f(int, required=False, default=0),
        "snapshot": _f(list, item=_INT, cap=MAX_BROKER_LIST),
        "position": _f(int),
        "size": _f(int),
    },
}
SCHEMAS.update(RAFT_SCHEMAS)


#: Requests only brokers may send: served only on the inter-broker listener (peer_port), from the broker they name.
BROKER_ONLY = frozenset({*RAFT_SCHEMAS, ALTER_ISR, CREATE_INTERNAL_TOPIC, ALTER_SECURITY})


def broker_identity(broker_id: int) -> bytes:
    """The routing id a broker's DEALERs use, so peers can tell broker traffic from clients'."""
    return b"zb-broker-%d" % broker_id


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", str: "string", bool: "boolean", list: "array", dict: "map", _NONE: "nil"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int subclass in Python; on the wire they are distinct types.
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _invalid(message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, message)


def _check(where: str, body: dict, schema: dict[str, Field]) -> dict:
    out = {}
    for name, field in schema.items():
        if name not in body:
            if field.required:
                raise _invalid(f"missing field '{where}{name}'")
            out[name] = field.default
            continue
        out[name] = _check_value(f"{where}{name}", body[name], field)
    return out


def _check_value(path: str, value: Any, field: Field) -> Any:
    """Type, cap, items and uniqueness of one value; ``path`` names it in errors."""
    if not _is(value, field.types):
        raise _invalid(f"field '{path}' must be {_type_name(field.types)}, got {type(value).__name__}")
    if isinstance(value, (str, list, dict)):
        cap = field.cap if field.cap is not None else _DEFAULT_CAPS[type(value)]
        if len(value) > cap:
            unit = "chars" if isinstance(value, str) else "items"
            raise _invalid(f"field '{path}' has {len(value)} {unit}, over the cap of {cap}")
    if isinstance(value, list) and field.item is not None:
        item = field.item
        if isinstance(item, Field):
            value = [_check_value(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
        else:
            value = [_check(f"{path}[{i}].", _map(f"{path}[{i}]", v), item) for i, v in enumerate(value)]
        if field.unique:
            _check_unique(path, value, field.unique)
    return value


def _map(path: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise _invalid(f"field '{path}' must be a map, got {type(value).__name__}")
    return value


def _check_unique(path: str, items: list[dict], keys: tuple[str, ...]) -> None:
    seen: dict[tuple, int] = {}
    for i, item in enumerate(items):
        key = tuple(item[k] for k in keys)
        first = seen.setdefault(key, i)
        if first != i:
            named = ", ".join(f"{k} {clip(v)}" for k, v in zip(keys, key))
            raise _invalid(f"field '{path}[{i}]' repeats {named} of '{path}[{first}]': each at most once per request")


# -- codec -----------------------------------------------------------------------

def encode(message: dict) -> bytes:
    """Encode a header map (frame 0)."""
    return msgpack.packb(message, use_bin_type=True)


def decode_header(frame: bytes, max_size: int = 1 << 20) -> dict:
    """Decode frame 0 into a map that has at least ``cid`` (an int).

    Raises:
        UndecodableFrame: not msgpack, not a map, or no integer ``cid``: the
            message cannot be answered, only dropped and logged.
    """
    if len(frame) > max_size:
        raise UndecodableFrame(f"header frame of {len(frame)} bytes exceeds {max_size}")
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise UndecodableFrame(f"header frame is not msgpack: {exc}") from None
    if not isinstance(header, dict):
        raise UndecodableFrame(f"header frame is a {type(header).__name__}, not a map")
    cid = header.get("cid")
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise UndecodableFrame("header frame has no integer 'cid'")
    return header


def check_fields(kind: str, header: dict) -> dict:
    """Check every field of a request of a known type against its schema.

    Returns:
        every schema field, defaults filled in.

    Raises:
        RequestError: INVALID_REQUEST naming the field.
    """
    return _check("", header, SCHEMAS[kind])


def decode_request(header: dict) -> tuple[str, dict]:
    """Check version, type and every field of a request header.

    Returns:
        (type, fields) where fields holds every schema field, defaults filled in.

    Raises:
        RequestError: UNSUPPORTED_VERSION or INVALID_REQUEST, naming what was wrong.
    """
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise RequestError(
            ErrorCode.UNSUPPORTED_VERSION, f"protocol version {clip(version)} not supported (this broker speaks {PROTOCOL_VERSION})"
        )
    kind = header.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise _invalid(f"unknown request type {clip(kind)}")
    return kind, _check("", header, schema)


def response(kind: str, cid: int, error: int = 0, error_message: str | None = None, **fields: Any) -> dict:
    """Build a response header map."""
    msg = {"v": PROTOCOL_VERSION, "type": kind, "cid": cid, "error": int(error)}
    if error_message:
        msg["error_message"] = clip_message(error_message)
    msg.update(fields)
    return msg


def request(kind: str, cid: int, **fields: Any) -> dict:
    """Build a request header map."""
    msg = {"v": PROTOCOL_VERSION, "type": kind, "cid": cid}
    msg.update(fields)
    return msg


# -- ACL management (docs/protocol.md, "ACL management"; docs/security.md, "ACLs") ------------

CREATE_ACLS = "create_acls"  # acls: [binding]; answered once committed
DESCRIBE_ACLS = "describe_acls"  # the fields of a filter; answers acls: [binding]
DELETE_ACLS = "delete_acls"  # filters: [filter]; answers deleted: [[binding], ...] once committed
MAX_ACLS = 1000  # bindings of one create_acls, filters of one delete_acls (one metadata-log commit)

_ACL_BINDING = {
    "principal": _f(str), "resource_type": _f(str), "name": _f(str, cap=MAX_TOPIC_CHARS),
    "pattern": _f(str, required=False, default="literal"), "operation": _f(str),
    "permission": _f(str, required=False, default="allow"), "host": _f(str, required=False, default="*"),
}
_ACL_FILTER = {name: _f(str, _NONE, required=False) for name in
               ("principal", "resource_type", "name", "operation", "permission", "host")}
_ACL_FILTER["pattern"] = _f(str, required=False, default="any")
SCHEMAS.update({
    CREATE_ACLS: {"acls": _f(list, item=_ACL_BINDING, cap=MAX_ACLS)},
    DESCRIBE_ACLS: dict(_ACL_FILTER),
    DELETE_ACLS: {"filters": _f(list, item=_ACL_FILTER, cap=MAX_ACLS)},
})


# -- users: SCRAM credentials for the Kafka door's SASL (docs/protocol.md §4.14) ---------------
# The client computes each credential (salt, iterations, StoredKey, ServerKey: RFC 5802) from the
# password, so neither the password nor anything a client could log in with crosses the wire.

UPSERT_USER = "upsert_user"  # set a user's credentials, replacing any it had
REMOVE_USER = "remove_user"
LIST_USERS = "list_users"  # names and mechanisms, never keys

MAX_USER_CHARS = 128  # a user name (its rule: zbroker.security.users)

SCHEMAS.update({
    UPSERT_USER: {
        "user": _f(str, cap=MAX_USER_CHARS),
        "credentials": _f(list, item={"mechanism": _f(str, cap=32), "salt": _f(bytes), "iterations": _f(int),
                                      "stored_key": _f(bytes), "server_key": _f(bytes)},
                          cap=2, unique=("mechanism",)),
    },
    REMOVE_USER: {"user": _f(str, cap=MAX_USER_CHARS)},
    LIST_USERS: {},
})

# Bridges and mirrors (docs/protocol.md §4.16, docs/bridge.md): what this broker runs, with
# counters, positions and lag.  ``zbroker bridge status`` asks every broker.
BRIDGE_STATUS = "bridge_status"
SCHEMAS[BRIDGE_STATUS] = {}
