"""Kafka's config names and zbroker's settings: the one table the admin APIs share.

Kafka tools name a topic's settings with dots and send every value as a string
(``retention.ms = "604800000"``); zbroker keys them with underscores and keeps them typed
(``retention_ms = 604800000``, see :data:`zbroker.config.TOPIC_CONFIG`).  CreateTopics,
DescribeConfigs, AlterConfigs and IncrementalAlterConfigs all go through this module:

=================================  ==========================  ==================================
Kafka topic config                 zbroker key                 value conversion
=================================  ==========================  ==================================
cleanup.policy                     cleanup_policy              list: "compact", "delete",
                                                               "compact,delete" (either order)
retention.ms / retention.bytes     retention_ms / _bytes       long, -1 = unbounded
segment.bytes / segment.ms         segment_bytes / _ms         long
min.insync.replicas                min_insync_replicas         int
max.message.bytes                  max_message_bytes           int
flush.messages / flush.ms          flush_messages / flush_ms   long; Kafka's 9223372036854775807
                                                               ("never", its default) is zbroker's
                                                               0 (off); Kafka's 0 is refused
index.interval.bytes               index_interval_bytes        int
unclean.leader.election.enable     unclean_leader_election     "true" / "false"
delete.retention.ms                delete_retention_ms         long
min.cleanable.dirty.ratio          min_cleanable_dirty_ratio   double
zbroker.fsync                      fsync                       "never" / "always" (zbroker's own)
=================================  ==========================  ==================================

Kafka configs zbroker has no setting for are listed by DescribeConfigs **read-only** with
the value that describes what zbroker does (Kafka's default in each case):
``compression.type = producer`` (batches are stored as sent), ``message.timestamp.type =
CreateTime``, ``message.timestamp.before.max.ms`` and ``message.timestamp.after.max.ms`` =
9223372036854775807 (timestamps are not bounded), ``max.compaction.lag.ms`` =
9223372036854775807, ``min.compaction.lag.ms = 0``, ``segment.jitter.ms = 0``,
``segment.index.bytes = 10485760``, ``file.delete.delay.ms = 60000``, ``preallocate =
false``, ``remote.storage.enable = false``.  Setting one of them to that value is accepted
and changes nothing (tools that copy a topic's whole config set keep working); any other
value, and any name not in the table, is INVALID_CONFIG naming the config.

Broker resources are described from the cluster's config file (``log.retention.ms``,
``num.partitions``, ``auto.create.topics.enable``, ...), all read-only: zbroker's broker
settings change by editing the file, not through Kafka's API.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Iterable

from zbroker.config import CLUSTER_SETTINGS, INT64_MAX, TOPIC_CONFIG, TOPIC_CREATION_DEFAULTS, BrokerEntry, ClusterConfig
from zbroker.errors import ErrorCode, RequestError


class ConfigSource(enum.IntEnum):
    """Where a described value comes from (DescribeConfigs ``config_source``)."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5


class ConfigType(enum.IntEnum):
    """Kafka's type of a config (DescribeConfigs v3+ ``config_type``)."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7


class ResourceType(enum.IntEnum):
    """Kafka's config resource types."""

    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8


@dataclass(frozen=True)
class TopicConfigName:
    """One Kafka topic config.

    Attributes:
        name: Kafka's name.
        key: zbroker's :data:`TOPIC_CONFIG` key; None where zbroker has no such setting.
        type: Kafka's type of the value.
        broker_name: the broker-level default's name (reported as a synonym).
        fixed: for ``key`` None: the value reported, read-only.
        never_is_off: Kafka's Long.MAX ("never") is zbroker's 0 ("off").
        doc: one line for DescribeConfigs' documentation.
    """

    name: str
    key: str | None
    type: ConfigType
    broker_name: str | None = None
    fixed: str | None = None
    never_is_off: bool = False
    doc: str = ""


_NEVER = str(INT64_MAX)
_T = ConfigType

#: Every Kafka topic config this broker knows, in the order DescribeConfigs lists them.
TOPIC_CONFIG_NAMES: tuple[TopicConfigName, ...] = (
    TopicConfigName("cleanup.policy", "cleanup_policy", _T.LIST, "log.cleanup.policy",
                    doc="delete (retention), compact (latest record per key), or both"),
    TopicConfigName("compression.type", None, _T.STRING, "compression.type", fixed="producer",
                    doc="read-only: batches are stored as the producer compressed them"),
    TopicConfigName("delete.retention.ms", "delete_retention_ms", _T.LONG, "log.cleaner.delete.retention.ms",
                    doc="how long a compacted topic keeps tombstones"),
    TopicConfigName("file.delete.delay.ms", None, _T.LONG, "log.segment.delete.delay.ms", fixed="60000",
                    doc="read-only: Kafka's default; zbroker has no such setting"),
    TopicConfigName("flush.messages", "flush_messages", _T.LONG, "log.flush.interval.messages", never_is_off=True,
                    doc="fsync after this many records (9223372036854775807: never)"),
    TopicConfigName("flush.ms", "flush_ms", _T.LONG, "log.flush.interval.ms", never_is_off=True,
                    doc="fsync when the last one is this old (9223372036854775807: never)"),
    TopicConfigName("index.interval.bytes", "index_interval_bytes", _T.INT, "log.index.interval.bytes",
                    doc="bytes between offset index entries"),
    TopicConfigName("max.compaction.lag.ms", None, _T.LONG, "log.cleaner.max.compaction.lag.ms", fixed=_NEVER,
                    doc="read-only: zbroker does not force compaction by age"),
    TopicConfigName("max.message.bytes", "max_message_bytes", _T.INT, "message.max.bytes",
                    doc="largest record batch accepted"),
    TopicConfigName("message.timestamp.after.max.ms", None, _T.LONG, "log.message.timestamp.after.max.ms", fixed=_NEVER,
                    doc="read-only: zbroker does not bound record timestamps"),
    TopicConfigName("message.timestamp.before.max.ms", None, _T.LONG, "log.message.timestamp.before.max.ms", fixed=_NEVER,
                    doc="read-only: zbroker does not bound record timestamps"),
    TopicConfigName("message.timestamp.type", None, _T.STRING, "log.message.timestamp.type", fixed="CreateTime",
                    doc="read-only: records keep the producer's timestamps"),
    TopicConfigName("min.cleanable.dirty.ratio", "min_cleanable_dirty_ratio", _T.DOUBLE, "log.cleaner.min.cleanable.ratio",
                    doc="share of a compacted log that is dirty before it is cleaned"),
    TopicConfigName("min.compaction.lag.ms", None, _T.LONG, "log.cleaner.min.compaction.lag.ms", fixed="0",
                    doc="read-only: any record may be compacted"),
    TopicConfigName("min.insync.replicas", "min_insync_replicas", _T.INT, "min.insync.replicas",
                    doc="replicas that must have an acks=all write"),
    TopicConfigName("preallocate", None, _T.BOOLEAN, "log.preallocate", fixed="false",
                    doc="read-only: segments are not preallocated"),
    TopicConfigName("remote.storage.enable", None, _T.BOOLEAN, None, fixed="false",
                    doc="read-only: zbroker has no tiered storage"),
    TopicConfigName("retention.bytes", "retention_bytes", _T.LONG, "log.retention.bytes",
                    doc="bytes a partition keeps (-1: no bound)"),
    TopicConfigName("retention.ms", "retention_ms", _T.LONG, "log.retention.ms",
                    doc="how long records are kept (-1: forever)"),
    TopicConfigName("segment.bytes", "segment_bytes", _T.INT, "log.segment.bytes",
                    doc="size at which a segment rolls"),
    TopicConfigName("segment.index.bytes", None, _T.INT, "log.index.size.max.bytes", fixed="10485760",
                    doc="read-only: Kafka's default; zbroker sizes its indexes itself"),
    TopicConfigName("segment.jitter.ms", None, _T.LONG, "log.roll.jitter.ms", fixed="0",
                    doc="read-only: segments roll without jitter"),
    TopicConfigName("segment.ms", "segment_ms", _T.LONG, "log.roll.ms",
                    doc="age at which a segment rolls"),
    TopicConfigName("unclean.leader.election.enable", "unclean_leader_election", _T.BOOLEAN,
                    "unclean.leader.election.enable", doc="may a replica outside the ISR become leader"),
    TopicConfigName("zbroker.fsync", "fsync", _T.STRING, "zbroker.fsync",
                    doc="zbroker: 'always' fsyncs each append before it is acknowledged"),
)

BY_NAME: dict[str, TopicConfigName] = {c.name: c for c in TOPIC_CONFIG_NAMES}
BY_KEY: dict[str, TopicConfigName] = {c.key: c for c in TOPIC_CONFIG_NAMES if c.key}
_KEY_PATTERN = re.compile(r"\b(" + "|".join(sorted(BY_KEY, key=len, reverse=True)) + r")\b")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_POLICIES = ("delete", "compact")


def invalid(message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_CONFIG, message)


# -- values: Kafka's strings <-> zbroker's types ------------------------------------------

def to_kafka(key: str, value: Any) -> str | None:
    """A zbroker setting's value as Kafka writes it."""
    entry = BY_KEY[key]
    if value is None:
        return None
    if entry.never_is_off and value == 0:
        return _NEVER
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def from_kafka(entry: TopicConfigName, text: str | None) -> Any:
    """Kafka's string for ``entry`` as zbroker's typed value, checked by zbroker's own checker.

    Raises:
        RequestError: INVALID_CONFIG naming the config, the value and what it must be.
    """
    if text is None:
        raise invalid(f"{entry.name}: a null value cannot be set")
    text = text.strip()
    if entry.key is None:
        if text != entry.fixed:
            raise invalid(f"{entry.name}: zbroker has no such setting; only {entry.fixed!r} (what it does) is accepted, "
                          f"got {text!r}")
        return None
    if entry.type in (_T.INT, _T.LONG):
        if not _INTEGER.match(text):
            raise invalid(f"{entry.name}: must be an integer, got {text!r}")
        value: Any = int(text)
        if entry.never_is_off:
            if value == 0:
                raise invalid(f"{entry.name}: 0 is not accepted; use 1 or more, or {_NEVER} (the default) for never")
            value = 0 if value == INT64_MAX else value
    elif entry.type is _T.BOOLEAN:
        value = {"true": True, "false": False}.get(text.lower(), text)
    elif entry.type is _T.DOUBLE:
        try:
            value = float(text)
        except ValueError:
            raise invalid(f"{entry.name}: must be a number, got {text!r}") from None
    elif entry.type is _T.LIST:
        value = _policy(entry, _items(text))
    else:
        value = text
    try:
        return TOPIC_CONFIG[entry.key][1](value)
    except ValueError as exc:
        raise invalid(f"{entry.name}: {exc}") from None


def _items(text: str) -> list[str]:
    return list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def _policy(entry: TopicConfigName, items: list[str]) -> str:
    unknown = [i for i in items if i not in _POLICIES]
    if unknown or not items:
        raise invalid(f"{entry.name}: must list delete, compact or both, got {','.join(items) or 'nothing'!r}")
    return ",".join(items)


def lookup(name: str) -> TopicConfigName:
    """The table's entry for a Kafka topic config name.

    Raises:
        RequestError: INVALID_CONFIG for a name zbroker does not know.
    """
    entry = BY_NAME.get(name)
    if entry is None:
        raise invalid(f"unknown topic config {name!r}")
    return entry


def kafka_message(text: str) -> str:
    """A service's message with zbroker's setting keys in Kafka's names."""
    return _KEY_PATTERN.sub(lambda m: BY_KEY[m.group(1)].name, text)


# -- requests: what to set ---------------------------------------------------------------

def _unique(names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"config {name!r} is given more than once")
        seen.add(name)


def creation_overrides(configs: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """The zbroker overrides of a CreateTopics topic's ``configs`` (name, value) pairs."""
    configs = list(configs)
    _unique([name for name, _ in configs])
    out = {}
    for name, text in configs:
        entry = lookup(name)
        value = from_kafka(entry, text)
        if entry.key is not None:
            out[entry.key] = value
    return out


def replacement(current: dict[str, Any], configs: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """AlterConfigs (not incremental) replaces a topic's whole set of overrides: the change,
    as ``{key: value, or None to remove}``, that turns ``current`` into ``configs``.
    A null value leaves the config unset."""
    configs = list(configs)
    _unique([name for name, _ in configs])
    wanted = {}
    for name, text in configs:
        entry = lookup(name)
        if text is None:
            continue
        value = from_kafka(entry, text)
        if entry.key is not None:
            wanted[entry.key] = value
    return {**{key: None for key in current if key not in wanted}, **wanted}


class AlterOp(enum.IntEnum):
    """IncrementalAlterConfigs' operations."""

    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


def incremental(effective: dict[str, Any], ops: Iterable[tuple[str, int, str | None]]) -> dict[str, Any]:
    """IncrementalAlterConfigs' ``(name, operation, value)`` triples as the change
    ``{key: value, or None to remove}`` over a topic whose settings are ``effective``.

    APPEND and SUBTRACT work on list configs (``cleanup.policy``): an item already there is
    not appended twice, an item not there is not subtracted.  DELETE of a config that
    zbroker has no setting for changes nothing.

    Raises:
        RequestError: INVALID_REQUEST for a bad operation, a config given twice, or
            APPEND/SUBTRACT on a config that is not a list; INVALID_CONFIG for an unknown
            config or a bad value.
    """
    ops = list(ops)
    _unique([name for name, _, _ in ops])
    out: dict[str, Any] = {}
    for name, op, text in ops:
        entry = lookup(name)
        if op not in AlterOp.__members__.values():
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{name}: unknown config operation {op}")
        op = AlterOp(op)
        if op is AlterOp.DELETE:
            if entry.key is not None:
                out[entry.key] = None
            continue
        if op in (AlterOp.APPEND, AlterOp.SUBTRACT):
            if entry.type is not _T.LIST:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"{name} is not a list: {op.name} is only for list configs")
            if text is None:
                raise invalid(f"{entry.name}: a null value cannot be {op.name.lower()}ed")
            items = _items(str(effective.get(entry.key, "")))
            change = _items(text)
            items = items + [i for i in change if i not in items] if op is AlterOp.APPEND else [i for i in items if i not in change]
            out[entry.key] = _policy(entry, items)
            continue
        value = from_kafka(entry, text)
        if entry.key is not None:
            out[entry.key] = value
    return out


# -- DescribeConfigs -----------------------------------------------------------------------

def _entry(name, value, source, read_only, type_, synonyms, doc, with_synonyms, with_docs) -> dict:
    return {"name": name, "value": value, "read_only": read_only, "config_source": int(source), "is_sensitive": False,
            "is_default": source == ConfigSource.DEFAULT_CONFIG, "config_type": int(type_),
            "synonyms": synonyms if with_synonyms else [], "documentation": doc if with_docs else None}


def _synonym(name, value, source) -> dict:
    return {"name": name, "value": value, "source": int(source)}


def describe_topic(config: ClusterConfig, overrides: dict[str, Any], names: Iterable[str] | None = None,
                   synonyms: bool = False, documentation: bool = False) -> list[dict]:
    """DescribeConfigs entries of a topic with ``overrides`` (all of them, or those in
    ``names``: unknown names are left out, as Kafka does)."""
    wanted = None if names is None else set(names)
    out = []
    for c in TOPIC_CONFIG_NAMES:
        if wanted is not None and c.name not in wanted:
            continue
        if c.key is None:
            chain = [_synonym(c.broker_name or c.name, c.fixed, ConfigSource.DEFAULT_CONFIG)]
            out.append(_entry(c.name, c.fixed, ConfigSource.DEFAULT_CONFIG, True, c.type, chain, c.doc, synonyms, documentation))
            continue
        default, in_file = TOPIC_CONFIG[c.key][0], config.topic_defaults.get(c.key, TOPIC_CONFIG[c.key][0])
        chain = []
        if c.key in overrides:
            chain.append(_synonym(c.name, to_kafka(c.key, overrides[c.key]), ConfigSource.DYNAMIC_TOPIC_CONFIG))
        if in_file != default:
            chain.append(_synonym(c.broker_name, to_kafka(c.key, in_file), ConfigSource.STATIC_BROKER_CONFIG))
        chain.append(_synonym(c.broker_name, to_kafka(c.key, default), ConfigSource.DEFAULT_CONFIG))
        top = chain[0]
        out.append(_entry(c.name, top["value"], ConfigSource(top["source"]), False, c.type, chain, c.doc, synonyms, documentation))
    return out


def _broker_settings(config: ClusterConfig, broker: BrokerEntry | None) -> list[tuple[str, ConfigType, Any, Any, str]]:
    """(Kafka broker config, type, value in zbroker's terms, built-in default, doc)."""
    s, t = config.settings, config.topic_defaults
    listener = None if broker is None or not broker.kafka_port else f"PLAINTEXT://{broker.kafka_advertised_host}:{broker.kafka_port}"
    rf = config.default_replication_factor()
    rows = [
        ("auto.create.topics.enable", _T.BOOLEAN, s["auto_create_topics"], CLUSTER_SETTINGS["auto_create_topics"][0],
         "[cluster] auto_create_topics"),
        ("default.replication.factor", _T.INT, rf, min(3, len(config.brokers)), "[topic_defaults] replication_factor"),
        ("fetch.max.bytes", _T.INT, s["fetch_max_bytes"], CLUSTER_SETTINGS["fetch_max_bytes"][0], "[cluster] fetch_max_bytes"),
        ("group.max.session.timeout.ms", _T.INT, s["group_max_session_timeout_ms"],
         CLUSTER_SETTINGS["group_max_session_timeout_ms"][0], "[cluster] group_max_session_timeout_ms"),
        ("group.min.session.timeout.ms", _T.INT, s["group_min_session_timeout_ms"],
         CLUSTER_SETTINGS["group_min_session_timeout_ms"][0], "[cluster] group_min_session_timeout_ms"),
        ("num.partitions", _T.INT, t["partitions"], TOPIC_CREATION_DEFAULTS["partitions"][0], "[topic_defaults] partitions"),
        ("offsets.topic.num.partitions", _T.INT, s["offsets_topic_partitions"], CLUSTER_SETTINGS["offsets_topic_partitions"][0],
         "[cluster] offsets_topic_partitions"),
        ("replica.lag.time.max.ms", _T.LONG, s["replica_lag_ms"], CLUSTER_SETTINGS["replica_lag_ms"][0], "[cluster] replica_lag_ms"),
        ("socket.request.max.bytes", _T.INT, s["max_request_bytes"], CLUSTER_SETTINGS["max_request_bytes"][0],
         "[cluster] max_request_bytes"),
    ]
    if broker is not None:
        rows += [("broker.id", _T.INT, broker.id, None, "[[broker]] id"), ("node.id", _T.INT, broker.id, None, "[[broker]] id")]
        rows += [(name, _T.LIST, listener, None, "[[broker]] kafka_host, kafka_port") for name in ("advertised.listeners", "listeners")]
    for c in TOPIC_CONFIG_NAMES:
        if c.broker_name is None or c.broker_name in {r[0] for r in rows}:
            continue
        if c.key is None:
            rows.append((c.broker_name, c.type, c.fixed, c.fixed, c.doc))
        else:
            rows.append((c.broker_name, c.type, to_kafka(c.key, t[c.key]), to_kafka(c.key, TOPIC_CONFIG[c.key][0]),
                         f"[topic_defaults] {c.key}"))
    return sorted(rows)


def describe_broker(config: ClusterConfig, broker: BrokerEntry | None, names: Iterable[str] | None = None,
                    synonyms: bool = False, documentation: bool = False) -> list[dict]:
    """DescribeConfigs entries of a broker (or, ``broker`` None, the cluster-wide defaults),
    read-only: they come from the config file."""
    wanted = None if names is None else set(names)
    out = []
    for name, type_, value, default, doc in _broker_settings(config, broker):
        if wanted is not None and name not in wanted:
            continue
        text = value if value is None or isinstance(value, str) else ("true" if value is True else "false" if value is False else str(value))
        source = ConfigSource.DEFAULT_CONFIG if value == default else ConfigSource.STATIC_BROKER_CONFIG
        chain = [_synonym(name, text, source)]
        out.append(_entry(name, text, source, True, type_, chain, f"zbroker's {doc} (read-only)", synonyms, documentation))
    return out
