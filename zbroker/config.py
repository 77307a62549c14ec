"""Cluster configuration: one TOML file -> frozen dataclasses.

Layout of a config file (every section but ``[[broker]]`` optional)::

    [cluster]            name and cluster-wide broker settings (timeouts, limits)
    [[broker]]           one table per broker: id, host, port, gossip_port, peer_port, data_dir,
                         kafka_port, kafka_host, secret_key_file, public_key, kafka_tls_*
    [topic_defaults]     default topic settings; topics override them per key
    [security]           curve, authorized_keys_dir, super_users, kafka_sasl, cluster_secret
    [[bridge]]           plain ZeroMQ sockets in and out of topics (:mod:`zbroker.bridge_config`)
    [[mirror]]           topics copied from another cluster (:mod:`zbroker.bridge_config`)

Unknown keys, missing fields, wrong types, bad values, duplicate ids, duplicate
ports, shared data dirs and broken rules across keys (:data:`RULES`) are
:class:`ConfigError`, whose message names the file and the key, for example
``configs/x.toml: broker[1].port: must be an integer from 1 to 65535, got '95x'``.
Relative paths (``data_dir``, key and certificate files, ``authorized_keys_dir``) are
resolved against the config file's directory.

A setting is declared by one line ``"key": (default, checker)`` in
:data:`CLUSTER_SETTINGS` or :data:`TOPIC_CONFIG`, with a checker from :mod:`zbroker.config_values`
(``_int(lo, hi)``, ``_float(lo, hi)``, ``_bool``, ``_choice(...)``, ``_str``);
a rule that relates it to other keys is one entry of :data:`RULES`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from zbroker.bridge_config import BridgeConfig, MirrorConfig, check_names, parse_bridges, parse_mirrors
from zbroker.config_values import (  # noqa: F401  (ConfigError and INT64_MAX: re-exported for their callers)
    INT64_MAX,
    ConfigError,
    _bool,
    _checked_table,
    _choice,
    _float,
    _int,
    _Secret,
    _show,
    _SHOWN_CHARS,
    _str,
    _StrList,
    _Z85Key,
)

DEFAULT_PORT = 9555
DEFAULT_KAFKA_PORT = 9092
DEFAULT_DATA_DIR = "zbroker-data"


# -- topic settings ----------------------------------------------------------------

#: Per-topic settings: key -> (default, checker).  These keys are valid in
#: [topic_defaults], in `topics create --config` and in `topics alter --config`.
TOPIC_CONFIG: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "retention_ms": (604_800_000, _int(-1)),  # -1 = keep forever
    "retention_bytes": (-1, _int(-1)),  # -1 = no size bound
    "segment_bytes": (1_073_741_824, _int(1024)),
    "segment_ms": (604_800_000, _int(1)),
    "cleanup_policy": ("delete", _choice("delete", "compact", "compact,delete", "delete,compact")),
    "min_insync_replicas": (1, _int(1, 100)),  # and <= the replication factor (RULES)
    "max_message_bytes": (1_048_588, _int(64, 2**31 - 1)),  # and see RULES (max_request_bytes)
    "flush_messages": (0, _int(0)),  # 0 = no count-based fsync
    "flush_ms": (0, _int(0)),  # 0 = no time-based fsync
    "fsync": ("never", _choice("never", "always")),
    "index_interval_bytes": (4096, _int(1)),
    "unclean_leader_election": (False, _bool),
    "delete_retention_ms": (86_400_000, _int(0)),
    "min_cleanable_dirty_ratio": (0.5, _float(0.0, 1.0)),
}

#: Keys of [topic_defaults] that are creation defaults, not per-topic settings.
TOPIC_CREATION_DEFAULTS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "partitions": (3, _int(1, 100_000)),
    "replication_factor": (None, _int(1, 100)),  # None = min(3, number of brokers)
}


def check_topic_config(overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Check typed per-topic overrides (from a request or TOML) key by key; return them.

    Types are strict: ``"1000"`` is not an integer, ``True`` is not 1, ``1.0`` is not 1.

    Raises:
        ConfigError: naming the first unknown key, or the key, the value and the expected type.
    """
    out = {}
    for key, value in overrides.items():
        if key not in TOPIC_CONFIG:
            raise ConfigError(f"{where}{_show_key(key)}: unknown topic setting (known: {', '.join(sorted(TOPIC_CONFIG))})")
        try:
            out[key] = TOPIC_CONFIG[key][1](value)
        except ValueError as exc:
            raise ConfigError(f"{where}{key}: {exc}") from None
    return out


def topic_config_from_text(pairs: dict[str, Any]) -> dict[str, Any]:
    """Convert the text values of ``--config KEY=VALUE`` to their keys' types where they parse
    (``"1000"`` -> 1000, ``"true"`` -> True); anything else is left for the check to name."""
    return {k: TOPIC_CONFIG[k][1].from_text(v) if k in TOPIC_CONFIG and isinstance(v, str) else v
            for k, v in pairs.items()}


def validate_topic_config(overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Check per-topic overrides given as text or typed values; return them typed.

    Raises:
        ConfigError: naming the first unknown key or bad value.
    """
    return check_topic_config(topic_config_from_text(overrides), where)


def _show_key(key: Any) -> str:
    return key if isinstance(key, str) and len(key) <= _SHOWN_CHARS else _show(key)


# -- rules across keys ---------------------------------------------------------------------
# Checked when a config file is loaded (over [cluster], [topic_defaults] and the default
# replication factor) and when a topic is created or its config altered (over the cluster
# settings, the topic's effective settings and its replication factor).

MIN_REQUEST_BYTES = 8 << 20  # >= a follower's fetch reply frame (core.replication.PARTITION_FETCH_MAX_BYTES)
MAX_REQUEST_BYTES = 1 << 30  # one request is held in memory whole
REQUEST_HEADER_BYTES = 1 << 20  # room for a request's header frame next to its largest batch
FOLLOWER_FETCH_WAIT_MS = 500  # = core.replication.REPLICA_FETCH_MAX_WAIT_MS

#: (keys, holds(*values), why): the values of ``keys`` must satisfy ``holds``.
RULES: list[tuple[tuple[str, ...], Callable[..., bool], str]] = [
    (("heartbeat_ms", "session_timeout_ms"), lambda hb, session: session >= 2 * hb,
     "session_timeout_ms must be at least twice heartbeat_ms, or one late heartbeat declares a live broker dead"),
    (("group_min_session_timeout_ms", "group_max_session_timeout_ms"), lambda lo, hi: lo <= hi,
     "the minimum group session timeout must not exceed the maximum"),
    (("min_insync_replicas", "replication_factor"), lambda isr, rf: isr <= rf,
     "min_insync_replicas must not exceed the replication factor, or every acks=all produce fails NOT_ENOUGH_REPLICAS"),
    (("max_message_bytes", "max_request_bytes"), lambda batch, request: batch + REQUEST_HEADER_BYTES <= request,
     f"max_request_bytes must hold one max_message_bytes batch plus {REQUEST_HEADER_BYTES} bytes of request header"),
]


def broken_rule(values: dict[str, Any], label: Callable[[str], str] = str) -> str | None:
    """The first rule ``values`` break, as ``"k1=v1, k2=v2: why"`` (keys through ``label``);
    None if all hold.  A rule whose keys are not all in ``values`` is skipped."""
    for keys, holds, why in RULES:
        if all(k in values for k in keys) and not holds(*(values[k] for k in keys)):
            return f"{', '.join(f'{label(k)}={values[k]!r}' for k in keys)}: {why}"
    return None


# -- broker / cluster ----------------------------------------------------------------


@dataclass(frozen=True)
class BrokerEntry:
    """One [[broker]] table."""

    id: int
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    gossip_port: int = DEFAULT_PORT + 1
    data_dir: str = DEFAULT_DATA_DIR
    kafka_port: int | None = None  # the Kafka front door's TCP port; None: no Kafka listener
    kafka_host: str | None = None  # the address advertised to Kafka clients; None: ``host``
    peer_port: int = DEFAULT_PORT + 2  # the inter-broker ROUTER (replication, Raft, controller calls): CURVE always
    secret_key_file: str | None = None  # this broker's CURVE key pair (zmq.auth's NAME.key_secret); [security] curve
    public_key: str | None = None  # its public key, Z85 (40 characters): how the other brokers know it
    kafka_tls_cert_file: str | None = None  # PEM certificate chain: the Kafka listener speaks TLS
    kafka_tls_key_file: str | None = None  # PEM private key of that certificate

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kafka_advertised_host(self) -> str:
        return self.kafka_host or self.host


#: [cluster] keys: key -> (default, checker).
CLUSTER_SETTINGS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "name": ("zbroker", _str),
    "heartbeat_ms": (250, _int(10)),
    "session_timeout_ms": (3000, _int(100)),
    "election_timeout_ms": (1000, _int(50)),
    "replica_lag_ms": (10_000, _int(2 * FOLLOWER_FETCH_WAIT_MS)),  # > a follower's fetch wait
    "auto_create_topics": (True, _bool),
    "max_request_bytes": (104_857_600, _int(MIN_REQUEST_BYTES, MAX_REQUEST_BYTES)),
    "fetch_max_bytes": (52_428_800, _int(1024, 2**31 - 1)),  # cap of a fetch response's max_bytes
    "max_queued_reply_bytes": (67_108_864, _int(65_536, 2**40)),  # per connection: replies ZeroMQ has not yet written
    "max_open_files": (1024, _int(16)),
    "flush_check_ms": (1000, _int(10)),
    "retention_check_ms": (30_000, _int(100)),
    "metadata_snapshot_records": (10_000, _int(1)),
    "metadata_segment_bytes": (8 << 20, _int(1024)),
    "offsets_topic_partitions": (6, _int(1, 1000)),
    "group_min_session_timeout_ms": (1000, _int(100)),
    "group_max_session_timeout_ms": (300_000, _int(100)),
    # client quotas (security/quotas.py) and per-connection limits
    "quota_samples": (11, _int(2, 100)),  # a byte rate is measured over this many samples ...
    "quota_sample_ms": (1000, _int(10, 60_000)),  # ... of this long each (Kafka: 11 x 1 s)
    "quota_max_throttle_ms": (10_000, _int(0, 300_000)),  # the longest throttle answered
    "max_in_flight_per_connection": (100, _int(1, 100_000)),  # native door: answers owed to one connection
}

_BROKER_KEYS = {"id": _int(0, 2**31 - 1), "host": _str, "port": _int(1, 65535), "gossip_port": _int(1, 65535), "data_dir": _str,
                "kafka_port": _int(1, 65535), "kafka_host": _str, "peer_port": _int(1, 65535), "secret_key_file": _str,
                "public_key": _Z85Key(), "kafka_tls_cert_file": _str, "kafka_tls_key_file": _str}
_BROKER_PATHS = ("data_dir", "secret_key_file", "kafka_tls_cert_file", "kafka_tls_key_file")

#: SASL mechanisms the Kafka front door can offer.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _is_principal(text: str) -> bool:
    kind, _, name = text.partition(":")
    return kind in ("User", "Bridge") and bool(name)


#: [security] keys: key -> (default, checker).
SECURITY_SETTINGS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "curve": (False, _bool),  # CurveZMQ on every ZeroMQ socket; clients need a key in authorized_keys_dir
    "authorized_keys_dir": (None, _str),  # one public key file per client, NAME.key: principal User:NAME
    "super_users": ([], _StrList(_is_principal, 'a list of distinct principals such as ["User:admin"]')),
    "kafka_sasl": ([], _StrList(lambda m: m in SASL_MECHANISMS,
                                f"a list of distinct SASL mechanisms from {', '.join(SASL_MECHANISMS)}")),
    "cluster_secret": (None, _Secret()),  # authenticates brokers to each other while curve is off
}


@dataclass(frozen=True)
class SecurityConfig:
    """The [security] table.  Security is *on* (:attr:`enabled`) once clients
    authenticate on some door (``curve`` or ``kafka_sasl``): then what no ACL allows is
    denied.  Broker-to-broker traffic is authenticated whatever this says."""

    curve: bool = False
    authorized_keys_dir: str | None = None
    super_users: tuple[str, ...] = ()
    kafka_sasl: tuple[str, ...] = ()
    cluster_secret: str | None = dataclasses.field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.curve or bool(self.kafka_sasl)
#: Addresses that bind every interface but that no client can connect to.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_wildcard_host(host: str) -> bool:
    """Whether ``host`` is an address that binds every interface, in any spelling a socket
    accepts (``0.0.0.0``, ``0``, ``::``, ``[::]``, ``::0``, ``0:0::0``, ...)."""
    name = host.strip().removeprefix("[").removesuffix("]")
    if name in WILDCARD_HOSTS:
        return True
    try:
        return ipaddress.ip_address(name).is_unspecified
    except ValueError:
        pass
    try:  # inet_aton's short forms: "0", "0.0", "0x0", ...
        return socket.inet_aton(name) == bytes(4)
    except OSError:
        return False


@dataclass(frozen=True)
class ClusterConfig:
    """A whole config file."""

    brokers: tuple[BrokerEntry, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    topic_defaults: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    security: SecurityConfig = field(default_factory=SecurityConfig)
    bridges: tuple[BridgeConfig, ...] = ()
    mirrors: tuple[MirrorConfig, ...] = ()

    @property
    def name(self) -> str:
        return self.settings["name"]

    def broker(self, broker_id: int) -> BrokerEntry:
        for b in self.brokers:
            if b.id == broker_id:
                return b
        ids = ", ".join(str(b.id) for b in self.brokers)
        raise ConfigError(f"{self.source or 'config'}: no broker with id {broker_id} (ids: {ids})")

    def setting(self, key: str) -> Any:
        return self.settings[key]

    def default_partitions(self) -> int:
        return self.topic_defaults["partitions"]

    def default_replication_factor(self) -> int:
        rf = self.topic_defaults["replication_factor"]
        return rf if rf is not None else min(3, len(self.brokers))

    def topic_settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Effective settings of a topic: the broker defaults, then the topic's overrides."""
        out = {k: v for k, v in self.topic_defaults.items() if k in TOPIC_CONFIG}
        if overrides:
            out.update(overrides)
        return out

    def check_topic(self, overrides: dict[str, Any], replication_factor: int) -> None:
        """Check a topic's effective settings against the cluster's and its replication
        factor (:data:`RULES`); a value the topic inherits is marked ``(default)``.

        Raises:
            ConfigError: naming the keys and values of the first broken rule.
        """
        values = {**self.settings, **self.topic_settings(overrides), "replication_factor": replication_factor}
        inherited = set(self.topic_settings()) - set(overrides)
        problem = broken_rule(values, lambda k: f"{k} (default)" if k in inherited else k)
        if problem:
            raise ConfigError(problem)

    def inter_broker_problem(self) -> str | None:
        """Why the brokers of this config could not authenticate each other, or None.

        Brokers always talk to each other over CurveZMQ: with ``curve`` on, with their own
        keys; with it off, with keys derived from ``cluster_secret``.  A single broker needs
        neither."""
        if len(self.brokers) < 2:
            return None
        where = f"{self.source}: " if self.source else ""
        if self.security.curve:
            for i, b in enumerate(self.brokers):
                for key in ("secret_key_file", "public_key"):
                    if getattr(b, key) is None:
                        return (f"{where}broker[{i}].{key}: missing: with [security] curve = true every broker needs "
                                f"its own key pair (`zbroker keys generate broker{b.id}`)")
            return None
        if self.security.cluster_secret is None:
            return (f"{where}security.cluster_secret: missing: brokers authenticate each other with it (a client "
                    f"that knows no secret can never pose as a broker); set it to the same random string of 32+ "
                    f"characters in every broker's copy of this file, e.g. the output of "
                    f"`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return None

    def with_broker(self, broker_id: int, **changes: Any) -> ClusterConfig:
        """A copy with one broker's entry changed (for `serve --listen/--data-dir`)."""
        brokers = tuple(dataclasses.replace(b, **changes) if b.id == broker_id else b for b in self.brokers)
        return dataclasses.replace(self, brokers=brokers)


def parse_config(data: dict[str, Any], source: str | None = None, base_dir: Path | None = None) -> ClusterConfig:
    """Build a ClusterConfig from parsed TOML; ``source`` names the file in errors."""
    prefix = f"{source}: " if source else ""
    known = {"cluster", "broker", "topic_defaults", "security", "bridge", "mirror"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown section (known: {', '.join(sorted(known))})")
    security = _security(data.get("security", {}), f"{prefix}security", base_dir)
    settings = _checked_table(data.get("cluster", {}), CLUSTER_SETTINGS, f"{prefix}cluster", defaults=True)
    topic_schema = {**TOPIC_CONFIG, **TOPIC_CREATION_DEFAULTS}
    topic_defaults = _checked_table(data.get("topic_defaults", {}), topic_schema, f"{prefix}topic_defaults", defaults=True)

    raw_brokers = data.get("broker")
    if raw_brokers is None:
        raise ConfigError(f"{prefix}broker: missing: a config needs at least one [[broker]] table")
    if not isinstance(raw_brokers, list):
        raise ConfigError(f"{prefix}broker: must be an array of tables ([[broker]])")
    brokers = []
    seen_ids: set[int] = set()
    seen_ports: dict[tuple[str, int], str] = {}
    for i, raw in enumerate(raw_brokers):
        where = f"{prefix}broker[{i}]"
        entry = _checked_table(raw, _BROKER_KEYS, where, defaults=False)
        if "id" not in entry:
            raise ConfigError(f"{where}.id: missing")
        if entry["id"] in seen_ids:
            raise ConfigError(f"{where}.id: duplicate broker id {entry['id']}")
        seen_ids.add(entry["id"])
        entry.setdefault("host", "127.0.0.1")
        entry.setdefault("port", DEFAULT_PORT)
        entry.setdefault("gossip_port", entry["port"] + 1)
        entry.setdefault("peer_port", entry["port"] + 2)
        entry.setdefault("data_dir", f"{DEFAULT_DATA_DIR}/{entry['id']}")
        if "kafka_port" in entry and is_wildcard_host(entry.get("kafka_host", entry["host"])):
            raise ConfigError(f"{where}.kafka_host: Kafka clients are sent this address and cannot connect to "
                              f"{entry.get('kafka_host', entry['host'])!r}: set kafka_host to an address they can reach")
        if ("kafka_tls_cert_file" in entry) != ("kafka_tls_key_file" in entry):
            raise ConfigError(f"{where}: kafka_tls_cert_file and kafka_tls_key_file go together: set both or neither")
        if "kafka_tls_cert_file" in entry and "kafka_port" not in entry:
            raise ConfigError(f"{where}.kafka_tls_cert_file: set, but the broker has no kafka_port to serve TLS on")
        for key in ("port", "gossip_port", "peer_port", "kafka_port"):
            if key not in entry:
                continue
            addr = (entry.get("kafka_host", entry["host"]) if key == "kafka_port" else entry["host"], entry[key])
            if addr in seen_ports:
                raise ConfigError(f"{where}.{key}: port {entry[key]} on {entry['host']} is already used by {seen_ports[addr]}")
            seen_ports[addr] = f"broker[{i}].{key}"
        for key in _BROKER_PATHS:
            if base_dir is not None and key in entry and not os.path.isabs(entry[key]):
                entry[key] = str(base_dir / entry[key])
        brokers.append(BrokerEntry(**entry))
    if not brokers:
        raise ConfigError(f"{prefix}broker: a config needs at least one [[broker]] table")
    rf = topic_defaults["replication_factor"]
    if rf is not None and rf > len(brokers):
        raise ConfigError(f"{prefix}topic_defaults.replication_factor: {rf} exceeds the {len(brokers)} configured brokers")
    _check_data_dirs(brokers, prefix)
    bridges = parse_bridges(data.get("bridge"), [b.id for b in brokers], security.curve, prefix)
    mirrors = parse_mirrors(data.get("mirror"), prefix, base_dir)
    check_names(bridges, mirrors, prefix)
    config = ClusterConfig(tuple(brokers), settings, topic_defaults, source, security, bridges, mirrors)
    values = {**settings, **topic_defaults, "replication_factor": config.default_replication_factor()}
    problem = broken_rule(values, lambda k: f"cluster.{k}" if k in CLUSTER_SETTINGS else f"topic_defaults.{k}")
    if problem:
        raise ConfigError(f"{prefix}{problem}")
    return config


def _security(table: Any, where: str, base_dir: Path | None) -> SecurityConfig:
    values = _checked_table(table, SECURITY_SETTINGS, where, defaults=True)
    keys_dir = values["authorized_keys_dir"]
    if keys_dir is not None and base_dir is not None and not os.path.isabs(keys_dir):
        keys_dir = str(base_dir / keys_dir)
    if values["curve"] and keys_dir is None:
        raise ConfigError(f"{where}.authorized_keys_dir: missing: with curve = true, clients are admitted by their "
                          f"public key files in this directory (NAME.key: principal User:NAME)")
    return SecurityConfig(values["curve"], keys_dir, tuple(values["super_users"]), tuple(values["kafka_sasl"]),
                          values["cluster_secret"])


def _check_data_dirs(brokers: list[BrokerEntry], prefix: str) -> None:
    """Two brokers on one host must not share a data_dir, nor nest one inside the other."""
    for j, b in enumerate(brokers):
        for i, a in enumerate(brokers[:j]):
            if a.host != b.host:
                continue
            pa, pb = Path(os.path.normpath(a.data_dir)), Path(os.path.normpath(b.data_dir))
            if pa == pb or pa in pb.parents or pb in pa.parents:
                raise ConfigError(f"{prefix}broker[{j}].data_dir: {b.data_dir!r} overlaps broker[{i}].data_dir "
                                  f"{a.data_dir!r} on host {b.host}: each broker needs a directory of its own")


def load_config(path: str | os.PathLike) -> ClusterConfig:
    """Read and check a TOML config file.

    Raises:
        ConfigError: the file is missing, not TOML, or has a bad key or value.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path), base_dir=path.resolve().parent)


def single_node_config(data_dir: str = DEFAULT_DATA_DIR, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                       kafka: tuple[str, int] | None = None) -> ClusterConfig:
    """The config `zbroker serve` uses without --config: one broker, documented defaults;
    ``kafka`` = (host, port) of its Kafka listener, or None for none."""
    entry = {"id": 1, "host": host, "port": port, "gossip_port": port + 1, "peer_port": port + 2, "data_dir": data_dir}
    if kafka is not None:
        entry.update(kafka_host=kafka[0], kafka_port=kafka[1])
    return parse_config({"broker": [entry]})
