"""Cluster configuration: one TOML file -> frozen dataclasses.

Layout of a config file (every section but ``[[broker]]`` optional)::

    [cluster]            name and cluster-wide broker settings (timeouts, limits)
    [[broker]]           one table per broker: id, host, port, gossip_port, data_dir
    [topic_defaults]     default topic settings; topics override them per key

Unknown keys, missing fields, wrong types, bad values, duplicate ids and
duplicate ports are :class:`ConfigError`, whose message names the file and
the key, for example ``configs/x.toml: broker[1].port: must be an integer
from 1 to 65535, got "95x"``.  Relative ``data_dir`` paths are resolved
against the config file's directory.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DEFAULT_PORT = 9555
DEFAULT_DATA_DIR = "zbroker-data"


class ConfigError(ValueError):
    """A configuration problem; the message names the file (if any) and the key."""


# -- value checkers --------------------------------------------------------------
# Each takes the raw value and returns it normalised, or raises ValueError with a
# phrase that completes "KEY: ...".


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, str) and v.strip().lstrip("-").isdigit():
                v = int(v)
            else:
                raise ValueError(f"must be an integer{_range(lo, hi)}, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f"must be an integer{_range(lo, hi)}, got {v!r}")
        return v

    return check


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    return ""


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        try:
            f = float(v) if not isinstance(v, bool) else None
        except (TypeError, ValueError):
            f = None
        if f is None or not lo <= f <= hi:
            raise ValueError(f"must be a number from {lo} to {hi}, got {v!r}")
        return f

    return check


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ValueError(f"must be true or false, got {v!r}")


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"must be one of {', '.join(repr(o) for o in options)}, got {v!r}")
        return v

    return check


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a non-empty string, got {v!r}")
    return v


# -- topic settings ----------------------------------------------------------------

#: Per-topic settings: key -> (default, checker).  These keys are valid in
#: [topic_defaults], in `topics create --config` and in `topics alter --config`.
TOPIC_CONFIG: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "retention_ms": (604_800_000, _int(-1)),  # -1 = keep forever
    "retention_bytes": (-1, _int(-1)),  # -1 = no size bound
    "segment_bytes": (1_073_741_824, _int(1024)),
    "segment_ms": (604_800_000, _int(1)),
    "cleanup_policy": ("delete", _choice("delete", "compact", "compact,delete", "delete,compact")),
    "min_insync_replicas": (1, _int(1)),
    "max_message_bytes": (1_048_588, _int(64)),
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


def validate_topic_config(overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Check per-topic overrides; return them normalised.

    Raises:
        ConfigError: naming the first unknown key or bad value.
    """
    out = {}
    for key, value in overrides.items():
        if key not in TOPIC_CONFIG:
            raise ConfigError(f"{where}{key}: unknown topic setting (known: {', '.join(sorted(TOPIC_CONFIG))})")
        try:
            out[key] = TOPIC_CONFIG[key][1](value)
        except ValueError as exc:
            raise ConfigError(f"{where}{key}: {exc}") from None
    return out


# -- broker / cluster ----------------------------------------------------------------


@dataclass(frozen=True)
class BrokerEntry:
    """One [[broker]] table."""

    id: int
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    gossip_port: int = DEFAULT_PORT + 1
    data_dir: str = DEFAULT_DATA_DIR

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


#: [cluster] keys: key -> (default, checker).
CLUSTER_SETTINGS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "name": ("zbroker", _str),
    "heartbeat_ms": (250, _int(10)),
    "session_timeout_ms": (3000, _int(100)),
    "election_timeout_ms": (1000, _int(50)),
    "replica_lag_ms": (10_000, _int(100)),
    "auto_create_topics": (True, _bool),
    "max_request_bytes": (104_857_600, _int(1024)),
    "fetch_max_bytes": (52_428_800, _int(1024)),  # cap of a fetch response's max_bytes
    "max_queued_reply_bytes": (67_108_864, _int(65_536)),  # per connection: replies ZeroMQ has not yet written
    "max_open_files": (1024, _int(16)),
    "flush_check_ms": (1000, _int(10)),
    "retention_check_ms": (30_000, _int(100)),
    "metadata_snapshot_records": (10_000, _int(1)),
    "metadata_segment_bytes": (8 << 20, _int(1024)),
    "offsets_topic_partitions": (6, _int(1, 1000)),
    "group_min_session_timeout_ms": (1000, _int(100)),
    "group_max_session_timeout_ms": (300_000, _int(100)),
}

_BROKER_KEYS = {"id": _int(0, 2**31 - 1), "host": _str, "port": _int(1, 65535), "gossip_port": _int(1, 65535), "data_dir": _str}


@dataclass(frozen=True)
class ClusterConfig:
    """A whole config file."""

    brokers: tuple[BrokerEntry, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    topic_defaults: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

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

    def with_broker(self, broker_id: int, **changes: Any) -> ClusterConfig:
        """A copy with one broker's entry changed (for `serve --listen/--data-dir`)."""
        brokers = tuple(dataclasses.replace(b, **changes) if b.id == broker_id else b for b in self.brokers)
        return dataclasses.replace(self, brokers=brokers)


def _checked_table(table: Any, schema: dict, where: str, defaults: bool) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    out = {}
    for key, value in table.items():
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(schema))})")
        checker = spec[1] if isinstance(spec, tuple) else spec
        try:
            out[key] = checker(value)
        except ValueError as exc:
            raise ConfigError(f"{where}.{key}: {exc}") from None
    if defaults:
        for key, spec in schema.items():
            out.setdefault(key, spec[0])
    return out


def parse_config(data: dict[str, Any], source: str | None = None, base_dir: Path | None = None) -> ClusterConfig:
    """Build a ClusterConfig from parsed TOML; ``source`` names the file in errors."""
    prefix = f"{source}: " if source else ""
    known = {"cluster", "broker", "topic_defaults"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown section (known: cluster, broker, topic_defaults)")
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
        entry.setdefault("data_dir", f"{DEFAULT_DATA_DIR}/{entry['id']}")
        for key in ("port", "gossip_port"):
            addr = (entry["host"], entry[key])
            if addr in seen_ports:
                raise ConfigError(f"{where}.{key}: port {entry[key]} on {entry['host']} is already used by {seen_ports[addr]}")
            seen_ports[addr] = f"broker[{i}].{key}"
        if base_dir is not None and not os.path.isabs(entry["data_dir"]):
            entry["data_dir"] = str(base_dir / entry["data_dir"])
        brokers.append(BrokerEntry(**entry))
    if not brokers:
        raise ConfigError(f"{prefix}broker: a config needs at least one [[broker]] table")
    rf = topic_defaults["replication_factor"]
    if rf is not None and rf > len(brokers):
        raise ConfigError(f"{prefix}topic_defaults.replication_factor: {rf} exceeds the {len(brokers)} configured brokers")
    return ClusterConfig(tuple(brokers), settings, topic_defaults, source)


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


def single_node_config(data_dir: str = DEFAULT_DATA_DIR, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> ClusterConfig:
    """The config `zbroker serve` uses without --config: one broker, documented defaults."""
    cfg = parse_config({"broker": [{"id": 1, "host": host, "port": port, "gossip_port": port + 1, "data_dir": data_dir}]})
    return cfg
