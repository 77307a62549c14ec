"""Which of a source topic's configs a mirror sets on its target topic.

Only what was set on the source topic is copied (its defaults are the source cluster's,
not this one's), and only what zbroker has a setting for (:data:`zbroker.config.TOPIC_CONFIG`):
a zbroker source names its overrides with zbroker's keys; a Kafka source with Kafka's names
and string values (``retention.ms = "86400000"``), which map to zbroker's keys by replacing
dots with underscores, except for the two below.  Kafka's ``9223372036854775807`` (never)
for ``flush.messages`` / ``flush.ms`` is zbroker's 0 (off).  A value zbroker's checker
refuses is not copied either; the caller logs what was left out.
"""

from __future__ import annotations

from typing import Any

from zbroker.config import INT64_MAX, TOPIC_CONFIG

#: Kafka names that are not zbroker's key with dots for underscores.
_KAFKA_NAMES = {"unclean.leader.election.enable": "unclean_leader_election", "zbroker.fsync": "fsync"}
_NEVER_IS_OFF = ("flush_messages", "flush_ms")


def _from_kafka(key: str, text: Any) -> Any:
    """Kafka's string for ``key`` as the type of zbroker's default (ValueError if it is not one)."""
    if not isinstance(text, str):
        raise ValueError(f"not a string: {text!r}")
    default, text = TOPIC_CONFIG[key][0], text.strip()
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"not true or false: {text!r}")
        return text.lower() == "true"
    if isinstance(default, int):
        value = int(text)
        return 0 if key in _NEVER_IS_OFF and value == INT64_MAX else value
    if isinstance(default, float):
        return float(text)
    return ",".join(item.strip() for item in text.split(","))


def target_configs(scheme: str, configs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The zbroker overrides for a target topic from a source topic's set configs, and the
    names of those left out (no such setting here, or a value zbroker refuses)."""
    out: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in configs.items():
        key = _KAFKA_NAMES.get(name, name.replace(".", "_")) if scheme == "kafka" else name
        if key not in TOPIC_CONFIG:
            skipped.append(name)
            continue
        try:
            out[key] = TOPIC_CONFIG[key][1](_from_kafka(key, value) if scheme == "kafka" else value)
        except ValueError:
            skipped.append(name)
    return out, skipped
