"""The ``[[bridge]]`` and ``[[mirror]]`` tables of a cluster config -> frozen dataclasses.

A bridge connects plain ZeroMQ sockets to topics (``socket`` pull, sub or xsub takes
frames in; pub or push sends records out); a mirror copies the topics of another cluster
into this one.  Both are named, and each acts as its own principal, ``Bridge:NAME``::

    [[bridge]]
    name = "sensors"
    socket = "pull"                  # pull | sub | xsub | pub | push
    endpoint = "tcp://127.0.0.1:7001"
    topic = "sensors"                # or topic_from = "frame0"
    key_from = "frame1"              # optional
    acks = "all"

    [[mirror]]
    name = "from-plant"
    source = "zbroker://10.0.0.5:9555"   # or kafka://host:9092
    topics = "plant\\\\..*"
    prefix = "plant-a."

Every mistake is a :class:`~zbroker.config_values.ConfigError` naming the file, the table
and the key (``cluster.toml: bridge[0].socket: must be one of 'pull', ...``), and a key
that belongs to the other direction (``replay`` on an ingest bridge) is refused by name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zbroker.config_values import ConfigError, _bool, _checked_table, _Checker, _choice, _int, _show, _str, _StrList, _Z85Key

INGEST_SOCKETS = ("pull", "sub", "xsub")
EGRESS_SOCKETS = ("pub", "push")
STARTS = ("latest", "earliest", "committed")
SCHEMES = ("zbroker", "kafka")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_ENDPOINT = re.compile(r"(tcp|ipc|inproc|pgm|epgm|vmci)://.+")
_FRAME = re.compile(r"frame(\d{1,3})")
_HOST_PORT = re.compile(r"[^\s,:/]+:\d{1,5}|\[[0-9a-fA-F:.]+\]:\d{1,5}")


class _Pattern(_Checker):
    def __init__(self, regex: re.Pattern, expected: str) -> None:
        self.regex, self.expected = regex, expected

    def fits(self, v: Any) -> bool:
        return isinstance(v, str) and self.regex.fullmatch(v) is not None


class _Acks(_Checker):
    expected = '0, 1 or "all"'

    def fits(self, v: Any) -> bool:
        return v in (0, 1, -1, "all") and not isinstance(v, bool)

    def __call__(self, v: Any) -> int:
        return -1 if super().__call__(v) == "all" else v


class _Regex(_Checker):
    expected = "a regular expression (Python syntax) matched against whole topic names"

    def __call__(self, v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise ValueError(f"must be {self.expected}, got {_show(v)}")
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression ({exc}): {_show(v)}") from None
        return v


class _Prefix(_Checker):
    expected = "a string of letters, digits, '.', '_' and '-' (what topic names are made of)"

    def fits(self, v: Any) -> bool:
        return isinstance(v, str) and (v == "" or _TOPIC.fullmatch(v) is not None)


class _SourceConfig(_Checker):
    expected = "a table of librdkafka properties whose values are strings, integers or booleans"

    def fits(self, v: Any) -> bool:
        return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, (str, int, bool)) for k, x in v.items())


_bridge_name = _Pattern(_NAME, "a name of letters, digits, '.', '_' and '-' (at most 100), starting with a letter or digit")
_topic = _Pattern(_TOPIC, "a topic name: 1 to 249 letters, digits, '.', '_' or '-'")
_frame = _Pattern(_FRAME, 'a frame of the message: "frame0", "frame1", ...')

#: keys of every [[bridge]] table: key -> (default, checker)
_COMMON = {
    "name": (None, _bridge_name),
    "socket": (None, _choice(*INGEST_SOCKETS, *EGRESS_SOCKETS)),
    "endpoint": (None, _Pattern(_ENDPOINT, 'a ZeroMQ endpoint such as "tcp://127.0.0.1:7001"')),
    "bind": (None, _bool),
    "broker": (None, _int(0, 2**31 - 1)),
    "curve": (None, _bool),
    "server_key": (None, _Z85Key()),
    "hwm": (1000, _int(1, 10_000_000)),
}
_INGEST = {
    "topic": (None, _topic),
    "topic_from": (None, _Pattern(re.compile("frame0"), '"frame0" (the first frame names the topic)')),
    "key_from": (None, _frame),
    "subscribe": ([""], _StrList(lambda s: True, 'a list of distinct subscription prefixes (strings; "" is everything)')),
    "acks": (-1, _Acks()),
}
_EGRESS = {
    "topics": (None, _StrList(_topic.fits, "a non-empty list of distinct topic names")),
    "start": (None, _choice(*STARTS)),  # default: "committed" for push (at-least-once), "latest" for pub
    "replay": (0, _int(0, 10_000)),  # records held per partition while a replay is read
}
_MIRROR = {
    "name": (None, _bridge_name),
    "source": (None, _str),
    "topics": (None, _Regex()),
    "prefix": ("", _Prefix()),
    "source_config": ({}, _SourceConfig()),
    "curve_server_key": (None, _Z85Key()),
    "curve_secret_key_file": (None, _str),
    "refresh_ms": (5000, _int(100, 3_600_000)),
}


@dataclass(frozen=True)
class BridgeConfig:
    """One ``[[bridge]]``: a plain ZeroMQ socket in (pull, sub, xsub) or out (pub, push)."""

    name: str
    socket: str
    endpoint: str
    bind: bool
    broker: int  # the broker that runs it: its endpoint is an address on that broker's host
    topic: str | None = None
    topic_from: str | None = None
    key_from: str | None = None
    subscribe: tuple[str, ...] = ("",)
    acks: int = -1
    topics: tuple[str, ...] = ()
    start: str = "latest"  # egress: "latest" | "earliest" | "committed"; config default: committed for push
    replay: int = 0
    curve: bool | None = None  # None: as [security] curve says
    server_key: bytes | None = None
    hwm: int = 1000

    @property
    def ingest(self) -> bool:
        return self.socket in INGEST_SOCKETS

    @property
    def principal(self) -> str:
        return f"Bridge:{self.name}"

    @property
    def key_frame(self) -> int | None:
        """The index of the key's frame, or None."""
        return None if self.key_from is None else int(self.key_from[5:])

    def uses_curve(self, security_curve: bool) -> bool:
        return security_curve if self.curve is None else self.curve


@dataclass(frozen=True)
class MirrorConfig:
    """One ``[[mirror]]``: the topics of another cluster copied into this one."""

    name: str
    source: str
    scheme: str  # "zbroker" | "kafka"
    bootstrap: str  # "host:port[,host:port]"
    topics: str  # a regex, matched against whole source topic names
    prefix: str = ""
    source_config: dict[str, Any] = field(default_factory=dict)
    curve_server_key: bytes | None = None
    curve_secret_key_file: str | None = None
    refresh_ms: int = 5000

    @property
    def principal(self) -> str:
        return f"Bridge:{self.name}"

    def matches(self, topic: str) -> bool:
        return re.fullmatch(self.topics, topic) is not None

    def target(self, topic: str) -> str:
        return self.prefix + topic


def parse_bridges(raw: Any, broker_ids: list[int], security_curve: bool, prefix: str) -> tuple[BridgeConfig, ...]:
    """The ``[[bridge]]`` tables (None: there are none)."""
    out = []
    for i, table in enumerate(_tables(raw, "bridge", prefix)):
        where = f"{prefix}bridge[{i}]"
        socket = table.get("socket") if isinstance(table, dict) else None
        if isinstance(table, dict):
            _checked_table({"socket": socket} if socket is not None else {}, {"socket": _COMMON["socket"]}, where, defaults=False)
        side = _INGEST if socket in INGEST_SOCKETS else _EGRESS
        other = _EGRESS if side is _INGEST else _INGEST
        if isinstance(table, dict):
            for key in table:
                if key in other and key not in side:
                    kind = "an ingest" if side is _INGEST else "an egress"
                    raise ConfigError(f"{where}.{key}: not a key of {kind} bridge (socket = {socket!r})")
        v = _checked_table(table, {**_COMMON, **side}, where, defaults=True)
        for key in ("name", "socket", "endpoint"):
            if v[key] is None:
                raise ConfigError(f"{where}.{key}: missing")
        where = f"{prefix}bridge[{i}] ({v['name']})"
        if v["broker"] is None:
            v["broker"] = min(broker_ids)
        elif v["broker"] not in broker_ids:
            raise ConfigError(f"{where}.broker: no broker with id {v['broker']} (ids: {', '.join(map(str, broker_ids))})")
        if v["bind"] is None:
            v["bind"] = v["socket"] != "sub"  # a SUB joins an existing PUB; the others stand as the fixed point
        if side is _INGEST:
            _check_ingest(v, where)
        else:
            _check_egress(v, where)
        if v["server_key"] is not None:
            if v["bind"]:
                raise ConfigError(f"{where}.server_key: only a connecting bridge (bind = false) names its server's key")
            v["server_key"] = v["server_key"].encode()
        if (security_curve if v["curve"] is None else v["curve"]) and not v["bind"] and v["server_key"] is None:
            raise ConfigError(f"{where}.server_key: missing: with CurveZMQ a connecting bridge needs the public key of the "
                              f"socket it connects to (or curve = false for an application that cannot speak CURVE)")
        if v["curve"] and not security_curve:
            raise ConfigError(f"{where}.curve: true needs [security] curve = true (the broker's keys and the ZAP handler)")
        out.append(BridgeConfig(**{k: (tuple(x) if isinstance(x, list) else x) for k, x in v.items()}))
    return tuple(out)


def _check_ingest(v: dict, where: str) -> None:
    if (v["topic"] is None) == (v["topic_from"] is None):
        raise ConfigError(f"{where}: set exactly one of topic (every record goes there) and topic_from = \"frame0\"")
    if v["key_from"] is not None and v["topic_from"] is not None and v["key_from"] == "frame0":
        raise ConfigError(f"{where}.key_from: frame0 names the topic (topic_from); the key is a later frame")
    if v["socket"] != "pull" and not v["subscribe"]:
        raise ConfigError(f"{where}.subscribe: empty: a {v['socket']} bridge with no subscription receives nothing; "
                          f'give at least one prefix ([""] subscribes to everything)')
    if v["socket"] == "pull" and v["subscribe"] != [""]:
        raise ConfigError(f"{where}.subscribe: a pull bridge has no subscriptions (only sub and xsub do)")


def _check_egress(v: dict, where: str) -> None:
    if not v["topics"]:
        raise ConfigError(f"{where}.topics: missing: the topics this bridge sends out")
    if v["start"] is None:  # a PUSH feeds work that must not be skipped; a PUB is a live feed
        v["start"] = "committed" if v["socket"] == "push" else "latest"
    if v["replay"] and v["socket"] != "pub":
        raise ConfigError(f"{where}.replay: only a pub bridge replays to new subscribers")


def parse_mirrors(raw: Any, prefix: str, base_dir: Path | None) -> tuple[MirrorConfig, ...]:
    """The ``[[mirror]]`` tables (None: there are none)."""
    out = []
    for i, table in enumerate(_tables(raw, "mirror", prefix)):
        where = f"{prefix}mirror[{i}]"
        v = _checked_table(table, _MIRROR, where, defaults=True)
        for key in ("name", "source", "topics"):
            if v[key] is None:
                raise ConfigError(f"{where}.{key}: missing")
        where = f"{prefix}mirror[{i}] ({v['name']})"
        scheme, sep, rest = v["source"].partition("://")
        hosts = rest.split(",") if sep else []
        if scheme not in SCHEMES or not hosts or not all(_HOST_PORT.fullmatch(h) for h in hosts):
            raise ConfigError(f"{where}.source: must be zbroker://HOST:PORT or kafka://HOST:PORT (several "
                              f"HOST:PORT separated by commas), got {_show(v['source'])}")
        if scheme == "zbroker" and v["source_config"]:
            raise ConfigError(f"{where}.source_config: librdkafka properties are for kafka:// sources")
        if scheme == "kafka" and (v["curve_server_key"] or v["curve_secret_key_file"]):
            raise ConfigError(f"{where}: curve_server_key and curve_secret_key_file are for zbroker:// sources "
                              f"(a kafka:// source takes source_config: security.protocol, sasl.*, ssl.*)")
        if (v["curve_server_key"] is None) != (v["curve_secret_key_file"] is None):
            raise ConfigError(f"{where}: curve_server_key and curve_secret_key_file go together: set both or neither")
        key_file = v["curve_secret_key_file"]
        if key_file is not None and base_dir is not None and not os.path.isabs(key_file):
            key_file = str(base_dir / key_file)
        out.append(MirrorConfig(v["name"], v["source"], scheme, rest, v["topics"], v["prefix"], dict(v["source_config"]),
                                v["curve_server_key"].encode() if v["curve_server_key"] else None, key_file, v["refresh_ms"]))
    return tuple(out)


def check_names(bridges: tuple[BridgeConfig, ...], mirrors: tuple[MirrorConfig, ...], prefix: str) -> None:
    """Bridge and mirror names are principals (``Bridge:NAME``) and group names: one each."""
    seen: set[str] = set()
    for kind, items in (("bridge", bridges), ("mirror", mirrors)):
        for i, item in enumerate(items):
            if item.name in seen:
                raise ConfigError(f"{prefix}{kind}[{i}].name: {item.name!r} is already the name of another bridge or mirror")
            seen.add(item.name)


def _tables(raw: Any, kind: str, prefix: str) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{prefix}{kind}: must be an array of tables ([[{kind}]])")
    return raw
