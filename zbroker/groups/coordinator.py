"""The group coordinator: which broker coordinates a group, and the group requests.

A group's coordinator is the leader of partition ``murmur2(group) % N`` of the
internal topic ``__consumer_offsets`` (N = ``offsets_topic_partitions``; the
controller creates the topic, compacted and replicated like any other, on the
first ``find_coordinator``).  That partition is the group's durable state: every
change of a member's assignment or epoch, every committed offset, is a record
appended there and answered only once replicated (acks=all), so a new
coordinator -- the partition's next leader -- replays the log and carries on
with the same members, epochs, assignments and offsets.

Its records -- committed offsets, members, groups -- are drawn in
:mod:`zbroker.groups.records`.

The state machines are :mod:`zbroker.groups.group` (KIP-848 consumer groups) and
:mod:`zbroker.groups.classic` (Kafka's classic JoinGroup/SyncGroup groups, whose
membership is kept in memory only).  Both kinds share one namespace and the committed
offsets: a group with members of one kind refuses the other kind's members
(INCONSISTENT_GROUP_PROTOCOL); an empty group of either kind becomes the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TypeVar

from storage import CorruptBatchError, DamagedRangeError, StorageError, build_native_batch, decode_native_records, iter_batches
from zbroker.config import ClusterConfig
from zbroker.context import Completion, RequestContext
from zbroker.control.controlplane import ControlPlane
from zbroker.control.topicadmin import OFFSETS_TOPIC, TopicAdmin
from zbroker.core.partition import Partition
from zbroker.core.partitions import PartitionManager
from zbroker.errors import ErrorCode, RequestError
from zbroker.groups.classic import (ClassicGroup, ClassicHeartbeat, ClassicState, JoinGroup, JoinResult, LeaveGroup,
                                    SyncGroup, SyncResult)
from zbroker.groups.consumer_protocol import assigned_partitions, subscribed_topics
from zbroker.groups.group import Group, GroupError, HeartbeatAnswer, Member, MemberHeartbeat
from zbroker.groups.records import pack, parse_record
from zbroker.hashing import positive_hash_mod
from zbroker.purgatory import DelayedOperation, Purgatory

log = logging.getLogger(__name__)
_LOAD_RETRY_MS = 1000  # a load stopped by a read error is tried again this much later

GROUP_WRITE_TIMEOUT_MS = 10_000
TP = tuple[str, int]
T = TypeVar("T")


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
    member_epoch: int = -1  # -1 with no member id: an admin commit (the group must be empty); classic: the generation
    group_instance_id: str | None = None  # classic groups: a static member's instance id


@dataclass(slots=True)
class OffsetFetch:
    """A group's committed offsets, asked of another broker (the group's coordinator)."""

    group: str
    partitions: list[tuple[str, int]] | None = None  # None: every partition the group committed


@dataclass(slots=True)
class CommittedOffset:
    topic: str
    partition: int
    offset: int  # -1: none committed
    metadata: str = ""


@dataclass(slots=True)
class GroupListing:
    """``state``: a consumer group's ``empty``, ``reconciling`` or ``stable``; a classic group's
    Kafka name (``Empty``, ``PreparingRebalance``, ``CompletingRebalance``, ``Stable``).
    ``group_type``: ``consumer`` (KIP-848) or ``classic``."""

    group: str
    state: str
    members: int
    group_type: str = "consumer"
    protocol_type: str = "consumer"


@dataclass(slots=True)
class MemberDetail:
    member_id: str
    instance_id: str | None
    client_id: str
    topics: list[str]
    member_epoch: int
    assignment: list[TP]
    revoking: list[TP]
    client_host: str = ""
    member_metadata: bytes = b""  # classic groups, when Stable: its metadata for the chosen protocol
    member_assignment: bytes = b""  # classic groups, when Stable: the leader's assignment for it


@dataclass(slots=True)
class GroupDetail:
    group: str
    state: str
    group_epoch: int  # classic groups: the generation
    assignor: str | None  # classic groups: the chosen protocol when Stable, else ""
    members: list[MemberDetail] = field(default_factory=list)
    offsets: list[CommittedOffset] = field(default_factory=list)
    group_type: str = "consumer"
    protocol_type: str = "consumer"


def _settled(value: T) -> Completion[T]:
    done: Completion[T] = Completion()
    done.complete(value)
    return done


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
        self.classic: dict[str, ClassicGroup] = {}  # its classic groups (never the name of one in groups)
        self._classic_timer: dict[str, int] = {}  # classic group -> when its earliest parked timer fires
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
            self._classic_timer.pop(name, None)
            classic = self.classic.pop(name, None)
            if classic is not None:
                classic.unload()  # parked joins and syncs: NOT_COORDINATOR

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
                self._apply_record(parse_record(key, value), index, now_ms, session_ms)
                applied += 1
            except Exception as exc:  # noqa: BLE001 -- one bad record must not lose the rest
                bad += 1
                first = first or (off, exc)
        if bad:
            log.error("skipping %d unreadable group record(s) in %s at offsets %d-%d (first at %d: %s)", bad, where,
                      h.base_offset, h.last_offset, first[0], _short(first[1]))
        return applied

    def _apply_record(self, record: tuple, index: int, now_ms: int, session_ms: int) -> None:
        """Apply one record checked by :func:`~zbroker.groups.records.parse_record`; nothing changes if it raises."""
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
        batch = build_native_batch([(now_ms, pack(k), None if v is None else pack(v), None) for k, v in records])
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
        classic = self.classic.get(req.group)
        if classic is not None and not classic.is_empty:
            raise RequestError(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, f"group {req.group!r} is a classic group with members")
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
        if classic is not None:
            self._drop_classic(classic)  # an empty classic group becomes a consumer group
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
        tps = [(o.topic, o.partition) for o in req.offsets]
        classic = self.classic.get(group)
        if classic is not None:  # Kafka's generation checks
            error = classic.validate_commit(req.member_id, req.group_instance_id, req.member_epoch, now_ms)
            if error:
                raise RequestError(error, f"commit refused: {error.name} (member {req.member_id!r}, generation "
                                          f"{req.member_epoch}; the group is at {classic.generation})")
        else:
            g = self.groups.get(group) or Group(group)
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

    # -- classic groups: Kafka's JoinGroup, SyncGroup, Heartbeat, LeaveGroup (zbroker.groups.classic) --

    def join_group(self, ctx: RequestContext, req: JoinGroup, now_ms: int) -> Completion[JoinResult]:
        """Settles when the group's join round ends; raises RequestError only for placement
        (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...), as every classic call does."""
        part = self._group_partition(req.group, now_ms)
        lo, hi = self.config.setting("group_min_session_timeout_ms"), self.config.setting("group_max_session_timeout_ms")
        consumer, g = self.groups.get(req.group), self.classic.get(req.group)
        error = (ErrorCode.INVALID_SESSION_TIMEOUT if not lo <= req.session_timeout_ms <= hi
                 else ErrorCode.INCONSISTENT_GROUP_PROTOCOL if consumer is not None and consumer.members
                 else ErrorCode.UNKNOWN_MEMBER_ID if g is None and req.member_id else None)
        if error is not None:
            return _settled(JoinResult(error, member_id=req.member_id))
        if g is None:
            g = self.classic[req.group] = ClassicGroup(req.group)
            self.groups.pop(req.group, None)  # an empty consumer group becomes a classic one
            self._index[req.group] = part.index
        return self._classic_changed(g, g.join(req, now_ms), now_ms)

    def sync_group(self, ctx: RequestContext, req: SyncGroup, now_ms: int) -> Completion[SyncResult]:
        """A follower's settles when the leader's SyncGroup arrives."""
        g = self._classic_group(req.group, now_ms)
        if g is None:
            return _settled(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        return self._classic_changed(g, g.sync(req, now_ms), now_ms)

    def classic_heartbeat(self, ctx: RequestContext, req: ClassicHeartbeat, now_ms: int) -> ErrorCode:
        g = self._classic_group(req.group, now_ms)
        return ErrorCode.UNKNOWN_MEMBER_ID if g is None else g.heartbeat(req, now_ms)

    def leave_group(self, ctx: RequestContext, req: LeaveGroup, now_ms: int) -> list[ErrorCode]:
        """One error code per member of ``req.members``, in order."""
        g = self._classic_group(req.group, now_ms)
        if g is None:
            return [ErrorCode.UNKNOWN_MEMBER_ID] * len(req.members)
        return self._classic_changed(g, g.leave(req.members, now_ms), now_ms)

    def _classic_group(self, group: str, now_ms: int) -> ClassicGroup | None:
        self._group_partition(group, now_ms)
        return self.classic.get(group)

    def _classic_changed(self, g: ClassicGroup, answer: T, now_ms: int) -> T:
        """After a request or a timer moved a classic group: forget it once Empty with no offsets,
        else have a purgatory timer (the app's loop keeps its deadlines) run its expiry when due."""
        if g.state is ClassicState.EMPTY and g.is_empty and not self.offsets.get(g.group_id):
            self._drop_classic(g)
            return answer
        due = g.next_deadline()
        if due is not None and due < self._classic_timer.get(g.group_id, due + 1):
            due = self._classic_timer[g.group_id] = max(due, now_ms + 1)
            self.purgatory.park(DelayedOperation(due, (), lambda now: False, lambda now: self._classic_due(g, due, now)),
                                now_ms)
        return answer

    def _classic_due(self, g: ClassicGroup, due: int, now_ms: int) -> None:
        if self.classic.get(g.group_id) is not g:
            return
        if now_ms < due:  # not due: the purgatory is cancelled, the broker closes
            del self.classic[g.group_id]
            self._classic_timer.pop(g.group_id, None)
            g.unload()
            return
        if self._classic_timer.get(g.group_id) == due:
            del self._classic_timer[g.group_id]
        g.expire(now_ms)
        self._classic_changed(g, None, now_ms)

    def _drop_classic(self, g: ClassicGroup) -> None:
        g.delete()
        del self.classic[g.group_id]
        self._classic_timer.pop(g.group_id, None)
        if g.group_id not in self.groups and g.group_id not in self.offsets:
            self._index.pop(g.group_id, None)

    def list_groups(self, ctx: RequestContext) -> list[GroupListing]:
        groups = []
        for name, g in sorted(self.groups.items()):
            if self._index.get(name) in self.loaded:
                g.refresh_target(self._partitions_of)
                groups.append(GroupListing(name, g.state.value, len(g.members)))
        for name, c in self.classic.items():
            if self._index.get(name) in self.loaded:
                groups.append(GroupListing(name, c.state.value, len(c.members), "classic", c.protocol_type or ""))
        for name in set(self.offsets) - set(self.groups) - set(self.classic):
            groups.append(GroupListing(name, "empty", 0))
        return sorted(groups, key=lambda listing: listing.group)

    def describe_group(self, ctx: RequestContext, group: str, now_ms: int) -> GroupDetail:
        self._group_partition(group, now_ms)
        g = self.groups.get(group)
        offsets = self.offsets.get(group, {})
        committed = [CommittedOffset(t, p, o, md) for (t, p), (o, md) in sorted(offsets.items())]
        if group in self.classic:
            return self._describe_classic(self.classic[group], committed)
        if g is None and not offsets:
            raise RequestError(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group!r}")
        if g is not None:
            g.refresh_target(self._partitions_of)  # after a coordinator move the target is recomputed lazily
        members = [] if g is None else [
            MemberDetail(m.member_id, m.instance_id, m.client_id, sorted(m.topics), m.epoch, sorted(m.assigned), sorted(m.revoking))
            for m in sorted(g.members.values(), key=lambda m: m.member_id)
        ]
        return GroupDetail(group, g.state.value if g else "empty", g.epoch if g else 0, g.assignor() if g else None, members,
                           committed)

    def _describe_classic(self, c: ClassicGroup, committed: list[CommittedOffset]) -> GroupDetail:
        """Kafka's DescribeGroups: metadata and assignments only once Stable."""
        stable = c.state is ClassicState.STABLE
        members = []
        for m in c.members.values():
            metadata, assignment = (m.metadata(c.protocol_name), m.assignment) if stable else (b"", b"")
            readable = c.protocol_type == "consumer"  # Kafka's ConsumerProtocol: shown as topics and partitions
            members.append(MemberDetail(m.member_id, m.instance_id, m.client_id, subscribed_topics(metadata) if readable else [],
                                        c.generation, assigned_partitions(assignment) if readable else [], [], m.client_host,
                                        metadata, assignment))
        return GroupDetail(c.group_id, c.state.value, c.generation, c.protocol_name if stable else "", members, committed,
                           "classic", c.protocol_type or "")

    def delete_group(self, ctx: RequestContext, group: str, now_ms: int) -> Completion[None]:
        part = self._group_partition(group, now_ms)
        g = self.groups.get(group)
        classic = self.classic.get(group)
        if (g is not None and g.members) or (classic is not None and classic.state is not ClassicState.EMPTY):
            raise RequestError(ErrorCode.NON_EMPTY_GROUP, f"group {group!r} has active members")
        offsets = self.offsets.get(group, {})
        if g is None and classic is None and not offsets:
            raise RequestError(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group!r}")
        records = [(["o", group, t, p], None) for (t, p) in offsets] + [(["g", group], None)]
        end = self._write(part, records, now_ms)
        self.groups.pop(group, None)
        self.offsets.pop(group, None)
        if classic is not None:
            self._drop_classic(classic)
        return self._when_replicated(part, end, now_ms, None)
