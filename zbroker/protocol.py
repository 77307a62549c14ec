"""The native wire protocol: message types, header codec and field schemas.

No sockets here (h11's rule): bytes in, values out.  A message on the wire is
a ZeroMQ multipart message::

    frame 0      msgpack map: {"v": 1, "type": "produce", "cid": 42, <fields>}
    frame 1..n   opaque payloads (record batches), referenced by position

Requests and responses share the layout; a response repeats the request's
``type`` and ``cid`` and adds ``error`` (0 = none) and, on failure,
``error_message``.  Each request type has a schema (field -> type, required,
default) that :func:`decode_request` checks, so a handler only ever sees
well-typed values and a bad field is answered with INVALID_REQUEST naming it.
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


# -- schemas ---------------------------------------------------------------------

_INT = (int,)
_STR = (str,)
_BOOL = (bool,)
_NONE = type(None)


@dataclass(frozen=True)
class Field:
    types: tuple[type, ...]
    required: bool = True
    default: Any = None
    item: dict[str, Field] | tuple[type, ...] | None = None  # schema of list items


def _f(*types: type, required: bool = True, default: Any = None, item=None) -> Field:
    return Field(tuple(types), required, default, item)


_TOPIC_PARTITION = {"topic": _f(str), "partition": _f(int)}

SCHEMAS: dict[str, dict[str, Field]] = {
    METADATA: {
        "topics": _f(list, _NONE, required=False, item=_STR),
        "allow_auto_create": _f(bool, required=False, default=False),
    },
    CREATE_TOPIC: {
        "topic": _f(str),
        "partitions": _f(int, _NONE, required=False),
        "replication_factor": _f(int, _NONE, required=False),
        "config": _f(dict, required=False, default={}),
        "validate_only": _f(bool, required=False, default=False),
    },
    DELETE_TOPIC: {"topic": _f(str)},
    DESCRIBE_TOPIC: {"topic": _f(str)},
    ALTER_TOPIC_CONFIG: {"topic": _f(str), "config": _f(dict)},
    PRODUCE: {
        "acks": _f(int, required=False, default=1),
        "timeout_ms": _f(int, required=False, default=30000),
        "batches": _f(list, item=_TOPIC_PARTITION),
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
        ),
    },
    LIST_OFFSETS: {
        "partitions": _f(list, item={**_TOPIC_PARTITION, "timestamp": _f(int)}),
    },
    CREATE_PARTITIONS: {"topic": _f(str), "total": _f(int)},
    INIT_PRODUCER_ID: {},
    FIND_COORDINATOR: {"group": _f(str)},
    GROUP_HEARTBEAT: {
        "group": _f(str),
        "member_id": _f(str, required=False, default=""),
        "member_epoch": _f(int),
        "instance_id": _f(str, _NONE, required=False),
        "client_id": _f(str, required=False, default=""),
        "topics": _f(list, _NONE, required=False, item=_STR),
        "owned": _f(list, _NONE, required=False, item=(list,)),
        "assignor": _f(str, _NONE, required=False),
        "rebalance_timeout_ms": _f(int, required=False, default=300000),
        "session_timeout_ms": _f(int, required=False, default=45000),
    },
    OFFSET_COMMIT: {
        "group": _f(str),
        "member_id": _f(str, required=False, default=""),
        "member_epoch": _f(int, required=False, default=-1),
        "offsets": _f(list, item={**_TOPIC_PARTITION, "offset": _f(int), "metadata": _f(str, required=False, default="")}),
    },
    OFFSET_FETCH: {"group": _f(str), "partitions": _f(list, _NONE, required=False, item=(list,))},
    LIST_GROUPS: {},
    DESCRIBE_GROUP: {"group": _f(str)},
    DELETE_GROUP: {"group": _f(str)},
    CREATE_INTERNAL_TOPIC: {"topic": _f(str), "partitions": _f(int), "replication_factor": _f(int), "config": _f(dict)},
    ALTER_ISR: {"topic": _f(str), "partition": _f(int), "leader": _f(int), "leader_epoch": _f(int), "isr": _f(list, item=(int,))},
}
SCHEMAS[API_VERSIONS] = {}  # no fields: the answer lists every request type with its version range

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
        "diverging": _f(list, _NONE, required=False, item=(int,)),
        "snapshot": _f(list, _NONE, required=False, item=(int,)),
    },
    RAFT_FETCH_SNAPSHOT: {**_RAFT, "snapshot": _f(list, item=(int,)), "position": _f(int)},
    RAFT_FETCH_SNAPSHOT_RESPONSE: {
        **_RAFT,
        **_LEADER,
        "error": _f(int, required=False, default=0),
        "snapshot": _f(list, item=(int,)),
        "position": _f(int),
        "size": _f(int),
    },
}
SCHEMAS.update(RAFT_SCHEMAS)


#: Requests only brokers may send (checked against the sender's ZeroMQ routing id).
BROKER_ONLY = frozenset({*RAFT_SCHEMAS, ALTER_ISR, CREATE_INTERNAL_TOPIC})


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


def _check(where: str, body: dict, schema: dict[str, Field]) -> dict:
    out = {}
    for name, field in schema.items():
        if name not in body:
            if field.required:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"missing field '{where}{name}'")
            out[name] = field.default
            continue
        value = body[name]
        if not _is(value, field.types):
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"field '{where}{name}' must be {_type_name(field.types)}, got {type(value).__name__}",
            )
        if field.item is not None and isinstance(value, list):
            value = [_check_item(f"{where}{name}[{i}].", v, field.item) for i, v in enumerate(value)]
        out[name] = value
    return out


def _check_item(where: str, value: Any, item) -> Any:
    if isinstance(item, dict):
        if not isinstance(value, dict):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"field '{where[:-1]}' must be a map, got {type(value).__name__}")
        return _check(where, value, item)
    if not _is(value, item):
        raise RequestError(
            ErrorCode.INVALID_REQUEST, f"field '{where[:-1]}' must be {_type_name(item)}, got {type(value).__name__}"
        )
    return value


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
            ErrorCode.UNSUPPORTED_VERSION, f"protocol version {version!r} not supported (this broker speaks {PROTOCOL_VERSION})"
        )
    kind = header.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown request type {kind!r}")
    return kind, _check("", header, schema)


def response(kind: str, cid: int, error: int = 0, error_message: str | None = None, **fields: Any) -> dict:
    """Build a response header map."""
    msg = {"v": PROTOCOL_VERSION, "type": kind, "cid": cid, "error": int(error)}
    if error_message:
        msg["error_message"] = error_message
    msg.update(fields)
    return msg


def request(kind: str, cid: int, **fields: Any) -> dict:
    """Build a request header map."""
    msg = {"v": PROTOCOL_VERSION, "type": kind, "cid": cid}
    msg.update(fields)
    return msg
