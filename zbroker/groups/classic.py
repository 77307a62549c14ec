"""Kafka's classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup (pure).

Theory of operation
-------------------
A classic group (Kafka's protocol before KIP-848) gathers members and passes on the
assignment one member, the *leader*, computed on the client side; the protocol's bytes
(a consumer's subscription, its assignment) are opaque here.  A rebalance has two rounds:

1. **Join.**  A member joining, leaving or expiring, a member rejoining with other
   protocols, or the leader rejoining moves the group to ``PreparingRebalance``.  Each
   JoinGroup is parked until every known member has rejoined (and none answered
   MEMBER_ID_REQUIRED is still to come back) or the rebalance timeout -- the largest of
   the members', fixed when the round starts -- runs out.  Then dynamic members that did
   not rejoin are removed (a static one stays, until its session ends or it misses the
   SyncGroup deadline below), the generation is bumped, the protocol is chosen (each
   member votes for its first protocol that every member supports; a tie goes to the
   oldest member's preference) and every parked JoinGroup is answered.  The leader (the first member to join, kept while it rejoins)
   gets every member's metadata.  The group is ``CompletingRebalance``.
2. **Sync.**  A follower's SyncGroup is parked until the leader's brings every member's
   assignment (one left out gets empty bytes); then each is answered with its own and the
   group is ``Stable``.  Members that send no SyncGroup within the rebalance timeout are
   removed, and the group rebalances again.

A rebalance answers the SyncGroups parked in ``CompletingRebalance`` REBALANCE_IN_PROGRESS;
in ``PreparingRebalance`` heartbeats answer REBALANCE_IN_PROGRESS, telling members to
rejoin.  Requests carry the generation their member last joined; another one is
ILLEGAL_GENERATION.  States (:data:`TRANSITIONS` is the table)::

    Empty --join--> PreparingRebalance --all rejoined, or timeout--> CompletingRebalance
      ^                |    ^                                          |   leader's SyncGroup
      +-- no members --+    +--- join, leave, expiry, new protocols ---+-- Stable <--+
    any state --(coordinator unloaded, group deleted)--> Dead

Liveness: a member that sends nothing (heartbeat, join, sync, offset commit) for its
session timeout is removed, except while a JoinGroup or SyncGroup of it is parked (the
rebalance timeout bounds those; a new member's first JoinGroup:
:data:`NEW_MEMBER_JOIN_TIMEOUT_MS`); its session starts again when that is answered.  Static membership (KIP-345): a member with a
``group_instance_id`` that joins again with member id "" takes over its slot under a new
id and the old id is fenced (FENCED_INSTANCE_ID); if the group is ``Stable`` and its
protocols are unchanged, nothing rebalances (the leader is told to skip the assignment,
KIP-814).

Membership is in memory only: a new coordinator (the offsets partition's next leader)
knows no classic members, and they rejoin when their next request gets
UNKNOWN_MEMBER_ID.  Committed offsets are persisted by the coordinator as for every
group.  Time is passed in: the caller runs :meth:`ClassicGroup.expire` at
:meth:`ClassicGroup.next_deadline`.  Answers are :class:`~zbroker.context.Completion`s,
settled by the request or the timer that ends their wait.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from zbroker.context import Completion
from zbroker.errors import ErrorCode

log = logging.getLogger(__name__)

#: How long a new member's first JoinGroup may stay parked (Kafka's NewMemberJoinTimeoutMs).
NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000


# -- requests and answers ------------------------------------------------------------------

@dataclass(slots=True)
class JoinGroup:
    """Kafka's JoinGroup.  ``member_id`` "" is a new member; ``protocols`` are (name, metadata)
    in the member's order of preference; ``require_known_member_id`` (JoinGroup v4+): a new
    dynamic member is answered MEMBER_ID_REQUIRED with its id and joins again with it;
    ``rebalance_timeout_ms`` <= 0 (JoinGroup v0 has none) means the session timeout."""

    group: str
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    require_known_member_id: bool = False
    reason: str | None = None


class JoinedMember(NamedTuple):
    member_id: str
    group_instance_id: str | None
    metadata: bytes  # its metadata for the chosen protocol


@dataclass(slots=True)
class JoinResult:
    """The answer to a JoinGroup; ``members`` only for the leader (and never with an error)."""

    error: ErrorCode
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: list[JoinedMember] = field(default_factory=list)
    skip_assignment: bool = False


@dataclass(slots=True)
class SyncGroup:
    """Kafka's SyncGroup; ``assignments`` (member id, bytes) only from the leader;
    ``protocol_type`` and ``protocol_name`` None when the client did not send them (v0-4)."""

    group: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignments: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(slots=True)
class ClassicHeartbeat:
    group: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@dataclass(slots=True)
class LeaveGroup:
    """Kafka's LeaveGroup: (member_id, group_instance_id) pairs; member id "" with an
    instance id removes that static member (an admin's removal)."""

    group: str
    members: list[tuple[str, str | None]]


# -- the state machine ---------------------------------------------------------------------

class ClassicState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_S = ClassicState

#: Each state, and the states it may move to (Kafka's GroupMetadata.validPreviousStates, turned around).
TRANSITIONS: dict[ClassicState, frozenset[ClassicState]] = {
    _S.EMPTY: frozenset({_S.PREPARING_REBALANCE, _S.DEAD}),
    _S.PREPARING_REBALANCE: frozenset({_S.COMPLETING_REBALANCE, _S.EMPTY, _S.DEAD}),
    _S.COMPLETING_REBALANCE: frozenset({_S.STABLE, _S.PREPARING_REBALANCE, _S.DEAD}),
    _S.STABLE: frozenset({_S.PREPARING_REBALANCE, _S.DEAD}),
    _S.DEAD: frozenset({_S.DEAD}),
}


class IllegalTransition(RuntimeError):
    """A bug here: a move the transition table does not allow."""


@dataclass(eq=False)
class ClassicMember:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    session_deadline_ms: int
    join: Completion | None = None  # its parked JoinGroup
    sync: Completion | None = None  # its parked SyncGroup
    assignment: bytes = b""
    is_new: bool = True  # no join of it has completed yet

    def supports(self, protocol: str) -> bool:
        return any(name == protocol for name, _ in self.protocols)

    def metadata(self, protocol: str | None) -> bytes:
        return next((md for name, md in self.protocols if name == protocol), b"")

    def kept_alive(self) -> bool:
        """A parked request stands for heartbeats (a new member's first join only until its deadline)."""
        return self.sync is not None or (self.join is not None and not self.is_new)


def _settle(answers: list[tuple[Completion, object]]) -> None:
    """Answer parked requests, once the group's state is whole again."""
    for done, value in answers:
        done.complete(value)


class ClassicGroup:
    """One classic group: its members, generation, leader and parked requests."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.state = ClassicState.EMPTY
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader: str | None = None
        self.members: dict[str, ClassicMember] = {}  # in joining order
        self.static: dict[str, str] = {}  # group_instance_id -> member_id
        self.pending: dict[str, int] = {}  # member ids answered MEMBER_ID_REQUIRED -> until when they may rejoin
        self.pending_sync: set[str] = set()  # members yet to send SyncGroup in this generation
        self.join_deadline_ms: int | None = None
        self.sync_deadline_ms: int | None = None

    @property
    def is_empty(self) -> bool:
        return not self.members and not self.pending

    def _transition(self, to: ClassicState) -> None:
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"group {self.group_id!r}: {self.state.value} -> {to.value}")
        self.state = to

    # -- protocols -------------------------------------------------------------------------

    def _supports(self, protocol_type: str, names: list[str], member_id: str | None) -> bool:
        """Kafka's supportsProtocols: the group's protocol type and a protocol every other
        member supports (``member_id``, rejoining or replaced, is not held to its old ones)."""
        if not protocol_type or not names:
            return False
        if not self.members:
            return True
        others = [m for mid, m in self.members.items() if mid != member_id]
        return protocol_type == self.protocol_type and any(all(m.supports(n) for m in others) for n in names)

    def select_protocol(self) -> str:
        """The protocol every member supports with the most first-choice votes (ties: the oldest
        member's preference).  Never empty: every join was checked by :meth:`_supports`."""
        first = next(iter(self.members.values()))
        candidates = [n for n, _ in first.protocols if all(m.supports(n) for m in self.members.values())]
        votes = [next(n for n, _ in m.protocols if n in candidates) for m in self.members.values()]
        return max(candidates, key=votes.count)

    def _join_result(self, m: ClassicMember, skip_assignment: bool = False) -> JoinResult:
        members = [JoinedMember(mid, x.instance_id, x.metadata(self.protocol_name)) for mid, x in self.members.items()]
        return JoinResult(ErrorCode.NONE, self.generation, self.protocol_type, self.protocol_name, self.leader or "",
                          m.member_id, members if m.member_id == self.leader else [], skip_assignment)

    def _fenced(self, instance_id: str | None, member_id: str) -> bool:
        return instance_id is not None and self.static.get(instance_id, member_id) != member_id

    # -- JoinGroup -------------------------------------------------------------------------

    def join(self, req: JoinGroup, now_ms: int) -> Completion[JoinResult]:
        """Handle a JoinGroup (its session timeout already checked): answered now, or parked
        until the join round ends."""
        done: Completion[JoinResult] = Completion()
        error = self._join(req, done, now_ms)
        if error is not None:
            done.complete(JoinResult(error, member_id=req.member_id))
        self._try_complete_join(now_ms)
        return done

    def _join(self, req: JoinGroup, done: Completion, now_ms: int) -> ErrorCode | None:
        """Park or answer ``done``; or return the error to answer it with."""
        if self.state is _S.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        member_id, instance_id = req.member_id, req.group_instance_id or None
        names = [name for name, _ in req.protocols]
        if not member_id:
            old_id = self.static.get(instance_id) if instance_id is not None else None
            if not self._supports(req.protocol_type, names, old_id):
                return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            new_id = f"{req.client_id}-{uuid.uuid4()}"
            if old_id is not None:
                self._replace_static(old_id, new_id, req, done, now_ms)
            elif instance_id is None and req.require_known_member_id:
                self.pending[new_id] = now_ms + req.session_timeout_ms
                done.complete(JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id=new_id))
            else:
                self._add(new_id, req, done, now_ms)
            return None
        if not self._supports(req.protocol_type, names, member_id):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if member_id in self.pending:
            del self.pending[member_id]
            if instance_id is not None:  # it was told its id as a dynamic member
                return ErrorCode.UNKNOWN_MEMBER_ID
            self._add(member_id, req, done, now_ms)
            return None
        if self._fenced(instance_id, member_id):
            return ErrorCode.FENCED_INSTANCE_ID
        m = self.members.get(member_id)
        if m is None or (instance_id is not None and instance_id not in self.static):
            return ErrorCode.UNKNOWN_MEMBER_ID
        same = m.protocols == list(req.protocols)
        if self.state is _S.PREPARING_REBALANCE:
            self._update(m, req, done, now_ms)
        elif self.state is _S.COMPLETING_REBALANCE and same:  # it missed the answer: the same again
            m.session_deadline_ms = now_ms + m.session_timeout_ms
            done.complete(self._join_result(m))
        elif self.state is _S.STABLE and same and member_id != self.leader:
            m.session_deadline_ms = now_ms + m.session_timeout_ms
            done.complete(self._join_result(m))  # a follower's rejoin with nothing new: go on to SyncGroup
        else:  # new protocols, or the leader asks for a new assignment (topics changed, say)
            self._update(m, req, done, now_ms)
            self._prepare_rebalance(now_ms, f"member {member_id} rejoined ({req.reason or 'no reason given'})")
        return None

    def _add(self, member_id: str, req: JoinGroup, done: Completion, now_ms: int) -> None:
        m = ClassicMember(member_id, req.group_instance_id or None, req.client_id, req.client_host, list(req.protocols),
                          req.session_timeout_ms, _rebalance_timeout(req), now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS, join=done)
        if not self.members:
            self.protocol_type = req.protocol_type
        self.members[member_id] = m
        if self.leader is None:
            self.leader = member_id
        if m.instance_id is not None:
            self.static[m.instance_id] = member_id
        if self.state is not _S.PREPARING_REBALANCE:
            self._prepare_rebalance(now_ms, f"member {member_id} joined ({req.reason or 'no reason given'})")

    def _update(self, m: ClassicMember, req: JoinGroup, done: Completion, now_ms: int) -> None:
        if m.join is not None:  # a JoinGroup of the same member is still parked: this one replaces it
            m.join.complete(JoinResult(ErrorCode.REBALANCE_IN_PROGRESS, member_id=m.member_id))
        m.protocols = list(req.protocols)
        m.session_timeout_ms, m.rebalance_timeout_ms = req.session_timeout_ms, _rebalance_timeout(req)
        if not m.is_new:  # a new member keeps the longer allowance of its first join
            m.session_deadline_ms = now_ms + m.session_timeout_ms
        m.join = done

    def _replace_static(self, old_id: str, new_id: str, req: JoinGroup, done: Completion, now_ms: int) -> None:
        """A static member back under a new member id: the old id is fenced."""
        m = self.members.pop(old_id)
        fenced = [(c, r) for c, r in ((m.join, JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=old_id)),
                                      (m.sync, SyncResult(ErrorCode.FENCED_INSTANCE_ID))) if c is not None]
        m.join = m.sync = None
        m.member_id = new_id
        self.members[new_id] = m
        self.static[m.instance_id] = new_id
        if self.leader == old_id:
            self.leader = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        same = m.protocols == list(req.protocols)
        self._update(m, req, done, now_ms)
        _settle(fenced)
        if self.state is _S.STABLE and same:
            log.info("group %s: static member %s is back as %s; no rebalance", self.group_id, m.instance_id, new_id)
            m.join = None
            done.complete(self._join_result(m, skip_assignment=new_id == self.leader))
        elif self.state is not _S.PREPARING_REBALANCE:
            # CompletingRebalance: the leader may be assigning to the old id, so assign again
            self._prepare_rebalance(now_ms, f"static member {m.instance_id} rejoined as {new_id}")

    def _prepare_rebalance(self, now_ms: int, reason: str) -> None:
        answers = []
        if self.state is _S.COMPLETING_REBALANCE:  # the assignment being made is void
            for m in self.members.values():
                m.assignment = b""
                if m.sync is not None:  # answered: its session starts again
                    answers.append((m.sync, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS)))
                    m.sync = None
                    m.session_deadline_ms = now_ms + m.session_timeout_ms
        self.pending_sync.clear()
        self.sync_deadline_ms = None
        self.join_deadline_ms = now_ms + self._rebalance_timeout_ms()
        self._transition(_S.PREPARING_REBALANCE)
        log.info("group %s: preparing to rebalance (generation %d): %s", self.group_id, self.generation, reason)
        _settle(answers)

    def _rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def _try_complete_join(self, now_ms: int) -> None:
        if (self.state is _S.PREPARING_REBALANCE and not self.pending
                and all(m.join is not None for m in self.members.values())):
            self._complete_join(now_ms)

    def _complete_join(self, now_ms: int) -> None:
        """End the join round: drop dynamic members that did not rejoin, start the next generation."""
        gone = [m for m in self.members.values() if m.join is None and m.instance_id is None]
        for m in gone:
            self._drop(m)
        if gone:
            log.info("group %s: removed members that did not rejoin in time: %s", self.group_id,
                     [m.member_id for m in gone])
        joined = [mid for mid, m in self.members.items() if m.join is not None]
        if self.members and not joined:  # only static members, none back yet: wait for them or their sessions
            self.join_deadline_ms = now_ms + self._rebalance_timeout_ms()
            return
        if self.leader not in joined and joined:
            self.leader = joined[0]
        self.generation += 1
        self.join_deadline_ms = None
        if not self.members:
            self.protocol_name = None
            self._transition(_S.EMPTY)
            log.info("group %s: generation %d is empty", self.group_id, self.generation)
            return
        self.protocol_name = self.select_protocol()
        self._transition(_S.COMPLETING_REBALANCE)
        log.info("group %s: generation %d with %d members, protocol %s, leader %s", self.group_id, self.generation,
                 len(self.members), self.protocol_name, self.leader)
        answers = []
        for m in self.members.values():
            if m.join is not None:
                answers.append((m.join, self._join_result(m)))
                m.join = None
            m.is_new = False
            m.session_deadline_ms = now_ms + m.session_timeout_ms
        self.pending_sync = set(self.members)
        self.sync_deadline_ms = now_ms + self._rebalance_timeout_ms()
        _settle(answers)

    # -- SyncGroup, Heartbeat, LeaveGroup ------------------------------------------------------

    def _check_member(self, member_id: str, instance_id: str | None, generation: int) -> ErrorCode | None:
        """The checks SyncGroup and Heartbeat share (Kafka's order)."""
        if self.state is _S.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if self._fenced(instance_id or None, member_id):
            return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        return None

    def sync(self, req: SyncGroup, now_ms: int) -> Completion[SyncResult]:
        """Handle a SyncGroup: answered now, or (a follower's, before the leader's) parked."""
        done: Completion[SyncResult] = Completion()
        error = self._check_member(req.member_id, req.group_instance_id, req.generation_id)
        if error is None and ((req.protocol_type is not None and req.protocol_type != self.protocol_type)
                              or (req.protocol_name is not None and req.protocol_name != self.protocol_name)):
            error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if error is None and self.state is _S.PREPARING_REBALANCE:
            error = ErrorCode.REBALANCE_IN_PROGRESS
        if error is not None:
            done.complete(SyncResult(error))
            return done
        m = self.members[req.member_id]
        m.session_deadline_ms = now_ms + m.session_timeout_ms
        self.pending_sync.discard(m.member_id)
        if not self.pending_sync:
            self.sync_deadline_ms = None
        if self.state is _S.STABLE:
            done.complete(SyncResult(ErrorCode.NONE, self.protocol_type, self.protocol_name, m.assignment))
            return done
        answers = []
        if m.sync is not None:
            answers.append((m.sync, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS)))
        m.sync = done
        if m.member_id == self.leader:
            given = dict(req.assignments)
            for x in self.members.values():
                x.assignment = given.get(x.member_id, b"")
                if x.sync is not None:
                    answers.append((x.sync, SyncResult(ErrorCode.NONE, self.protocol_type, self.protocol_name, x.assignment)))
                    x.sync = None
                    x.session_deadline_ms = now_ms + x.session_timeout_ms
            self._transition(_S.STABLE)
            log.info("group %s: generation %d is stable", self.group_id, self.generation)
        _settle(answers)
        return done

    def heartbeat(self, req: ClassicHeartbeat, now_ms: int) -> ErrorCode:
        error = self._check_member(req.member_id, req.group_instance_id, req.generation_id)
        if error is not None:
            return error
        m = self.members[req.member_id]
        m.session_deadline_ms = now_ms + m.session_timeout_ms
        return ErrorCode.REBALANCE_IN_PROGRESS if self.state is _S.PREPARING_REBALANCE else ErrorCode.NONE

    def leave(self, members: list[tuple[str, str | None]], now_ms: int) -> list[ErrorCode]:
        """Remove members; one error code per (member_id, group_instance_id), in order."""
        if self.state is _S.DEAD:
            return [ErrorCode.COORDINATOR_NOT_AVAILABLE] * len(members)
        return [self._leave_one(member_id, instance_id or None, now_ms) for member_id, instance_id in members]

    def _leave_one(self, member_id: str, instance_id: str | None, now_ms: int) -> ErrorCode:
        if member_id in self.pending:
            del self.pending[member_id]
            self._try_complete_join(now_ms)
            return ErrorCode.NONE
        if not member_id:  # an admin removes a static member by its instance id
            member_id = self.static.get(instance_id, "") if instance_id is not None else ""
        elif self._fenced(instance_id, member_id):
            return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove(self.members[member_id], now_ms, f"member {member_id} left")
        return ErrorCode.NONE

    def _drop(self, m: ClassicMember) -> None:
        """Take a member out; whatever it has parked is answered UNKNOWN_MEMBER_ID."""
        del self.members[m.member_id]
        if m.instance_id is not None and self.static.get(m.instance_id) == m.member_id:
            del self.static[m.instance_id]
        if self.leader == m.member_id:
            self.leader = next(iter(self.members), None)
        self.pending_sync.discard(m.member_id)
        if not self.pending_sync:
            self.sync_deadline_ms = None
        answers = [(c, r) for c, r in ((m.join, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=m.member_id)),
                                       (m.sync, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))) if c is not None]
        m.join = m.sync = None
        _settle(answers)

    def _remove(self, m: ClassicMember, now_ms: int, reason: str) -> None:
        """Kafka's removeMemberAndUpdateGroup: a rebalance, or the join round may end now."""
        self._drop(m)
        if self.state in (_S.STABLE, _S.COMPLETING_REBALANCE):
            self._prepare_rebalance(now_ms, reason)
        self._try_complete_join(now_ms)

    def validate_commit(self, member_id: str, instance_id: str | None, generation: int, now_ms: int) -> ErrorCode:
        """May this member commit offsets?  Generation < 0 on an Empty group: a commit from
        outside any group, allowed.  A commit keeps the member's session alive."""
        if self.state is _S.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if self._fenced(instance_id or None, member_id):
            return ErrorCode.FENCED_INSTANCE_ID
        if generation < 0 and self.state is _S.EMPTY:
            return ErrorCode.NONE
        m = self.members.get(member_id)
        if m is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        if self.state is _S.COMPLETING_REBALANCE:  # it has its new generation, not yet its assignment
            return ErrorCode.REBALANCE_IN_PROGRESS
        m.session_deadline_ms = now_ms + m.session_timeout_ms
        return ErrorCode.NONE

    # -- timers and endings ----------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """When :meth:`expire` next has work (absolute ms), or None."""
        due = list(self.pending.values())
        due += [m.session_deadline_ms for m in self.members.values() if not m.kept_alive()]
        if self.state is _S.PREPARING_REBALANCE and self.join_deadline_ms is not None:
            due.append(self.join_deadline_ms)
        if self.pending_sync and self.sync_deadline_ms is not None:
            due.append(self.sync_deadline_ms)
        return min(due, default=None)

    def expire(self, now_ms: int) -> None:
        """Expire sessions, end a join round whose time is up, remove members that never synced."""
        for member_id, until in list(self.pending.items()):
            if now_ms >= until:
                del self.pending[member_id]
        for m in list(self.members.values()):
            if m.member_id in self.members and not m.kept_alive() and now_ms >= m.session_deadline_ms:
                log.info("group %s: member %s's session expired", self.group_id, m.member_id)
                self._remove(m, now_ms, f"member {m.member_id}'s session expired")
        if self.pending_sync and self.sync_deadline_ms is not None and now_ms >= self.sync_deadline_ms:
            late = sorted(self.pending_sync)
            for member_id in late:
                self._drop(self.members[member_id])
            self._prepare_rebalance(now_ms, f"members {late} sent no SyncGroup in time")
        if self.state is _S.PREPARING_REBALANCE and self.join_deadline_ms is not None and now_ms >= self.join_deadline_ms:
            self._complete_join(now_ms)
        self._try_complete_join(now_ms)

    def unload(self) -> None:
        """The coordinator moved: parked requests fail NOT_COORDINATOR; the group is Dead."""
        parked = [c for m in self.members.values() for c in (m.join, m.sync) if c is not None]
        for m in self.members.values():
            m.join = m.sync = None
        self._transition(_S.DEAD)
        for done in parked:
            done.fail_with(ErrorCode.NOT_COORDINATOR, "the group's coordinator moved; find it again")

    def delete(self) -> None:
        """The group is deleted (it is Empty) or becomes a consumer group: Dead."""
        self.pending.clear()
        self._transition(_S.DEAD)

    def _check(self) -> None:
        """Invariants (tests call this after every step)."""
        ids = set(self.members)
        assert (self.leader in ids) if ids else self.leader is None, (self.leader, ids)
        assert all(self.members.get(mid) and self.members[mid].instance_id == iid for iid, mid in self.static.items())
        assert all(m.instance_id is None or self.static.get(m.instance_id) == mid for mid, m in self.members.items())
        assert self.pending_sync <= ids and not (ids & set(self.pending))
        assert all(m.join is None for m in self.members.values()) or self.state is _S.PREPARING_REBALANCE
        assert all(m.sync is None for m in self.members.values()) or self.state is _S.COMPLETING_REBALANCE
        assert (self.state is _S.EMPTY) == (not ids and self.state is not _S.DEAD) or self.state is _S.PREPARING_REBALANCE
        assert self.state is not _S.PREPARING_REBALANCE or self.join_deadline_ms is not None
        assert not self.pending_sync or self.state in (_S.COMPLETING_REBALANCE, _S.STABLE)


def _rebalance_timeout(req: JoinGroup) -> int:
    return req.rebalance_timeout_ms if req.rebalance_timeout_ms > 0 else req.session_timeout_ms
