"""Group coordination on a broker: which broker coordinates a group, and its requests.

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

The state machine itself is :mod:`zbroker.groups`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgpack

from storage import build_native_batch, decode_native_records, iter_batches
from zbroker import protocol as P
from zbroker.errors import ErrorCode
from zbroker.groups import Group, GroupError, Member
from zbroker.hashing import positive_hash_mod
from zbroker.partition import Partition
from zbroker.purgatory import DelayedOperation

if TYPE_CHECKING:
    from zbroker.broker import Broker

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
GROUP_WRITE_TIMEOUT_MS = 10_000


def _check_pairs(name: str, pairs) -> None:
    for i, tp in enumerate(pairs or ()):
        if not (isinstance(tp, list) and len(tp) == 2 and isinstance(tp[0], str) and isinstance(tp[1], int)
                and not isinstance(tp[1], bool)):
            raise P.RequestError(ErrorCode.INVALID_REQUEST, f"field '{name}[{i}]' must be [topic, partition]")


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class GroupCoordinator:
    """Mixin of :class:`zbroker.broker.Broker`."""

    # -- placement ---------------------------------------------------------------------

    def _offsets_partition_of(self: Broker, group: str) -> int:
        return positive_hash_mod(group.encode(), self.config.setting("offsets_topic_partitions"))

    def _find_coordinator(self: Broker, peer, header, fields, frames, now_ms):
        group = fields["group"]
        if not group:
            raise P.RequestError(ErrorCode.INVALID_GROUP_ID, "group must be a non-empty string")
        topic = self.image.get(OFFSETS_TOPIC)
        if topic is None:
            self._create_offsets_topic(now_ms)
            raise P.RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "creating the offsets topic; retry")
        pm = topic.partitions[self._offsets_partition_of(group) % len(topic.partitions)]
        if pm.leader < 0:
            raise P.RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "the group's offsets partition has no leader; retry")
        b = self.config.broker(pm.leader)
        return P.response(P.FIND_COORDINATOR, header["cid"], coordinator=b.id, host=b.host, port=b.port)

    def _create_offsets_topic(self: Broker, now_ms: int) -> None:
        rf = min(3, len(self.config.brokers))
        fields = {"topic": OFFSETS_TOPIC, "partitions": self.config.setting("offsets_topic_partitions"),
                  "replication_factor": rf, "config": {"cleanup_policy": "compact", "min_insync_replicas": min(2, rf)}}
        if OFFSETS_TOPIC in self._pending_topics:
            return
        if self.control.is_controller:
            try:
                records, names = self._build_create(fields, now_ms, internal=True)
                end = self.control.propose(records)
                self._pending_topics.update(dict.fromkeys(names, end))
                self._reconcile(now_ms)
            except P.RequestError:
                pass
        elif self.control.controller >= 0:
            self.peer_outbox.append((self.control.controller, P.request(P.CREATE_INTERNAL_TOPIC, 0, **fields), []))

    def _create_internal_topic(self: Broker, peer, header, fields, frames, now_ms):
        if fields["topic"] != OFFSETS_TOPIC:
            raise P.RequestError(ErrorCode.INVALID_TOPIC_EXCEPTION, "only the offsets topic is created this way")
        if self.control.is_controller and self.image.get(OFFSETS_TOPIC) is None:
            self._create_offsets_topic(now_ms)
        return None

    def _group_partition(self: Broker, group: str) -> Partition:
        """The offsets partition this broker coordinates ``group`` through, or NOT_COORDINATOR."""
        if not group:
            raise P.RequestError(ErrorCode.INVALID_GROUP_ID, "group must be a non-empty string")
        topic = self.image.get(OFFSETS_TOPIC)
        if topic is None:
            raise P.RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "no offsets topic yet")
        index = self._offsets_partition_of(group) % len(topic.partitions)
        part = self.partitions.get((OFFSETS_TOPIC, index))
        if part is None or not part.is_leader or not self.control.ready:
            raise P.RequestError(ErrorCode.NOT_COORDINATOR, f"broker {self.broker_id} does not coordinate group {group!r}")
        if not self.control.in_contact(self._now()):
            # maybe deposed without knowing: answering from memory could confirm an assignment
            # the new coordinator has already handed to another member
            raise P.RequestError(ErrorCode.NOT_COORDINATOR, f"broker {self.broker_id} lost contact with the controller")
        if index not in self._loaded_offsets:
            raise P.RequestError(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, "loading the group's state; retry")
        return part

    # -- loading ------------------------------------------------------------------------

    def _sync_coordination(self: Broker, now_ms: int) -> None:
        """Load the groups of offsets partitions this broker now leads; drop the others."""
        led = {tp[1] for tp, part in self.partitions.items() if tp[0] == OFFSETS_TOPIC and part.is_leader}
        for index in sorted(self._loaded_offsets - led):
            self._loaded_offsets.discard(index)
            for name in [g for g, idx in self._group_index.items() if idx == index]:
                self.groups.pop(name, None)
                self.group_offsets.pop(name, None)
                del self._group_index[name]
            log.info("no longer coordinating the groups of %s-%d", OFFSETS_TOPIC, index)
        for index in sorted(led - self._loaded_offsets):
            self._load_offsets_partition(self.partitions[(OFFSETS_TOPIC, index)], index, now_ms)

    def _load_offsets_partition(self: Broker, part: Partition, index: int, now_ms: int) -> None:
        lg, offset, count = part.log, part.log.log_start_offset, 0
        session = self.config.setting("group_max_session_timeout_ms")
        while offset < lg.log_end_offset:
            data = lg.read(offset, 1 << 20).data
            if not data:
                break
            for pos, h in iter_batches(data):
                for _off, _ts, key, value, _hdr in decode_native_records(data[pos : pos + h.size]):
                    try:
                        self._apply_group_record(msgpack.unpackb(key, raw=False), msgpack.unpackb(value, raw=False) if value else None,
                                                 index, now_ms, session)
                        count += 1
                    except Exception as exc:  # one bad record must not lose the rest
                        log.error("skipping an unreadable group record in %s-%d: %s", OFFSETS_TOPIC, index, exc)
                offset = h.next_offset
        self._loaded_offsets.add(index)
        log.info("coordinating the groups of %s-%d: %d records, %d groups", OFFSETS_TOPIC, index, count,
                 sum(1 for i in self._group_index.values() if i == index))

    def _apply_group_record(self: Broker, key: list, value, index: int, now_ms: int, session_ms: int) -> None:
        kind, group = key[0], key[1]
        self._group_index[group] = index
        g = self.groups.setdefault(group, Group(group))
        if kind == "o":
            tp = (key[2], key[3])
            if value is None:
                self.group_offsets.get(group, {}).pop(tp, None)
            else:
                self.group_offsets.setdefault(group, {})[tp] = (value["offset"], value.get("metadata") or "")
        elif kind == "m":
            if value is None:
                g.members.pop(key[2], None)
            else:
                # the session restarts here: a member's clock does not survive a coordinator move
                g.members[key[2]] = Member.from_record(value, now_ms, min(session_ms, value.get("session_ms", session_ms)))
        elif kind == "g":
            if value is None:
                self.groups.pop(group, None)
                self.group_offsets.pop(group, None)
                self._group_index.pop(group, None)
            else:
                g.epoch = max(g.epoch, value["epoch"])

    # -- writing ------------------------------------------------------------------------

    def _write_group_records(self: Broker, part: Partition, records: list[tuple[list, object]], now_ms: int) -> int:
        batch = build_native_batch([(now_ms, _pack(k), None if v is None else _pack(v), None) for k, v in records])
        info = part.log.append(batch, now_ms, leader_epoch=part.leader_epoch)
        if part.update_high_watermark():
            self._hw_moved(part)
        else:
            self.purgatory.check(part.tp)  # followers waiting for data
        return info.last_offset + 1

    def _when_replicated(self: Broker, part: Partition, end: int, now_ms: int, peer, kind: str, cid: int, make) -> None:
        """Answer ``make()`` once ``end`` is below the partition's high watermark (or an error)."""

        def settle(final: bool) -> bool:
            if not part.is_leader or self.partitions.get(part.tp) is not part:
                self._reply(peer, P.response(kind, cid, ErrorCode.NOT_COORDINATOR, "the coordinator moved; retry"), [])
                return True
            if part.high_watermark >= end:
                self._reply(peer, make(), [])
                return True
            if final:
                self._reply(peer, P.response(kind, cid, ErrorCode.COORDINATOR_NOT_AVAILABLE, "could not replicate the group's state in time"), [])
                return True
            return False

        self.purgatory.park(DelayedOperation(now_ms + GROUP_WRITE_TIMEOUT_MS, [part.tp], lambda: settle(False), lambda: settle(True)))

    def _member_records(self: Broker, g: Group, changed, removed, session_ms: int) -> list:
        records = [(["g", g.group_id], {"epoch": g.epoch})]
        for mid in changed:
            m = g.members.get(mid)
            if m is not None:
                records.append((["m", g.group_id, mid], {**m.to_record(), "session_ms": session_ms}))
        records += [(["m", g.group_id, mid], None) for mid in removed]
        return records

    # -- requests -----------------------------------------------------------------------

    def _partitions_of(self: Broker, topic: str) -> int | None:
        meta = self.image.get(topic)
        return meta.partition_count if meta is not None else None

    def _group_heartbeat(self: Broker, peer, header, fields, frames, now_ms):
        group = fields["group"]
        _check_pairs("owned", fields["owned"])
        if fields["rebalance_timeout_ms"] < 1000:
            raise P.RequestError(ErrorCode.INVALID_REQUEST, f"rebalance_timeout_ms must be >= 1000, got {fields['rebalance_timeout_ms']}")
        part = self._group_partition(group)
        lo, hi = self.config.setting("group_min_session_timeout_ms"), self.config.setting("group_max_session_timeout_ms")
        session = fields["session_timeout_ms"]
        if not lo <= session <= hi:
            raise P.RequestError(ErrorCode.INVALID_SESSION_TIMEOUT, f"session_timeout_ms must be from {lo} to {hi}, got {session}")
        g = self.groups.get(group) or Group(group)
        epoch_before = g.epoch
        try:
            resp, changed, removed = g.heartbeat(fields, now_ms, session, self._partitions_of)
        except GroupError as exc:
            raise P.RequestError(exc.code, exc.message) from None
        if not g.members and group not in self.groups:
            return P.response(P.GROUP_HEARTBEAT, header["cid"], heartbeat_interval_ms=1000, **resp)  # a leave of nobody
        self.groups[group] = g  # only a request that succeeded creates a group
        self._group_index[group] = part.index
        body = P.response(P.GROUP_HEARTBEAT, header["cid"], heartbeat_interval_ms=max(100, min(3000, session // 3)), **resp)
        if not changed and not removed and g.epoch == epoch_before:
            return body
        end = self._write_group_records(part, self._member_records(g, changed, removed, session), now_ms)
        self._when_replicated(part, end, now_ms, peer, P.GROUP_HEARTBEAT, header["cid"], lambda: body)
        return None

    def _expire_members(self: Broker, now_ms: int) -> None:
        for name, g in list(self.groups.items()):
            if not g.members:
                continue
            gone = g.expire(now_ms, self._partitions_of)
            if gone:
                log.info("group %s: removed members %s (session or rebalance timeout)", name, gone)
                part = self.partitions.get((OFFSETS_TOPIC, self._group_index.get(name, -1)))
                if part is not None and part.is_leader:
                    self._write_group_records(part, self._member_records(g, [], gone, 0), now_ms)

    def _offset_commit(self: Broker, peer, header, fields, frames, now_ms):
        group = fields["group"]
        part = self._group_partition(group)
        g = self.groups.get(group) or Group(group)
        tps = [(o["topic"], o["partition"]) for o in fields["offsets"]]
        try:
            g.validate_commit(fields["member_id"], fields["member_epoch"], tps)
        except GroupError as exc:
            raise P.RequestError(exc.code, exc.message) from None
        self.groups[group] = g
        self._group_index[group] = part.index
        for o in fields["offsets"]:
            if o["offset"] < 0:
                raise P.RequestError(ErrorCode.INVALID_REQUEST, f"offset for {o['topic']}-{o['partition']} must be >= 0")
        records = [(["o", group, o["topic"], o["partition"]], {"offset": o["offset"], "metadata": o["metadata"], "ts": now_ms})
                   for o in fields["offsets"]]
        if not records:
            return P.response(P.OFFSET_COMMIT, header["cid"], results=[])
        end = self._write_group_records(part, records, now_ms)
        offsets = self.group_offsets.setdefault(group, {})
        for o in fields["offsets"]:
            offsets[(o["topic"], o["partition"])] = (o["offset"], o["metadata"])
        results = [{"topic": t, "partition": p, "error": 0} for t, p in tps]
        self._when_replicated(part, end, now_ms, peer, P.OFFSET_COMMIT, header["cid"],
                              lambda: P.response(P.OFFSET_COMMIT, header["cid"], results=results))
        return None

    def _offset_fetch(self: Broker, peer, header, fields, frames, now_ms):
        group = fields["group"]
        self._group_partition(group)
        offsets = self.group_offsets.get(group, {})
        _check_pairs("partitions", fields["partitions"])
        wanted = [tuple(tp) for tp in fields["partitions"]] if fields["partitions"] is not None else sorted(offsets)
        out = []
        for tp in wanted:
            committed = offsets.get(tp)
            out.append({"topic": tp[0], "partition": tp[1], "offset": committed[0] if committed else -1,
                        "metadata": committed[1] if committed else "", "error": 0})
        return P.response(P.OFFSET_FETCH, header["cid"], offsets=out)

    def _list_groups(self: Broker, peer, header, fields, frames, now_ms):
        groups = []
        for name, g in sorted(self.groups.items()):
            if self._group_index.get(name) in self._loaded_offsets:
                g.refresh_target(self._partitions_of)
                groups.append({"group": name, "state": g.state.value, "members": len(g.members)})
        for name in sorted(set(self.group_offsets) - set(self.groups)):
            groups.append({"group": name, "state": "empty", "members": 0})
        return P.response(P.LIST_GROUPS, header["cid"], groups=groups)

    def _describe_group(self: Broker, peer, header, fields, frames, now_ms):
        group = fields["group"]
        self._group_partition(group)
        g = self.groups.get(group)
        offsets = self.group_offsets.get(group, {})
        if g is None and not offsets:
            raise P.RequestError(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group!r}")
        if g is not None:
            g.refresh_target(self._partitions_of)  # after a coordinator move the target is recomputed lazily
        members = [] if g is None else [
            {"member_id": m.member_id, "instance_id": m.instance_id, "client_id": m.client_id, "topics": sorted(m.topics),
             "member_epoch": m.epoch, "assignment": sorted(map(list, m.assigned)), "revoking": sorted(map(list, m.revoking))}
            for m in sorted(g.members.values(), key=lambda m: m.member_id)
        ]
        return P.response(
            P.DESCRIBE_GROUP, header["cid"], group=group, state=(g.state.value if g else "empty"),
            group_epoch=(g.epoch if g else 0), assignor=(g.assignor() if g else None), members=members,
            offsets=[{"topic": t, "partition": p, "offset": o, "metadata": md} for (t, p), (o, md) in sorted(offsets.items())],
        )

    def _delete_group(self: Broker, peer, header, fields, frames, now_ms):
        group = fields["group"]
        part = self._group_partition(group)
        g = self.groups.get(group)
        if g is not None and g.members:
            raise P.RequestError(ErrorCode.NON_EMPTY_GROUP, f"group {group!r} has active members")
        offsets = self.group_offsets.get(group, {})
        if g is None and not offsets:
            raise P.RequestError(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group!r}")
        records = [(["o", group, t, p], None) for (t, p) in offsets] + [(["g", group], None)]
        end = self._write_group_records(part, records, now_ms)
        self.groups.pop(group, None)
        self.group_offsets.pop(group, None)
        self._when_replicated(part, end, now_ms, peer, P.DELETE_GROUP, header["cid"], lambda: P.response(P.DELETE_GROUP, header["cid"]))
        return None
