"""Cluster metadata cache and its refresh logic.

:class:`ClusterMetadata` is plain data: it takes a ``metadata`` response
(docs/protocol.md §4.1) and answers "how many partitions has topic T" and
"which broker address leads T-p".  Updates replace whole dicts under a lock,
so readers on other threads never see a half-applied response.

:class:`MetadataManager` fetches it: blocking (:meth:`refresh`, user threads)
or in the background (:meth:`request_update`, network thread, rate limited),
asking the known brokers and then the bootstrap list, moving on to the next
address when one times out or cannot be reached.
"""

from __future__ import annotations

import logging
import threading
import time

from clients.structs import BrokerInfo, PartitionInfo
from zbroker.errors import AuthenticationError, ConnectionBrokenError, RequestTimeoutError, ZBrokerError, error_from

log = logging.getLogger(__name__)


class ClusterMetadata:
    """What the client knows about brokers, topics and leaders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cluster_name = ""
        self.controller = -1
        self.controller_epoch = -1
        self.brokers: dict[int, BrokerInfo] = {}
        self.topics: dict[str, list[PartitionInfo]] = {}
        self.topic_errors: dict[str, int] = {}
        self.internal: set[str] = set()
        self.leaders: dict[tuple[str, int], str | None] = {}
        self.partition_counts: dict[str, int] = {}
        self.curve_keys: dict[str, str] = {}  # "host:port" -> the broker's CURVE public key (curve clusters)
        self.updated_at = 0.0
        self.version = 0

    def update(self, response: dict, all_topics: bool, now: float | None = None) -> None:
        """Apply a ``metadata`` response; ``all_topics`` replaces the topic set, else merges."""
        brokers = {}
        curve_keys = {}
        for b in response.get("brokers") or ():
            brokers[b["id"]] = BrokerInfo(b["id"], b["host"], b["port"], bool(b.get("alive", True)))
            if isinstance(b.get("curve_key"), str):
                curve_keys[f"{b['host']}:{b['port']}"] = b["curve_key"]
        with self._lock:
            topics = {} if all_topics else dict(self.topics)
            errors = {} if all_topics else dict(self.topic_errors)
            internal = set() if all_topics else set(self.internal)
            for t in response.get("topics") or ():
                name = t["topic"]
                err = t.get("error", 0)
                parts = sorted(
                    (
                        PartitionInfo(
                            p["partition"],
                            p.get("leader", -1),
                            list(p.get("replicas") or ()),
                            list(p.get("isr") or ()),
                            p.get("leader_epoch", -1),
                            error=p.get("error", 0),
                        )
                        for p in t.get("partitions") or ()
                    ),
                    key=lambda p: p.partition,
                )
                if err and not parts:
                    topics.pop(name, None)
                    errors[name] = err
                    internal.discard(name)
                    continue
                errors.pop(name, None)
                topics[name] = parts
                if t.get("internal"):
                    internal.add(name)
                else:
                    internal.discard(name)
            leaders = {}
            counts = {}
            for name, parts in topics.items():
                counts[name] = len(parts)
                for p in parts:
                    b = brokers.get(p.leader) if p.leader >= 0 else None
                    leaders[(name, p.partition)] = f"{b.host}:{b.port}" if b is not None else None
            self.cluster_name = response.get("cluster_name", "")
            self.controller = response.get("controller", -1)
            self.controller_epoch = response.get("controller_epoch", -1)
            self.brokers = brokers
            self.curve_keys = curve_keys
            self.topics, self.topic_errors, self.internal = topics, errors, internal
            self.leaders, self.partition_counts = leaders, counts
            self.updated_at = time.monotonic() if now is None else now
            self.version += 1

    def partition_count(self, topic: str) -> int | None:
        """Number of partitions of ``topic`` or None if unknown."""
        return self.partition_counts.get(topic)

    def leader(self, topic: str, partition: int) -> str | None:
        """``"host:port"`` of the partition's leader, or None if unknown/leaderless."""
        return self.leaders.get((topic, partition))

    def broker_addresses(self) -> list[str]:
        """Addresses of the known brokers, alive ones first."""
        bs = sorted(self.brokers.values(), key=lambda b: (not b.alive, b.id))
        return [f"{b.host}:{b.port}" for b in bs]


class MetadataManager:
    """Fetches metadata into a :class:`ClusterMetadata`.

    Args:
        net: the client's NetworkClient.
        backoff_ms: minimum spacing of background refreshes.
    """

    def __init__(self, net, backoff_ms: int = 100, request_timeout_ms: int | None = None) -> None:
        self.net = net
        self.cache = ClusterMetadata()
        self.backoff = backoff_ms / 1000.0
        self.timeout_ms = request_timeout_ms or net.request_timeout_ms
        self._inflight = False
        self._last_attempt = 0.0
        self._rotation = 0
        self.listeners: list = []  # called (in the network thread) after each background update

    def candidates(self) -> list[str]:
        """Addresses to ask, in order: known brokers then bootstrap entries."""
        seen = []
        for a in self.cache.broker_addresses() + self.net.bootstrap:
            if a not in seen:
                seen.append(a)
        return seen

    def refresh(self, topics: list[str] | None = None, allow_auto_create: bool = False, timeout_ms: int | None = None) -> dict:
        """Fetch metadata now (blocking; not from the network thread).

        Returns:
            The raw response header.

        Raises:
            ZBrokerError: every candidate failed; the last error is raised.
        """
        timeout_ms = timeout_ms or self.timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000.0
        fields = {"topics": topics}
        if allow_auto_create:
            fields["allow_auto_create"] = True
        last: ZBrokerError | None = None
        while True:
            refused: AuthenticationError | None = None
            for address in self.candidates():
                left = int((deadline - time.monotonic()) * 1000)
                if left <= 0:
                    break
                try:
                    header, _ = self.net.request(address, "metadata", fields, timeout_ms=min(left, max(1000, timeout_ms // 3)))
                except (RequestTimeoutError, ConnectionBrokenError) as exc:
                    last = exc
                    continue
                except AuthenticationError as exc:  # another broker may know this client (its key is its own)
                    refused = last = exc
                    continue
                self._apply(header, all_topics=topics is None)
                return header
            if refused is not None or time.monotonic() >= deadline:  # a refused key is not fixed by waiting
                raise last or RequestTimeoutError("metadata: no broker answered")
            time.sleep(0.05)

    def _apply(self, header: dict, all_topics: bool) -> None:
        self.cache.update(header, all_topics=all_topics)
        self.net.learn_server_keys(self.cache.curve_keys)

    def request_update(self, now: float | None = None) -> bool:
        """Start a background refresh of all topics unless one runs or ran just now.

        Safe from any thread; returns True if a request was sent.
        """
        now = time.monotonic() if now is None else now
        if self._inflight or now - self._last_attempt < self.backoff:
            return False
        cands = self.candidates()
        if not cands:
            return False
        self._inflight = True
        self._last_attempt = now
        address = cands[self._rotation % len(cands)]
        self.net.send(address, "metadata", {"topics": None}, (), self._on_response, timeout_ms=max(1000, self.timeout_ms // 3))
        return True

    def _on_response(self, header, _frames, exc) -> None:
        self._inflight = False
        if exc is None and header.get("error"):
            exc = error_from(header["error"], header.get("error_message"))
        if exc is not None:
            self._rotation += 1
            log.debug("metadata refresh failed: %s", exc)
            return
        self._apply(header, all_topics=True)
        for fn in self.listeners:
            try:
                fn()
            except Exception:
                log.exception("metadata listener failed")
