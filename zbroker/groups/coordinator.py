"""The group coordinator: which broker coordinates a group, and the group requests.

A group's coordinator is the leader of partition ``murmur2(group) % N`` of the
internal topic ``__consumer_offsets`` (N = ``offsets_topic_partitions``; the
controller creates the topic, compacted and replicated like any other, on the
first ``find_coordinator``).  That partition is the group's durable state: every
change of a member's assignment or epoch, every committed offset, is a record
appended there and answered only once replicated (acks=all), so a new
coordinator -- the partition's next leader -- replays the log and carries on
with the same members, epochs, assignments and offsets.

Record keys and values (msgpack)::

    ["o", group, topic, partition] -> {"offset", "metadata", "ts"}       a committed offset
    ["m", group, member_id]        -> Member.to_record() | nil          a member (nil: removed)
    ["g", group]                   -> {"epoch"} | nil                   the group (nil: deleted)

The state machine itself is :mod:`zbroker.groups.group`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgpack

from storage import CorruptBatchError, DamagedRangeError, StorageError, build_native_batch, decode_native_records, iter_batches
from zbroker.config import ClusterConfig
from zbroker.context import Completion, RequestContext
from zbroker.control.controlplane import ControlPlane
from zbroker.control.topicadmin import OFFSETS_TOPIC, TopicAdmin
from zbroker.core.partition import Partition
from zbroker.core.partitions import PartitionManager
from zbroker.errors import ErrorCode, RequestError
from zbroker.groups.group import Group, GroupError, HeartbeatAnswer, Member, MemberHeartbeat
from zbroker.hashing import positive_hash_mod
from zbroker.purgatory import DelayedOperation, Purgatory

log = logging.getLogger(__name__)
_LOAD_RETRY_MS = 1000  # a load stopped by a read error is tried again this much later

GROUP_WRITE_TIMEOUT_MS = 10_000
TP = tuple[str, int]


# -- typed requests and answers --------------------------------------------------------

@dataclass(slots=True)
class Coordinator:
    broker_id: int
    host: str
    port: int


@dataclass(slots=True)
class HeartbeatResult:
    answer: HeartbeatAnswer
    heartbeat_interval_ms: int


@dataclass(slots=True)
class CommitOffset:
    topic: str
    partition: int
    offset: int
    metadata: str = ""


@dataclass(slots=True)
class OffsetCommit:
    group: str
    offsets: list[CommitOffset]
    member_id: str = ""
    member_epoch: int = -1  # -1 with no member id: an admin commit (the group must be empty)


@dataclass(slots=True)
class CommittedOffset:
    topic: str
    partition: int
    offset: int  # -1: none committed
    metadata: str = ""


@dataclass(slots=True)
class GroupListing:
    group: str
    state: str
    members: int


@dataclass(slots=True)
class MemberDetail:
    member_id: str
    instance_id: str | None
    client_id: str
    topics: list[str]
    member_epoch: int
    assignment: list[TP]
    revoking: list[TP]


@dataclass(slots=True)
class GroupDetail:
    group: str
    state: str
    group_epoch: int
    assignor: str | None
    members: list[MemberDetail] = field(default_factory=list)
    offsets: list[CommittedOffset] = field(default_factory=list)


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def checked_tps(name: str, pairs) -> list[TP] | None:
    """``(topic, partition)`` pairs as given by a front door, each checked to be a string
    and an integer (INVALID_REQUEST naming the first that is not); None stays None."""
    if pairs is None:
        return None
    out = []
    for i, tp in enumerate(pairs):
        if not (isinstance(tp, (list, tuple)) and len(tp) == 2 and isinstance(tp[0], str) and isinstance(tp[1], int)
                and not isinstance(tp[1], bool)):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"field '{name}[{i}]' must be [topic, partition]")
        out.append((tp[0], tp[1]))
    return out


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _check_tps(pairs, what: str) -> None:
    _check(pairs is None or (isinstance(pairs, list) and all(
        isinstance(tp, list) and len(tp) == 2 and isinstance(tp[0], str) and _is_int(tp[1]) for tp in pairs)),
        f"{what} must be a list of [topic, partition]")


def _group_record(key: bytes | None, value: bytes | None) -> tuple[list, dict | None]:
    """Unpack one ``__consumer_offsets`` record and check its shape (module docstring).

    Raises:
        ValueError (or msgpack's errors): naming what is wrong; nothing is applied then.
    """
    k = msgpack.unpackb(key, raw=False)
    v = None if value is None else msgpack.unpackb(value, raw=False)
    _check(isinstance(k, list) and len(k) >= 2 and isinstance(k[1], str) and k[1] != "", "key must be [kind, group, ...]")
    _check(v is None or isinstance(v, dict), "value must be a map or nil")
    kind = k[0]
    if kind == "o":
        _check(len(k) == 4 and isinstance(k[2], str) and _is_int(k[3]) and k[3] >= 0, "key must be ['o', group, topic, partition]")
        _check(v is None or (_is_int(v.get("offset")) and isinstance(v.get("metadata") or "", str)),
               "an offset value needs an integer 'offset' and a string 'metadata'")
    elif kind == "m":
        _check(len(k) == 3 and isinstance(k[2], str), "key must be ['m', group, member_id]")
        if v is not None:
            _check(v.get("member_id") == k[2], "a member value needs the key's 'member_id'")
            for name in ("instance_id", "assignor"):
                _check(v.get(name) is None or isinstance(v[name], str), f"member '{name}' must be a string or nil")
            _check(isinstance(v.get("client_id", ""), str), "member 'client_id' must be a string")
            _check(isinstance(v.get("topics") or [], list) and all(isinstance(t, str) for t in v.get("topics") or []),
                   "member 'topics' must be a list of strings")
            for name in ("rebalance_timeout_ms", "epoch", "session_ms"):
                _check(name not in v or _is_int(v[name]), f"member '{name}' must be an integer")
            for name in ("assigned", "revoking"):
                _check_tps(v.get(name), f"member '{name}'")
    elif kind == "g":
        _check(len(k) == 2 and (v is None or _is_int(v.get("epoch"))), "a group record is ['g', group] -> {epoch}")
    else:
        raise ValueError(f"unknown record kind {_short(repr(kind), 40)}")
    return k, v


class GroupCoordinator:
    """The groups whose ``__consumer_offsets`` partition this broker leads."""

    def __init__(self, config: ClusterConfig, broker_id: int, control: ControlPlane, partitions: PartitionManager,
                 admin: TopicAdmin, purgatory: Purgatory) -> None:
        self.config = config
        self.broker_id = broker_id
        self.control = control
        self.image = control.image
        self.partitions = partitions
        self.admin = admin
        self.purgatory = purgatory
        self.groups: dict[str, Group] = {}  # the groups this broker coordinates
        self.offsets: dict[str, dict[TP, tuple[int, str]]] = {}  # group -> {(topic, partition): (offset, metadata)}
        self._index: dict[str, int] = {}  # group -> its __consumer_offsets partition
        self.loaded: set[int] = set()  # __consumer_offsets partitions whose groups are loaded
        self._load_retry_ms: dict[int, int] = {}  # partition -> when to retry a load that stopped short

    # -- placement ---------------------------------------------------------------------

    def _offsets_partition_of(self, group: str) -> int:
        return positive_hash_mod(group.encode(), self.config.setting("offsets_topic_partitions"))

    def find_coordinator(self, ctx: RequestContext, group: str, now_ms: int) -> Coordinator:
        if not group:
            raise RequestError(ErrorCode.INVALID_GROUP_ID, "group must be a non-empty string")
        topic = self.image.get(OFFSETS_TOPIC)
        if topic is None:
            self.admin.ensure_offsets_topic(now_ms)
            raise RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "creating the offsets topic; retry")
        pm = topic.partitions[self._offsets_partition_of(group) % len(topic.partitions)]
        if pm.leader < 0:
            raise RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "the group's offsets partition has no leader; retry")
        b = self.config.broker(pm.leader)
        return Coordinator(b.id, b.host, b.port)

    def _group_partition(self, group: str, now_ms: int) -> Partition:
        """The offsets partition this broker coordinates ``group`` through, or NOT_COORDINATOR."""
        if not group:
            raise RequestError(ErrorCode.INVALID_GROUP_ID, "group must be a non-empty string")
        topic = self.image.get(OFFSETS_TOPIC)
        if topic is None:
            raise RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "no offsets topic yet")
        index = self._offsets_partition_of(group) % len(topic.partitions)
        part = self.partitions.get((OFFSETS_TOPIC, index))
        if part is None or not part.is_leader or not self.control.ready:
            raise RequestError(ErrorCode.NOT_COORDINATOR, f"broker {self.broker_id} does not coordinate group {group!r}")
        if not self.control.in_contact(now_ms):
            # maybe deposed without knowing: answering from memory could confirm an assignment
            # the new coordinator has already handed to another member
            raise RequestError(ErrorCode.NOT_COORDINATOR, f"broker {self.broker_id} lost contact with the controller")
        if index not in self.loaded:
            raise RequestError(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, "loading the group's state; retry")
        return part

    # -- loading ------------------------------------------------------------------------

    def sync(self, now_ms: int) -> None:
        """Load the groups of offsets partitions this broker now leads; drop the others."""
        # every loop turn: look up the offsets topic's few partitions, never walk every partition
        topic = self.image.get(OFFSETS_TOPIC)
        led = set()
        for index in range(topic.partition_count if topic is not None else 0):
            part = self.partitions.get((OFFSETS_TOPIC, index))
            if part is not None and part.is_leader:
                led.add(index)
        for index in sorted(self.loaded - led):
            self.loaded.discard(index)
            self._forget(index)
            log.info("no longer coordinating the groups of %s-%d", OFFSETS_TOPIC, index)
        for index in sorted(led - self.loaded):
            if now_ms >= self._load_retry_ms.get(index, now_ms):
                self._load(self.partitions.online[(OFFSETS_TOPIC, index)], index, now_ms)

    def _forget(self, index: int) -> None:
        """Drop the in-memory groups of offsets partition ``index``."""
        for name in [g for g, idx in self._index.items() if idx == index]:
            self.groups.pop(name, None)
            self.offsets.pop(name, None)
            del self._index[name]

    def _load(self, part: Partition, index: int, now_ms: int) -> None:
        """Replay the partition's records into the groups.  Never raises on bad data: a batch
        that does not decode, a record of the wrong shape and a range lost to disk damage are
        skipped, each with one ERROR line naming the partition and offsets; the load always
        moves forward, so it ends.  Only a load that reached the log end marks the partition
        loaded; one that stopped short (a read error) leaves no groups behind and is retried
        after ``_LOAD_RETRY_MS`` (its groups answer COORDINATOR_LOAD_IN_PROGRESS until then)."""
        lg, offset, count = part.log, part.log.log_start_offset, 0
        session = self.config.setting("group_max_session_timeout_ms")
        where = f"{OFFSETS_TOPIC}-{index}"
        while offset < lg.log_end_offset:
            try:
                data = lg.read(offset, 1 << 20).data
            except DamagedRangeError as exc:  # those offsets are gone; the records after them are not
                log.error("%s: offsets [%d, %d) are lost to disk damage; groups are loaded without the records "
                          "there", where, exc.start, exc.end)
                offset = max(exc.end, offset + 1)
                continue
            except (StorageError, OSError) as exc:
                log.error("cannot read %s at offset %d: %s; its groups are not loaded; retrying in %d ms",
                          where, offset, exc, _LOAD_RETRY_MS)
                break
            start = offset
            for pos, h in iter_batches(data):
                if h.next_offset <= offset:
                    continue  # a batch before the offset asked for (or one that takes no offsets)
                count += self._load_batch(data[pos : pos + h.size], h, where, index, now_ms, session)
                offset = h.next_offset
            if offset == start:  # nothing whole to read at this offset: the rest cannot be reached
                log.error("%s: no readable batch at offset %d (of %d); its groups are not loaded; retrying in %d ms",
                          where, offset, lg.log_end_offset, _LOAD_RETRY_MS)
                break
        if offset < lg.log_end_offset:
            self._forget(index)  # half a group's history must not be served as all of it
            self._load_retry_ms[index] = now_ms + _LOAD_RETRY_MS
            return
        self._load_retry_ms.pop(index, None)
        self.loaded.add(index)
        log.info("coordinating the groups of %s: %d records, %d groups", where, count,
                 sum(1 for i in self._index.values() if i == index))

    def _load_batch(self, batch, h, where: str, index: int, now_ms: int, session_ms: int) -> int:
        """Apply one batch's records; returns how many were applied (bad ones: one ERROR line)."""
        from storage.batch import decode_limit
        limit = decode_limit(self.partitions.online[(OFFSETS_TOPIC, index)].log.config.max_message_bytes)
        try:
            records = decode_native_records(batch, limit)
        except CorruptBatchError as exc:
            log.error("skipping an unreadable batch in %s at offsets %d-%d: %s", where, h.base_offset, h.last_offset,
                      _short(exc))
            return 0
        applied, bad, first = 0, 0, None
        for off, _ts, key, value, _hdr in records:
            try:
                self._apply_record(_group_record(key, value), index, now_ms, session_ms)
                applied += 1
            except Exception as exc:  # noqa: BLE001 -- one bad record must not lose the rest
                bad += 1
                first = first or (off, exc)
        if bad:
            log.error("skipping %d unreadable group record(s) in %s at offsets %d-%d (first at %d: %s)", bad, where,
                      h.base_offset, h.last_offset, first[0], _short(first[1]))
        return applied

    def _apply_record(self, record: tuple, index: int, now_ms: int, session_ms: int) -> None:
        """Apply one record checked by :func:`_group_record`; nothing changes if it raises."""
        key, value = record
        kind, group = key[0], key[1]
        if kind == "o":
            tp = (key[2], key[3])
            committed = None if value is None else (value["offset"], value.get("metadata") or "")
        elif kind == "m":
            member_id = key[2]
            # the session restarts here: a member's clock does not survive a coordinator move
            member = None if value is None else Member.from_record(value, now_ms,
                                                                   min(session_ms, value.get("session_ms", session_ms)))
        else:
            epoch = None if value is None else value["epoch"]
        self._index[group] = index
        g = self.groups.setdefault(group, Group(group))
        if kind == "o":
            if committed is None:
                self.offsets.get(group, {}).pop(tp, None)
            else:
                self.offsets.setdefault(group, {})[tp] = committed
        elif kind == "m":
            if member is None:
                g.members.pop(member_id, None)
            else:
                g.members[member_id] = member
        elif epoch is None:
            self.groups.pop(group, None)
            self.offsets.pop(group, None)
            self._index.pop(group, None)
        else:
            g.epoch = max(g.epoch, epoch)

    # -- writing ------------------------------------------------------------------------

    def _write(self, part: Partition, records: list[tuple[list, object]], now_ms: int) -> int:
        batch = build_native_batch([(now_ms, _pack(k), None if v is None else _pack(v), None) for k, v in records])
        info = part.log.append(batch, now_ms, leader_epoch=part.leader_epoch)
        self.partitions.changed(part, now_ms)
        return info.last_offset + 1

    def _when_replicated(self, part: Partition, end: int, now_ms: int, value) -> Completion:
        """A completion settled with ``value`` once ``end`` is below the partition's high
        watermark (or with an error)."""
        done: Completion = Completion()

        def settle(final: bool) -> bool:
            if not part.is_leader or self.partitions.get(part.tp) is not part:
                done.fail_with(ErrorCode.NOT_COORDINATOR, "the coordinator moved; retry")
            elif part.high_watermark >= end:
                done.complete(value)
            elif final:
                done.fail_with(ErrorCode.COORDINATOR_NOT_AVAILABLE, "could not replicate the group's state in time")
            else:
                return False
            return True

        self.purgatory.park(DelayedOperation(now_ms + GROUP_WRITE_TIMEOUT_MS, [part.tp], lambda now: settle(False),
                                             lambda now: settle(True)), now_ms)
        return done

    def _member_records(self, g: Group, changed, removed, session_ms: int) -> list:
        records = [(["g", g.group_id], {"epoch": g.epoch})]
        for mid in changed:
            m = g.members.get(mid)
            if m is not None:
                records.append((["m", g.group_id, mid], {**m.to_record(), "session_ms": session_ms}))
        records += [(["m", g.group_id, mid], None) for mid in removed]
        return records

    # -- requests -----------------------------------------------------------------------

    def _partitions_of(self, topic: str) -> int | None:
        meta = self.image.get(topic)
        return meta.partition_count if meta is not None else None

    def heartbeat(self, ctx: RequestContext, req: MemberHeartbeat, now_ms: int) -> HeartbeatResult | Completion[HeartbeatResult]:
        req.owned = checked_tps("owned", req.owned)
        if req.rebalance_timeout_ms is not None and req.rebalance_timeout_ms < 1000:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"rebalance_timeout_ms must be >= 1000, got {req.rebalance_timeout_ms}")
        part = self._group_partition(req.group, now_ms)
        lo, hi = self.config.setting("group_min_session_timeout_ms"), self.config.setting("group_max_session_timeout_ms")
        session = req.session_timeout_ms
        if not lo <= session <= hi:
            raise RequestError(ErrorCode.INVALID_SESSION_TIMEOUT, f"session_timeout_ms must be from {lo} to {hi}, got {session}")
        g = self.groups.get(req.group) or Group(req.group)
        epoch_before = g.epoch
        try:
            answer, changed, removed = g.heartbeat(req, now_ms, session, self._partitions_of)
        except GroupError as exc:
            if exc.removed:  # a fenced member is gone: persist that, the error is answered at once
                self._write(part, self._member_records(g, [], exc.removed, session), now_ms)
            raise RequestError(exc.code, exc.message) from None
        if not g.members and req.group not in self.groups:
            return HeartbeatResult(answer, 1000)  # a leave of nobody
        self.groups[req.group] = g  # only a request that succeeded creates a group
        self._index[req.group] = part.index
        result = HeartbeatResult(answer, max(100, min(3000, session // 3)))
        if not changed and not removed and g.epoch == epoch_before:
            return result
        end = self._write(part, self._member_records(g, changed, removed, session), now_ms)
        return self._when_replicated(part, end, now_ms, result)

    def expire_members(self, now_ms: int) -> None:
        for name, g in list(self.groups.items()):
            if not g.members:
                continue
            gone = g.expire(now_ms, self._partitions_of)
            if gone:
                log.info("group %s: removed members %s (session or rebalance timeout)", name, gone)
                part = self.partitions.get((OFFSETS_TOPIC, self._index.get(name, -1)))
                if part is not None and part.is_leader:
                    self._write(part, self._member_records(g, [], gone, 0), now_ms)

    def offset_commit(self, ctx: RequestContext, req: OffsetCommit, now_ms: int) -> list[TP] | Completion[list[TP]]:
        """Commit offsets; answers the committed partitions once the commit is replicated."""
        group = req.group
        part = self._group_partition(group, now_ms)
        g = self.groups.get(group) or Group(group)
        tps = [(o.topic, o.partition) for o in req.offsets]
        try:
            g.validate_commit(req.member_id, req.member_epoch, tps)
        except GroupError as exc:
            raise RequestError(exc.code, exc.message) from None
        self.groups[group] = g
        self._index[group] = part.index
        for o in req.offsets:
            if o.offset < 0:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"offset for {o.topic}-{o.partition} must be >= 0")
        if not req.offsets:
            return []
        records = [(["o", group, o.topic, o.partition], {"offset": o.offset, "metadata": o.metadata, "ts": now_ms})
                   for o in req.offsets]
        end = self._write(part, records, now_ms)
        offsets = self.offsets.setdefault(group, {})
        for o in req.offsets:
            offsets[(o.topic, o.partition)] = (o.offset, o.metadata)
        return self._when_replicated(part, end, now_ms, tps)

    def offset_fetch(self, ctx: RequestContext, group: str, tps: list[TP] | None, now_ms: int) -> list[CommittedOffset]:
        """Committed offsets of ``tps`` (None: every partition the group committed)."""
        self._group_partition(group, now_ms)
        tps = checked_tps("partitions", tps)
        offsets = self.offsets.get(group, {})
        wanted = tps if tps is not None else sorted(offsets)
        out = []
        for tp in wanted:
            committed = offsets.get(tp)
            out.append(CommittedOffset(tp[0], tp[1], committed[0] if committed else -1, committed[1] if committed else ""))
        return out

    def list_groups(self, ctx: RequestContext) -> list[GroupListing]:
        groups = []
        for name, g in sorted(self.groups.items()):
            if self._index.get(name) in self.loaded:
                g.refresh_target(self._partitions_of)
                groups.append(GroupListing(name, g.state.value, len(g.members)))
        for name in sorted(set(self.offsets) - set(self.groups)):
            groups.append(GroupListing(name, "empty", 0))
        return groups

    def describe_group(self, ctx: RequestContext, group: str, now_ms: int) -> GroupDetail:
        self._group_partition(group, now_ms)
        g = self.groups.get(group)
        offsets = self.offsets.get(group, {})
        if g is None and not offsets:
            raise RequestError(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group!r}")
        if g is not None:
            g.refresh_target(self._partitions_of)  # after a coordinator move the target is recomputed lazily
        members = [] if g is None else [
            MemberDetail(m.member_id, m.instance_id, m.client_id, sorted(m.topics), m.epoch, sorted(m.assigned), sorted(m.revoking))
            for m in sorted(g.members.values(), key=lambda m: m.member_id)
        ]
        return GroupDetail(group, g.state.value if g else "empty", g.epoch if g else 0, g.assignor() if g else None, members,
                           [CommittedOffset(t, p, o, md) for (t, p), (o, md) in sorted(offsets.items())])

    def delete_group(self, ctx: RequestContext, group: str, now_ms: int) -> Completion[None]:
        part = self._group_partition(group, now_ms)
        g = self.groups.get(group)
        if g is not None and g.members:
            raise RequestError(ErrorCode.NON_EMPTY_GROUP, f"group {group!r} has active members")
        offsets = self.offsets.get(group, {})
        if g is None and not offsets:
            raise RequestError(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group!r}")
        records = [(["o", group, t, p], None) for (t, p) in offsets] + [(["g", group], None)]
        end = self._write(part, records, now_ms)
        self.groups.pop(group, None)
        self.offsets.pop(group, None)
        return self._when_replicated(part, end, now_ms, None)
