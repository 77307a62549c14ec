"""Consumer groups: membership, server-side assignment, incremental handover (pure).

Theory of operation (Kafka's KIP-848 model)
-------------------------------------------
Members heartbeat to the group's coordinator with their subscription and the
partitions they own.  The coordinator keeps a **group epoch**, bumped by every
change that can move partitions (a member joins, leaves, dies, changes its
subscription; a subscribed topic grows), and for each group epoch a **target
assignment** computed by the group's assignor (``sticky`` by default,
``range``, ``round_robin``).

Each member converges on its target one heartbeat at a time:

1. partitions it holds that are no longer in its target are *revoked*: its new
   assignment leaves them out and they stay *pending revocation* until a
   heartbeat reports them released (the member stopped fetching them and
   committed its position);
2. only with nothing pending revocation does it get new partitions, and only
   those no other member holds or is still releasing.

So a partition is never in two members' hands: in the coordinator's state it
belongs to at most one member's ``assigned | revoking`` (:meth:`Group._check`),
and a member starts reading a partition only after the previous owner let go
or was removed (session expired, left, or failed to release within its
rebalance timeout).  Every change to a member's assignment bumps its **member
epoch**; offset commits carrying an older epoch are rejected.

Liveness: a member silent for ``session_timeout_ms`` is removed.  A static
member (``instance_id``) that leaves with epoch -2 keeps its assignment for its
session timeout; rejoining with the same instance id resumes it without moving
anything.  A member whose heartbeat carries a stale epoch is *fenced*: it is
removed at once (it was told to drop its partitions), so a client that rejoins
-- with its member id or with "" -- finds no ghost of itself holding them.  A
join (epoch 0) with the member id of a member the group still has replaces
that member at once, releasing what it held.  Time is passed in; records
describing the new state are returned for the caller to persist.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from zbroker.errors import ErrorCode
from zbroker.groups.assignors import ASSIGNOR_FUNCS, ASSIGNORS

TP = tuple[str, int]

JOIN_EPOCH = 0
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2



class GroupError(Exception):
    """A refused group request.  ``removed``: members the refusal took out of the group
    (a fenced member), whose removal the caller must persist like any other."""

    def __init__(self, code: ErrorCode, message: str, removed: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.removed = removed or []


@dataclass(slots=True)
class MemberHeartbeat:
    """A member's heartbeat (KIP-848's ConsumerGroupHeartbeat, whatever door it came through).

    ``member_epoch`` 0 joins, -1 leaves, -2 leaves for a while (a static member);
    ``topics``, ``owned``, ``assignor`` and ``rebalance_timeout_ms`` None mean "unchanged
    since the last heartbeat" (a new member gets the default rebalance timeout).
    """

    group: str
    member_epoch: int
    member_id: str = ""
    instance_id: str | None = None
    client_id: str = ""
    topics: list[str] | None = None
    owned: list[TP] | None = None
    assignor: str | None = None
    rebalance_timeout_ms: int | None = 300_000
    session_timeout_ms: int = 45_000


@dataclass(slots=True)
class HeartbeatAnswer:
    member_id: str
    member_epoch: int
    assignment: list[TP]  # sorted


class GroupState(enum.Enum):
    EMPTY = "empty"
    RECONCILING = "reconciling"
    STABLE = "stable"


@dataclass
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    topics: list[str]
    assignor: str | None
    rebalance_timeout_ms: int
    epoch: int = 0
    assigned: set[TP] = field(default_factory=set)
    revoking: set[TP] = field(default_factory=set)
    deadline_ms: int = 0
    revoking_since_ms: int = 0
    away: bool = False  # a static member that left for a while

    def to_record(self) -> dict:
        return {
            "member_id": self.member_id, "instance_id": self.instance_id, "client_id": self.client_id,
            "topics": sorted(self.topics), "assignor": self.assignor, "rebalance_timeout_ms": self.rebalance_timeout_ms,
            "epoch": self.epoch, "assigned": sorted(map(list, self.assigned)), "revoking": sorted(map(list, self.revoking)),
        }

    @classmethod
    def from_record(cls, rec: dict, now_ms: int, session_ms: int) -> Member:
        m = cls(rec["member_id"], rec.get("instance_id"), rec.get("client_id", ""), list(rec.get("topics") or []),
                rec.get("assignor"), int(rec.get("rebalance_timeout_ms", 300_000)), int(rec.get("epoch", 0)))
        m.assigned = {(t, p) for t, p in rec.get("assigned") or ()}
        m.revoking = {(t, p) for t, p in rec.get("revoking") or ()}
        m.deadline_ms = now_ms + session_ms  # a fresh session after a coordinator move
        m.revoking_since_ms = now_ms
        return m


# -- a group -------------------------------------------------------------------------------


@dataclass
class Group:
    group_id: str
    epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, set[TP]] = field(default_factory=dict)
    target_epoch: int = -1
    partition_counts: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> GroupState:
        if not self.members:
            return GroupState.EMPTY
        for m in self.members.values():
            if m.revoking or m.assigned != self.target.get(m.member_id, set()):
                return GroupState.RECONCILING
        return GroupState.STABLE

    def assignor(self) -> str:
        votes = [m.assignor for m in self.members.values() if m.assignor in ASSIGNORS]
        return max(ASSIGNORS, key=lambda a: (votes.count(a), a == "sticky")) if votes else "sticky"

    def owner_of(self, tp: TP) -> str | None:
        for m in self.members.values():
            if tp in m.assigned or tp in m.revoking:
                return m.member_id
        return None

    def _bump(self) -> None:
        self.epoch += 1

    def refresh_target(self, partitions_of) -> None:
        counts = {t: partitions_of(t) or 0 for m in self.members.values() for t in m.topics}
        if counts != self.partition_counts:
            self.partition_counts = counts
            self._bump()  # a subscribed topic appeared or grew
        if self.target_epoch != self.epoch:
            fn = ASSIGNOR_FUNCS[self.assignor()]
            self.target = fn(self.members, lambda t: self.partition_counts.get(t, 0))
            self.target_epoch = self.epoch

    def _reconcile(self, m: Member, owned: set[TP] | None, now_ms: int) -> bool:
        """Move one member toward its target; returns True if its assignment changed."""
        changed = False
        if owned is not None and m.revoking and not (owned & m.revoking):
            m.revoking = set()  # released
        target = self.target.get(m.member_id, set())
        drop = m.assigned - target
        if drop:
            m.assigned -= drop
            if not m.revoking:
                m.revoking_since_ms = now_ms
            m.revoking |= drop
            changed = True
        if not m.revoking:
            add = {tp for tp in target - m.assigned if self.owner_of(tp) is None}
            if add:
                m.assigned |= add
                changed = True
        if changed:
            m.epoch = max(m.epoch + 1, self.epoch)
        return changed

    def _remove(self, member_id: str) -> Member | None:
        m = self.members.pop(member_id, None)
        if m is not None:
            self._bump()
        return m

    # -- requests ------------------------------------------------------------------------

    def heartbeat(self, req: MemberHeartbeat, now_ms: int, session_ms: int,
                  partitions_of) -> tuple[HeartbeatAnswer, list[str], list[str]]:
        """Handle a heartbeat.  Returns (the answer, changed member ids, removed member ids).

        Raises:
            GroupError: UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH, UNSUPPORTED_ASSIGNOR,
                UNRELEASED_INSTANCE_ID.
        """
        member_id, epoch = req.member_id or "", req.member_epoch
        instance_id = req.instance_id
        owned = {(t, p) for t, p in req.owned} if req.owned is not None else None
        changed, removed = [], []
        if req.assignor not in (None, *ASSIGNORS):
            raise GroupError(ErrorCode.UNSUPPORTED_ASSIGNOR, f"assignor {req.assignor!r} is not one of {', '.join(ASSIGNORS)}")

        if epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            m = self.members.get(member_id)
            if m is None:
                return HeartbeatAnswer(member_id, epoch, []), [], []
            if epoch == STATIC_LEAVE_EPOCH and m.instance_id:
                m.away = True  # keeps its partitions for its session timeout
                m.deadline_ms = now_ms + session_ms
                return HeartbeatAnswer(member_id, epoch, []), [member_id], []
            self._remove(member_id)
            self.refresh_target(partitions_of)
            return HeartbeatAnswer(member_id, LEAVE_EPOCH, []), [], [member_id]

        if epoch == JOIN_EPOCH:
            existing = next((m for m in self.members.values() if instance_id and m.instance_id == instance_id), None)
            if existing is not None:
                if not existing.away and existing.member_id != member_id and now_ms < existing.deadline_ms:
                    raise GroupError(ErrorCode.UNRELEASED_INSTANCE_ID, f"instance {instance_id!r} is still in use by another member")
                m = existing  # a static member back: same slot, same partitions
                m.away = False
            else:
                if member_id in self.members:  # the same client back (restarted): the old one goes now
                    self._remove(member_id)
                m = Member(member_id or uuid.uuid4().hex, instance_id, req.client_id or "", list(req.topics or []),
                           req.assignor, req.rebalance_timeout_ms or 300_000)
                self.members[m.member_id] = m
                self._bump()
                m.epoch = self.epoch  # >= 1: epoch 0 means "joining"
            changed.append(m.member_id)
        else:
            m = self.members.get(member_id)
            if m is None:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in group {self.group_id!r}")
            if epoch not in (m.epoch, m.epoch - 1) or (epoch != m.epoch and owned is not None and not owned <= m.assigned | m.revoking):
                # Fenced: the member is told its membership is lost and drops every partition, so
                # the coordinator drops it too, at once -- whether it rejoins with its member id or
                # with "", no ghost keeps its partitions until the session expires.
                self._remove(member_id)
                self.refresh_target(partitions_of)
                raise GroupError(ErrorCode.FENCED_MEMBER_EPOCH, f"member epoch {epoch} is stale (current {m.epoch}): "
                                 "the member was removed, join again with epoch 0", removed=[member_id])
        m.deadline_ms = now_ms + session_ms
        if req.topics is not None and sorted(req.topics) != sorted(m.topics):
            m.topics = list(req.topics)
            self._bump()
            changed.append(m.member_id)
        if req.assignor is not None and req.assignor != m.assignor:
            m.assignor = req.assignor
            self._bump()
        if req.rebalance_timeout_ms:
            m.rebalance_timeout_ms = req.rebalance_timeout_ms
        self.refresh_target(partitions_of)
        if self._reconcile(m, owned, now_ms):
            changed.append(m.member_id)
        return HeartbeatAnswer(m.member_id, m.epoch, sorted(m.assigned)), sorted(set(changed)), removed

    def expire(self, now_ms: int, partitions_of) -> list[str]:
        """Remove members whose session expired or who held on to revoked partitions past
        their rebalance timeout; returns their ids."""
        gone = []
        for m in list(self.members.values()):
            late_release = m.revoking and now_ms - m.revoking_since_ms > m.rebalance_timeout_ms
            if now_ms >= m.deadline_ms or late_release:
                self._remove(m.member_id)
                gone.append(m.member_id)
        if gone:
            self.refresh_target(partitions_of)
        return gone

    def validate_commit(self, member_id: str, member_epoch: int, tps: list[TP]) -> None:
        """Raises GroupError unless this member (or, for an empty group, anyone) may commit."""
        if not member_id and member_epoch < 0:
            if self.members:
                raise GroupError(ErrorCode.NON_EMPTY_GROUP, f"group {self.group_id!r} has active members: stop them first")
            return
        m = self.members.get(member_id)
        if m is None:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in group {self.group_id!r}")
        held = m.assigned | m.revoking
        # An older epoch is fine for partitions the member still holds (it may not have heard
        # of its new epoch yet): nobody else can own them.  Others may have moved: refused.
        if member_epoch == m.epoch or (0 < member_epoch < m.epoch and set(tps) <= held):
            return
        raise GroupError(ErrorCode.STALE_MEMBER_EPOCH, f"member epoch {member_epoch} is stale (current {m.epoch})")

    def _check(self) -> None:
        """Invariant: no partition in two members' hands."""
        seen: dict[TP, str] = {}
        for m in self.members.values():
            for tp in m.assigned | m.revoking:
                if tp in seen:
                    raise AssertionError(f"{tp} held by {seen[tp]} and {m.member_id}")
                seen[tp] = m.member_id
