"""Administrative client: topics, cluster description, groups, and SASL users.

Every method is a blocking request to one broker (any broker can answer; on a
timeout or a broken connection the next known broker is tried).  Broker errors
are raised as :mod:`zbroker.errors` classes built by ``error_from(code, message)``.

Group requests (``describe_group``, ``delete_group``, ``offset_commit``) go to the
group's coordinator, found with ``find_coordinator`` and found again whenever a
broker answers COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE or
NOT_COORDINATOR.  ``list_groups`` asks every broker, since each one answers only
for the groups it coordinates.  Log offsets (lag, offset resets) come from each
partition's leader with ``list_offsets``.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

from clients.acls import AclBinding, AclFilter
from clients.bridges import bridge_status
from clients.connection import NetworkClient
from clients.metadata import MetadataManager
from clients.structs import (
    BrokerInfo,
    ClientQuota,
    ClusterDescription,
    GroupDescription,
    MemberInfo,
    OffsetInfo,
    PartitionInfo,
    TopicDescription,
)
from zbroker.errors import (
    ClientClosedError,
    ConnectionBrokenError,
    ErrorCode,
    InvalidGroupIdError,
    RequestTimeoutError,
    UnknownTopicOrPartitionError,
    ZBrokerError,
    error_from,
)


#: Errors after which an admin request is retried (until request_timeout_ms): the
#: cluster is electing a controller.  Others (an unknown topic, say) are answers.
_RETRY_CODES = frozenset({ErrorCode.NOT_CONTROLLER, ErrorCode.REQUEST_TIMED_OUT, ErrorCode.COORDINATOR_NOT_AVAILABLE})

#: Errors after which a group request looks for the group's coordinator again.
_REFIND_CODES = frozenset({ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NOT_COORDINATOR})

#: list_offsets special timestamps (Kafka's values).
_LATEST = -1
_EARLIEST = -2

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: How long list_groups waits for a broker the cluster reports as not alive.
_DEAD_BROKER_TIMEOUT_MS = 1000


def _describe_code(code: int) -> str:
    """``unknown topic or partition`` for UNKNOWN_TOPIC_OR_PARTITION, say."""
    try:
        return ErrorCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"error {code}"


def _datetime_ms(value) -> int:
    """Milliseconds since the epoch of a ``datetime`` or ISO-8601 string (naive = local time)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"to_datetime: not an ISO-8601 date/time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"to_datetime must be a datetime or an ISO-8601 string, got {value!r}")
    if value.tzinfo is None:
        value = value.astimezone()  # a naive datetime is local time
    micros = (value - _EPOCH) // timedelta(microseconds=1)
    ms = -(-micros // 1000)  # the first whole millisecond at or after it, without float rounding
    if ms < 0:
        raise ValueError(f"to_datetime: {value.isoformat()} is before 1970")
    return ms


class Admin:
    """Creates, describes, alters and deletes topics; describes the cluster and consumer groups.

    Args:
        bootstrap: ``"host:port[,...]"``; None reads ``ZBROKER_BOOTSTRAP``.
        request_timeout_ms: deadline of each request (default 30000).
        client_id: sent to brokers with every request.
        curve_secret_key_file: this client's CurveZMQ key pair (``NAME.key_secret``), for
            brokers with ``[security] curve = true``; None reads ``ZBROKER_CURVE_SECRET_KEY_FILE``.
        curve_server_key: the bootstrap broker's public key (Z85, or a ``.key`` file); the
            other brokers' come with the metadata.  None reads ``ZBROKER_CURVE_SERVER_KEY``.
    """

    def __init__(self, bootstrap=None, request_timeout_ms: int = 30000, client_id: str | None = None,
                 curve_secret_key_file: str | None = None, curve_server_key: str | bytes | None = None) -> None:
        self.request_timeout_ms = request_timeout_ms
        self._net = NetworkClient(bootstrap, client_id, request_timeout_ms, name="zbroker-admin",
                                  curve_secret_key_file=curve_secret_key_file, curve_server_key=curve_server_key)
        self._meta = MetadataManager(self._net)
        self._coordinators: dict[str, str] = {}  # group -> host:port of its coordinator, as last found
        self._closed = False

    def _call(self, kind: str, fields: dict) -> dict:
        """A request any broker can answer (admin requests reach the controller from any broker)."""
        if self._closed:
            raise ClientClosedError("admin client is closed")
        deadline = time.monotonic() + self.request_timeout_ms / 1000.0
        return self._request_until(kind, fields, deadline, self._meta.candidates, _RETRY_CODES)

    def _request_until(self, kind: str, fields: dict, deadline: float, addresses, retry_codes, on_retry=None) -> dict:
        """Ask the brokers ``addresses()`` names, in turn, until one answers.

        Timeouts, broken connections and answers with a code in ``retry_codes`` (no
        controller or coordinator yet, or it moved) are retried, with a short pause, until
        ``deadline``; ``on_retry()`` runs after each (e.g. to forget a coordinator that moved).
        Any other error is raised at once.
        """
        last: ZBrokerError | None = None
        while True:
            for address in addresses():
                left = self._remaining_ms(deadline, kind, last)
                try:
                    header, _ = self._net.request(address, kind, fields, timeout_ms=left)
                    return header
                except (RequestTimeoutError, ConnectionBrokenError) as exc:
                    last = exc
                except ZBrokerError as exc:
                    if exc.code not in retry_codes:
                        raise
                    last = exc
                    self._pause(deadline)
                if on_retry is not None:
                    on_retry()
            self._remaining_ms(deadline, kind, last)
            self._pause(deadline)

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
        """A broker reports the log positions only of the partitions it leads (-1 for the
        others): ask each other leader for its own, with ``describe_topic`` too."""
        missing = [p for p in parts if p.high_watermark < 0 and p.leader >= 0]
        if not missing:
            return parts
        meta = self._call("metadata", {"topics": [name]})
        address = {b["id"]: f"{b['host']}:{b['port']}" for b in meta.get("brokers") or ()}
        found: dict[int, dict] = {}
        for leader in sorted({p.leader for p in missing} & set(address)):
            try:
                header, _ = self._net.request(address[leader], "describe_topic", {"topic": name},
                                              timeout_ms=self.request_timeout_ms)
            except ZBrokerError:
                continue  # a leader that does not answer: its offsets stay unknown (-1)
            for entry in header.get("partitions") or ():
                if entry.get("leader") == leader and entry.get("high_watermark", -1) >= 0:
                    found[entry["partition"]] = entry
        return [dataclasses.replace(p, log_start_offset=found[p.partition]["log_start_offset"],
                                    high_watermark=found[p.partition]["high_watermark"],
                                    log_end_offset=found[p.partition]["log_end_offset"])
                if p.partition in found and p.high_watermark < 0 else p for p in parts]

    def api_versions(self) -> dict[str, tuple[int, int]]:
        """The request types a broker serves, each with its (min, max) protocol version."""
        h = self._call("api_versions", {})
        return {v["type"]: (v["min"], v["max"]) for v in h.get("versions") or ()}

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

    # -- consumer groups ------------------------------------------------------------

    def _remaining_ms(self, deadline: float, kind: str, last: ZBrokerError | None) -> int:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise last or RequestTimeoutError(f"{kind}: no broker answered")
        return left

    @staticmethod
    def _pause(deadline: float) -> None:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _find_coordinator(self, group: str, deadline: float) -> str:
        """``host:port`` of the broker coordinating ``group`` (retrying until ``deadline``)."""
        if group not in self._coordinators:
            header = self._request_until("find_coordinator", {"group": group}, deadline, self._meta.candidates, _REFIND_CODES)
            self._coordinators[group] = f"{header['host']}:{header['port']}"
        return self._coordinators[group]

    def _group_call(self, group: str, kind: str, fields: dict) -> dict:
        """A request to ``group``'s coordinator, finding it again when it moves; returns the header."""
        if self._closed:
            raise ClientClosedError("admin client is closed")
        if not isinstance(group, str) or not group:
            raise InvalidGroupIdError("group must be a non-empty string")
        deadline = time.monotonic() + self.request_timeout_ms / 1000.0
        return self._request_until(kind, fields, deadline, lambda: [self._find_coordinator(group, deadline)], _REFIND_CODES,
                                   on_retry=lambda: self._coordinators.pop(group, None))

    def _log_offsets(self, specs: list[tuple[str, int, int]], strict: bool) -> dict[tuple[str, int, int], int]:
        """``list_offsets`` at each partition's leader: {(topic, partition, timestamp): offset}.

        Retriable answers (no leader, leader moved) are asked again until the deadline.
        ``strict``: an unknown topic or partition or an unanswered leader raises;
        otherwise those specs are left out of the answer.
        """
        deadline = time.monotonic() + self.request_timeout_ms / 1000.0
        pending = list(dict.fromkeys(specs))
        found: dict[tuple[str, int, int], int] = {}
        last: ZBrokerError | None = None
        while pending:
            meta = self._call("metadata", {"topics": sorted({t for t, _, _ in pending})})
            address = {b["id"]: f"{b['host']}:{b['port']}" for b in meta.get("brokers") or ()}
            leaders: dict[tuple[str, int], int] = {}
            unsettled: set[str] = set()  # topics whose metadata is not ready yet
            for t in meta.get("topics") or ():
                if t.get("error"):
                    err = error_from(t["error"], f"topic {t['topic']!r}: {t.get('error_message') or _describe_code(t['error'])}")
                    if err.retriable:
                        unsettled.add(t["topic"])
                        last = err
                    elif strict:
                        raise err
                for p in t.get("partitions") or ():
                    leaders[(t["topic"], p["partition"])] = p.get("leader", -1)
            by_leader: dict[int, list[tuple[str, int, int]]] = {}
            retry: list[tuple[str, int, int]] = []
            for spec in pending:
                leader = leaders.get(spec[:2])
                if leader is None and spec[0] in unsettled:
                    retry.append(spec)
                    continue
                if leader is None:
                    if strict:
                        raise UnknownTopicOrPartitionError(f"no partition {spec[0]}-{spec[1]}")
                    continue
                if leader < 0 or leader not in address:
                    retry.append(spec)
                    continue
                by_leader.setdefault(leader, []).append(spec)
            for leader, group in by_leader.items():
                fields = {"partitions": [{"topic": t, "partition": p, "timestamp": ts} for t, p, ts in group]}
                try:
                    left = self._remaining_ms(deadline, "list_offsets", last)
                    header, _ = self._net.request(address[leader], "list_offsets", fields, timeout_ms=left)
                except ZBrokerError as exc:
                    last = exc
                    retry.extend(group)
                    continue
                for spec, result in zip(group, header.get("partitions") or ()):
                    code = result.get("error") or 0
                    if not code:
                        found[spec] = result["offset"]
                    elif error_from(code).retriable:
                        last = error_from(code, result.get("error_message"))
                        retry.append(spec)
                    elif strict:
                        raise error_from(code, f"partition {spec[0]}-{spec[1]}: {result.get('error_message') or _describe_code(code)}")
            pending = retry
            if pending:
                if time.monotonic() >= deadline:
                    if strict:
                        raise last or RequestTimeoutError("list_offsets: no leader answered")
                    break
                self._pause(deadline)
        return found

    def list_groups(self) -> list[str]:
        """Sorted names of every consumer group the cluster knows.

        Each broker answers only for the groups it coordinates, so every broker of
        the cluster is asked; brokers that do not answer are skipped.

        Raises:
            RequestTimeoutError (or the last error): no broker answered.
        """
        if self._closed:
            raise ClientClosedError("admin client is closed")
        meta = self._call("metadata", {"topics": []})
        brokers = meta.get("brokers") or ()
        names: set[str] = set()
        answered = 0
        last: ZBrokerError | None = None
        for b in sorted(brokers, key=lambda b: (not b.get("alive", True), b["id"])):
            timeout = self.request_timeout_ms if b.get("alive", True) else min(self.request_timeout_ms, _DEAD_BROKER_TIMEOUT_MS)
            try:
                header, _ = self._net.request(f"{b['host']}:{b['port']}", "list_groups", {}, timeout_ms=timeout)
            except ZBrokerError as exc:
                last = exc
                continue
            answered += 1
            names.update(g["group"] for g in header.get("groups") or ())
        if not answered:
            raise last or RequestTimeoutError("list_groups: no broker answered")
        return sorted(names)

    def describe_group(self, group: str) -> GroupDescription:
        """State, members (with their assignments) and per-partition offsets and lag of a group.

        ``offsets`` covers every partition with a committed offset or assigned to a
        member; the log end is each partition's high watermark, asked of its leader.

        Raises:
            GroupIdNotFoundError: no such group.  InvalidGroupIdError: an empty name.
        """
        h = self._group_call(group, "describe_group", {"group": group})
        members = [
            MemberInfo(
                m["member_id"], m.get("client_id") or "", [(t, p) for t, p in m.get("assignment") or ()],
                instance_id=m.get("instance_id"), topics=tuple(m.get("topics") or ()),
                member_epoch=m.get("member_epoch", 0), revoking=[(t, p) for t, p in m.get("revoking") or ()],
            )
            for m in h.get("members") or ()
        ]
        committed = {(o["topic"], o["partition"]): o["offset"] for o in h.get("offsets") or ()}
        tps = set(committed)
        for m in members:
            tps.update(m.assignment)
            tps.update(m.revoking)
        ends = self._log_offsets([(t, p, _LATEST) for t, p in sorted(tps)], strict=False) if tps else {}
        offsets: dict[tuple[str, int], OffsetInfo] = {}
        for tp in sorted(tps):
            c = committed.get(tp, -1)
            end = ends.get((tp[0], tp[1], _LATEST), -1)
            lag = -1 if end < 0 else (end - c if c >= 0 else end)
            offsets[tp] = OffsetInfo(c, end, lag)
        return GroupDescription(h.get("group", group), h.get("state", "unknown"), members, offsets,
                                group_epoch=h.get("group_epoch", 0), assignor=h.get("assignor"))

    def delete_group(self, group: str) -> None:
        """Delete a group and its committed offsets.

        Raises:
            NonEmptyGroupError: the group has members.  GroupIdNotFoundError: no such group.
        """
        self._group_call(group, "delete_group", {"group": group})

    def reset_offsets(self, group: str, topic: str, *, to_earliest: bool = False, to_latest: bool = False,
                      to_offset: int | None = None, to_datetime=None, partitions=None) -> dict[tuple[str, int], int]:
        """Set ``group``'s committed offsets of ``topic`` (every partition, or ``partitions``).

        Exactly one target: ``to_earliest`` (log start), ``to_latest`` (log end),
        ``to_offset`` (clamped into [log start, log end] per partition) or
        ``to_datetime`` (a ``datetime`` or an ISO-8601 string, naive = local time:
        the first offset with a timestamp at or after it, the log end if none).
        The group must have no members: stop its consumers first.

        Returns:
            {(topic, partition): the offset committed}.

        Raises:
            ValueError: not exactly one target, or a bad value.  NonEmptyGroupError: the
            group has active members.  UnknownTopicOrPartitionError: no such topic/partition.
        """
        targets = [to_earliest, to_latest, to_offset is not None, to_datetime is not None]
        if sum(bool(t) for t in targets) != 1:
            raise ValueError("reset_offsets: give exactly one of to_earliest, to_latest, to_offset, to_datetime")
        if to_offset is not None and (isinstance(to_offset, bool) or not isinstance(to_offset, int) or to_offset < 0):
            raise ValueError(f"to_offset must be an integer >= 0, got {to_offset!r}")
        if not isinstance(group, str) or not group:
            raise InvalidGroupIdError("group must be a non-empty string")
        ts_ms = None if to_datetime is None else _datetime_ms(to_datetime)
        if partitions is None:
            meta = self._call("metadata", {"topics": [topic]})
            entry = next((t for t in meta.get("topics") or () if t["topic"] == topic), None)
            if entry is None or entry.get("error"):
                code = (entry or {}).get("error") or ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                raise error_from(code, f"topic {topic!r}: {(entry or {}).get('error_message') or _describe_code(code)}")
            indexes = sorted(p["partition"] for p in entry.get("partitions") or ())
        else:
            indexes = sorted({int(p) for p in partitions})
            if not indexes:
                raise ValueError("reset_offsets: partitions is empty")
        if to_earliest:
            stamps = (_EARLIEST,)
        elif to_latest:
            stamps = (_LATEST,)
        elif to_offset is not None:
            stamps = (_EARLIEST, _LATEST)
        else:
            stamps = (ts_ms, _LATEST)
        got = self._log_offsets([(topic, i, ts) for i in indexes for ts in stamps], strict=True)
        new: dict[tuple[str, int], int] = {}
        for i in indexes:
            if to_earliest:
                offset = got[(topic, i, _EARLIEST)]
            elif to_latest:
                offset = got[(topic, i, _LATEST)]
            elif to_offset is not None:
                offset = max(got[(topic, i, _EARLIEST)], min(to_offset, got[(topic, i, _LATEST)]))
            else:
                at = got[(topic, i, ts_ms)]
                offset = at if at >= 0 else got[(topic, i, _LATEST)]
            new[(topic, i)] = offset
        fields = {"group": group, "member_id": "", "member_epoch": -1,
                  "offsets": [{"topic": t, "partition": p, "offset": o, "metadata": ""} for (t, p), o in new.items()]}
        h = self._group_call(group, "offset_commit", fields)
        for r in h.get("results") or ():
            if r.get("error"):
                raise error_from(r["error"], f"partition {r['topic']}-{r['partition']}: {r.get('error_message') or _describe_code(r['error'])}")
        return new

    # -- ACLs (docs/security.md, "ACLs") -------------------------------------------------

    def create_acls(self, acls) -> None:
        """Add ACL bindings (:class:`clients.acls.AclBinding`); returns once committed.
        Needs ALTER on the cluster.  Adding one that exists changes nothing."""
        self._call("create_acls", {"acls": [b.fields() for b in acls]})

    def describe_acls(self, acl_filter: AclFilter | None = None) -> list[AclBinding]:
        """The ACL bindings ``acl_filter`` matches (every one by default).  Needs DESCRIBE on
        the cluster."""
        h = self._call("describe_acls", (acl_filter or AclFilter()).fields())
        return [AclBinding.from_fields(b) for b in h.get("acls") or ()]

    def delete_acls(self, filters) -> list[AclBinding]:
        """Remove every binding one of ``filters`` (:class:`clients.acls.AclFilter`) matches;
        returns the bindings removed, once committed.  Needs ALTER on the cluster."""
        h = self._call("delete_acls", {"filters": [f.fields() for f in filters]})
        return list(dict.fromkeys(AclBinding.from_fields(b) for matched in h.get("deleted") or () for b in matched))
    # -- client quotas ------------------------------------------------------------------

    #: The quota principal of every principal without quotas of its own.
    DEFAULT_QUOTA = "<default>"
    _QUOTA_KEYS = ("produce_bytes_per_s", "fetch_bytes_per_s")

    def set_quota(self, principal: str, produce_bytes_per_s: float | None = None,
                  fetch_bytes_per_s: float | None = None) -> None:
        """Set byte-rate quotas of ``principal`` (``User:NAME``, or :attr:`DEFAULT_QUOTA`);
        a rate left None keeps its current value.  Needs ALTER on the cluster.

        Raises:
            ValueError: neither rate given.
        """
        values = dict(zip(self._QUOTA_KEYS, (produce_bytes_per_s, fetch_bytes_per_s)))
        ops = [{"key": key, "value": value} for key, value in values.items() if value is not None]
        if not ops:
            raise ValueError("set_quota: give produce_bytes_per_s, fetch_bytes_per_s or both")
        self._call("alter_quotas", {"entries": [{"principal": principal, "ops": ops}]})

    def remove_quota(self, principal: str, produce: bool = True, fetch: bool = True) -> None:
        """Remove ``principal``'s produce and/or fetch quota (it then falls back to the
        default's, if any).  Needs ALTER on the cluster."""
        ops = [{"key": key, "remove": True} for key, chosen in zip(self._QUOTA_KEYS, (produce, fetch)) if chosen]
        if ops:
            self._call("alter_quotas", {"entries": [{"principal": principal, "ops": ops}]})

    def list_quotas(self, principals: list[str] | None = None) -> list[ClientQuota]:
        """Every quota set (or those of ``principals``), sorted by principal.  Needs
        DESCRIBE on the cluster."""
        h = self._call("describe_quotas", {"principals": principals})
        return [ClientQuota(q["principal"], q.get("produce_bytes_per_s"), q.get("fetch_bytes_per_s"))
                for q in h.get("quotas") or ()]

    def bridge_status(self) -> list[dict]:
        """Every bridge and mirror of the cluster, as each broker reports it (docs/bridge.md)."""
        return bridge_status(self._net, self._meta, min(self.request_timeout_ms, 5000))

    def close(self) -> None:
        """Release the sockets."""
        if not self._closed:
            self._closed = True
            self._net.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- users: SCRAM credentials for the Kafka front door's SASL ------------------------

    def add_user(self, name: str, password: str, iterations: int = 4096,
                 mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512")) -> None:
        """Set user ``name``'s SCRAM credentials from ``password``, replacing any it had (how a
        password is changed).  The credentials (a random salt, ``iterations``, StoredKey and
        ServerKey, RFC 5802) are computed here: the password never leaves this process, and
        nothing sent would let anyone log in.  Kafka clients then log in as ``name`` with
        SCRAM-SHA-256, SCRAM-SHA-512, or PLAIN (checked against the same credentials).

        Raises:
            ValueError: an empty password, one SASLprep refuses, or ``iterations`` below 4096.
            InvalidRequestError: a name that is not a user name, ``iterations`` above the
                broker's bound.
            ClusterAuthorizationFailedError: no ALTER permission on the cluster.
        """
        from scramp import ScramException, ScramMechanism

        if not password:
            raise ValueError("add_user: the password is empty")
        credentials = []
        for mechanism in mechanisms:
            try:
                salt, stored_key, server_key, count = ScramMechanism(mechanism).make_auth_info(password, iterations)
            except ScramException as exc:
                raise ValueError(f"add_user: {exc}") from None
            credentials.append({"mechanism": mechanism, "salt": salt, "iterations": count, "stored_key": stored_key,
                                "server_key": server_key})
        self._call("upsert_user", {"user": name, "credentials": credentials})

    def remove_user(self, name: str) -> None:
        """Remove user ``name``: it can no longer log in, and its open Kafka connections are
        closed at their next request.

        Raises:
            ResourceNotFoundError: no such user.
            ClusterAuthorizationFailedError: no ALTER permission on the cluster.
        """
        self._call("remove_user", {"user": name})

    def list_users(self) -> dict[str, dict[str, int]]:
        """Every user: ``{name: {mechanism: iterations}}`` (never keys or salts).

        Raises:
            ClusterAuthorizationFailedError: no DESCRIBE permission on the cluster.
        """
        header = self._call("list_users", {})
        return {u["user"]: {m["mechanism"]: m["iterations"] for m in u.get("mechanisms") or ()}
                for u in header.get("users") or ()}
