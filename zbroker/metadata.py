"""The metadata image: topics, their settings and their partitions' placement.

This is the broker's in-memory picture of the cluster that metadata requests are
answered from.  It is a plain value object: no files, no sockets.  On a single
node the image is stored in ``<data_dir>/meta/topics.json`` by
:class:`LocalMetadataStore`; in a cluster it is built by applying the committed
records of the replicated metadata log (see docs/architecture.md).

Topic names follow Kafka's rule: 1-249 characters from ``[A-Za-z0-9._-]``, not
``.`` or ``..``.  Names starting with ``__`` are reserved for internal topics.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from storage.checkpoint import write_atomic

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def topic_name_problem(name: str, allow_internal: bool = False) -> str | None:
    """Why ``name`` is not a valid topic name, or None if it is."""
    if not _TOPIC_NAME.match(name):
        return f"topic name {name!r} must be 1-249 characters from [A-Za-z0-9._-]"
    if name in (".", ".."):
        return f"topic name {name!r} is not allowed"
    if name.startswith("__") and not allow_internal:
        return f"topic name {name!r}: names starting with '__' are reserved for internal topics"
    return None


@dataclass
class PartitionMeta:
    """Placement of one partition."""

    partition: int
    replicas: list[int]
    leader: int
    leader_epoch: int = 0
    isr: list[int] = field(default_factory=list)


@dataclass
class TopicMeta:
    """A topic: its partitions and its per-topic setting overrides."""

    name: str
    partitions: list[PartitionMeta]
    overrides: dict[str, Any] = field(default_factory=dict)
    internal: bool = False

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


class MetadataImage:
    """All topics known to this broker, by name."""

    def __init__(self, topics: dict[str, TopicMeta] | None = None) -> None:
        self.topics: dict[str, TopicMeta] = topics or {}

    def get(self, name: str) -> TopicMeta | None:
        return self.topics.get(name)

    def partition(self, topic: str, partition: int) -> PartitionMeta | None:
        meta = self.topics.get(topic)
        if meta is None or not 0 <= partition < len(meta.partitions):
            return None
        return meta.partitions[partition]

    def add(self, topic: TopicMeta) -> None:
        self.topics[topic.name] = topic

    def remove(self, name: str) -> TopicMeta | None:
        return self.topics.pop(name, None)

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, "topics": [asdict(t) for t in self.topics.values()]}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> MetadataImage:
        try:
            doc = json.loads(data)
            if doc.get("version") != 1:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            topics = {}
            for t in doc["topics"]:
                parts = [PartitionMeta(**p) for p in t["partitions"]]
                topics[t["name"]] = TopicMeta(t["name"], parts, dict(t.get("overrides", {})), bool(t.get("internal", False)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}: corrupt metadata file: {exc}") from None
        return cls(topics)


class LocalMetadataStore:
    """Single-node persistence of the image: one JSON file, replaced atomically."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "meta" / "topics.json"

    def load(self) -> MetadataImage:
        if not self.path.exists():
            return MetadataImage()
        return MetadataImage.from_json(self.path.read_bytes(), str(self.path))

    def save(self, image: MetadataImage) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, image.to_json())
