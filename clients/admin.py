"""Administrative client: topics and cluster description.

Every method is a blocking request to one broker (any broker can answer; on a
timeout or a broken connection the next known broker is tried).  Broker errors
are raised as :mod:`zbroker.errors` classes built by ``error_from(code, message)``.
Group administration (``describe_group``, ``list_groups``) arrives with consumer
groups and raises :class:`~zbroker.errors.InvalidGroupIdError` for now.
"""

from __future__ import annotations

import dataclasses
import time

from clients.connection import NetworkClient
from clients.metadata import MetadataManager
from clients.structs import BrokerInfo, ClusterDescription, GroupDescription, PartitionInfo, TopicDescription
from zbroker.errors import (
    ClientClosedError,
    ConnectionBrokenError,
    ErrorCode,
    InvalidGroupIdError,
    RequestTimeoutError,
    ZBrokerError,
)


#: Errors after which an admin request is retried (until request_timeout_ms): the
#: cluster is electing a controller.  Others (an unknown topic, say) are answers.
_RETRY_CODES = frozenset({ErrorCode.NOT_CONTROLLER, ErrorCode.REQUEST_TIMED_OUT, ErrorCode.COORDINATOR_NOT_AVAILABLE})


class Admin:
    """Creates, describes, alters and deletes topics; describes the cluster.

    Args:
        bootstrap: ``"host:port[,...]"``; None reads ``ZBROKER_BOOTSTRAP``.
        request_timeout_ms: deadline of each request (default 30000).
        client_id: sent to brokers with every request.
    """

    def __init__(self, bootstrap=None, request_timeout_ms: int = 30000, client_id: str | None = None) -> None:
        self.request_timeout_ms = request_timeout_ms
        self._net = NetworkClient(bootstrap, client_id, request_timeout_ms, name="zbroker-admin")
        self._meta = MetadataManager(self._net)
        self._closed = False

    def _call(self, kind: str, fields: dict) -> dict:
        if self._closed:
            raise ClientClosedError("admin client is closed")
        deadline = time.monotonic() + self.request_timeout_ms / 1000.0
        last: ZBrokerError | None = None
        while True:
            for address in self._meta.candidates():
                left = int((deadline - time.monotonic()) * 1000)
                if left <= 0:
                    raise last or RequestTimeoutError(f"{kind}: no broker answered")
                try:
                    header, _ = self._net.request(address, kind, fields, timeout_ms=left)
                    return header
                except (RequestTimeoutError, ConnectionBrokenError) as exc:
                    last = exc
                except ZBrokerError as exc:
                    # no controller yet, or a controller change under way: wait and retry
                    if exc.code not in _RETRY_CODES:
                        raise
                    last = exc
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                raise last or RequestTimeoutError(f"{kind}: no broker answered")
            time.sleep(0.05)

    def create_topic(self, name: str, partitions: int | None = None, replication_factor: int | None = None,
                     config: dict | None = None, validate_only: bool = False) -> None:
        """Create a topic; None values take the broker's ``[topic_defaults]``.

        Raises:
            TopicAlreadyExistsError, InvalidPartitionsError, InvalidReplicationFactorError,
            InvalidConfigError, InvalidTopicExceptionError.
        """
        fields = {"topic": name, "partitions": partitions, "replication_factor": replication_factor}
        if config:
            fields["config"] = dict(config)
        if validate_only:
            fields["validate_only"] = True
        self._call("create_topic", fields)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data.

        Raises:
            UnknownTopicOrPartitionError: no such topic.
        """
        self._call("delete_topic", {"topic": name})

    def list_topics(self, internal: bool = False) -> list[str]:
        """Sorted topic names (internal topics only with ``internal=True``)."""
        header = self._call("metadata", {"topics": None})
        return sorted(t["topic"] for t in header.get("topics") or () if internal or not t.get("internal"))

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (leader, replicas, ISR, offsets) and effective config of a topic.

        Raises:
            UnknownTopicOrPartitionError: no such topic.
        """
        h = self._call("describe_topic", {"topic": name})
        parts = sorted(
            (
                PartitionInfo(
                    p["partition"], p.get("leader", -1), list(p.get("replicas") or ()), list(p.get("isr") or ()),
                    p.get("leader_epoch", -1), p.get("log_start_offset", -1), p.get("high_watermark", -1),
                    p.get("log_end_offset", -1), p.get("error", 0),
                )
                for p in h.get("partitions") or ()
            ),
            key=lambda p: p.partition,
        )
        parts = self._fill_offsets(name, parts)
        return TopicDescription(h.get("topic", name), parts, dict(h.get("config") or {}), bool(h.get("internal")), list(h.get("overrides") or ()))

    def _fill_offsets(self, name: str, parts: list[PartitionInfo]) -> list[PartitionInfo]:
        """A broker knows the offsets of the partitions it leads only: ask the other leaders."""
        missing = [p for p in parts if p.high_watermark < 0 and p.leader >= 0]
        if not missing:
            return parts
        meta = self._call("metadata", {"topics": [name]})
        address = {b["id"]: f"{b['host']}:{b['port']}" for b in meta.get("brokers") or ()}
        found: dict[int, tuple[int, int]] = {}
        by_leader: dict[int, list[int]] = {}
        for p in missing:
            by_leader.setdefault(p.leader, []).append(p.partition)
        for leader, indexes in by_leader.items():
            if leader not in address:
                continue
            specs = [{"topic": name, "partition": i, "timestamp": ts} for i in indexes for ts in (-2, -1)]
            try:
                header, _ = self._net.request(address[leader], "list_offsets", {"partitions": specs}, timeout_ms=self.request_timeout_ms)
            except ZBrokerError:
                continue  # a leader that does not answer: its offsets stay unknown (-1)
            results = header.get("partitions") or ()
            for i, index in enumerate(indexes):
                start, end = results[2 * i], results[2 * i + 1]
                if not start.get("error") and not end.get("error"):
                    found[index] = (start["offset"], end["offset"])
        return [dataclasses.replace(p, log_start_offset=found[p.partition][0], high_watermark=found[p.partition][1])
                if p.partition in found else p for p in parts]

    def describe_cluster(self) -> ClusterDescription:
        """Cluster name, controller and brokers."""
        h = self._call("metadata", {"topics": []})
        brokers = sorted(
            (BrokerInfo(b["id"], b["host"], b["port"], bool(b.get("alive", True))) for b in h.get("brokers") or ()),
            key=lambda b: b.id,
        )
        return ClusterDescription(h.get("cluster_name", ""), h.get("controller", -1), h.get("controller_epoch", -1), brokers)

    def alter_topic_config(self, name: str, config: dict) -> None:
        """Set per-topic config overrides; a None value removes the override.

        Raises:
            InvalidConfigError: an unknown key or a bad value (named in the message).
        """
        self._call("alter_topic_config", {"topic": name, "config": dict(config)})

    def create_partitions(self, name: str, total: int) -> None:
        """Grow a topic to ``total`` partitions.

        Sends a ``create_partitions`` request (``topic``, ``total``); brokers that
        do not know the request answer INVALID_REQUEST, raised as InvalidRequestError.
        """
        self._call("create_partitions", {"topic": name, "total": int(total)})

    def describe_group(self, group: str) -> GroupDescription:
        """Not available yet: consumer groups arrive in a later version.

        Raises:
            InvalidGroupIdError: always.
        """
        raise InvalidGroupIdError("describe_group: consumer groups are not supported by this client yet")

    def list_groups(self) -> list[str]:
        """Not available yet: consumer groups arrive in a later version.

        Raises:
            InvalidGroupIdError: always.
        """
        raise InvalidGroupIdError("list_groups: consumer groups are not supported by this client yet")

    def close(self) -> None:
        """Release the sockets."""
        if not self._closed:
            self._closed = True
            self._net.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
